"""`spectro-fx validate`: the command line of the validator.

Prints one line per check; exit status 0 only when every check passed.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Any, Sequence

from spectro_fx.assets import MODEL_HELP
from spectro_fx.models.errors import ModelFileError, ParameterError

from .validator import CHECK_HELP, CHECKS, Validator

DESCRIPTION = """\
Check a model file and an effect chain before they go on stage, as pluginval checks a
plugin: every sample rate and block size, random automation of every parameter, hostile
input, state, real-time safety and the model file itself. Seeded and repeatable; exit
status 0 only when every check passed.
"""


def build_parser() -> argparse.ArgumentParser:
    import textwrap

    epilog = "checks (run in this order; each says PASS or FAIL in one line):\n" + "\n".join(
        textwrap.fill(CHECK_HELP[name], width=92, initial_indent=f"  {name:<15}", subsequent_indent=" " * 17)
        for name in CHECKS
    )
    epilog += (
        "\n\nexamples:\n"
        "  spectro-fx validate                                   the default model, plain resynthesis\n"
        "  spectro-fx validate --model mine.pt --chain inpaint --set inpaint.method=learned\n"
        "  spectro-fx validate --model mine.pt --strictness 10 --json report.json\n"
    )
    parser = argparse.ArgumentParser(
        prog="spectro-fx validate", description=DESCRIPTION, epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", metavar="FILE|NAME", help=MODEL_HELP)
    parser.add_argument("--chain", default="none", metavar="A,B", help="effects in order, as you will play them (default: none)")
    parser.add_argument(
        "--set", dest="settings", action="append", default=[], metavar="NAME=VALUE",
        help="a parameter value the show starts with (repeatable), e.g. --set inpaint.method=learned",
    )
    parser.add_argument(
        "--strictness", type=int, default=5, metavar="1..10",
        help="how much of each check runs: 1 covers every rate, block size and case once (about a minute), "
        "10 the whole matrix (default 5)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0): a run is repeatable")
    parser.add_argument("--only", metavar="CHECK,CHECK", help=f"run only these checks ({', '.join(CHECKS)})")
    parser.add_argument("--json", metavar="FILE", help="write the full report (figures and every finding) to FILE")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``spectro-fx validate ...``; returns 0 when every check passed, 1 when one failed, 2 for
    bad arguments."""
    args = build_parser().parse_args(argv)
    prefix = "spectro-fx validate"
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = lambda message, *rest, **kw: print(f"{prefix}: warning: {message}", file=sys.stderr)
        return _run(args, prefix)


def _run(args: argparse.Namespace, prefix: str) -> int:
    try:
        from ...core.params import parse_settings
        from ..render import resolve_model

        if not 1 <= args.strictness <= 10:
            raise ParameterError(f"--strictness={args.strictness} must be an integer in [1, 10]")
        checks = CHECKS if args.only is None else tuple(c.strip() for c in args.only.split(",") if c.strip())
        unknown = [c for c in checks if c not in CHECKS]
        if unknown or not checks:
            raise ParameterError(f"--only={args.only!r}: unknown check {unknown[0] if unknown else '(none)'!r}; checks: {', '.join(CHECKS)}")
        values = parse_settings(args.settings)
        try:
            model = resolve_model(args.model)
        except ModelFileError as exc:
            # a file that does not load is the model-file check failing: one line, no traceback
            print(f"FAIL  model-file     {exc}")
            print(f"{prefix}: 1 check failed (model-file); nothing else can run on this file")
            _write_json(args.json, {"passed": False, "model": str(args.model), "checks": [
                {"name": "model-file", "passed": False, "summary": str(exc), "findings": [str(exc)]}]})
            return 1
        validator = Validator(
            model, chain=args.chain, values=values, strictness=args.strictness, seed=args.seed,
            progress=not args.quiet and sys.stderr.isatty(), log=lambda line: print(line, flush=True),
        )
        print(f"{prefix}: {model.path} with chain {args.chain!r} at strictness {args.strictness}, seed {args.seed}", flush=True)
        report = validator.run(checks)
    except ParameterError as exc:
        print(f"{prefix}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted", file=sys.stderr)
        return 130
    print(f"{prefix}: {report.summary()}")
    if args.json:
        _write_json(args.json, report.to_dict())
        print(f"{prefix}: report written to {args.json}")
    return 0 if report.passed else 1


def _write_json(path: str | None, content: dict[str, Any]) -> None:
    if not path:
        return
    from spectro_fx.models.atomic import atomic_path

    with atomic_path(Path(path), suffix=".tmp") as tmp:
        Path(tmp).write_text(json.dumps(content, indent=2, default=str) + "\n")
