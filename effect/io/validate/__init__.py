"""`spectro-fx validate`: a pluginval-style check of a model file and an effect chain before a gig.

Six checks through the public Engine API and the live path, seeded and repeatable, at a strictness 1-10:
the model file (model_file.py), processing, automation, hostile input and state (engine_checks.py),
real-time safety (realtime.py); :class:`Validator` runs them, command.py is the command line.
"""

from .command import build_parser, main
from .engine_checks import BLOCKS, CHANNELS, RATES, processing_runs
from .probes import LockProbe, reachable_locks
from .report import CheckResult, Report
from .signals import program, sweep
from .validator import CHECK_HELP, CHECKS, Validator

__all__ = [
    "BLOCKS", "CHANNELS", "CHECKS", "CHECK_HELP", "RATES", "CheckResult", "LockProbe", "Report", "Validator",
    "build_parser", "main", "processing_runs", "program", "reachable_locks", "sweep",
]
