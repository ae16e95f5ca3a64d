"""The validator: one model and chain, the engines the checks build, and the run of the checks in order.

Each check lives in its own module (model_file, engine_checks, realtime) and is mixed in here.
"""

from __future__ import annotations

import copy
import math
import sys
import time
import warnings
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from spectro_fx.models.errors import ParameterError, non_negative_int
from spectro_fx.models.export import ModelFile
from spectro_fx.models.runtime import torch_threads

from ...core.effects import Effect
from .engine_checks import EngineChecks
from .model_file import ModelFileChecks
from .realtime import RealtimeChecks
from .report import Report

CHECKS = ("model-file", "processing", "automation", "hostile-input", "state", "realtime")
CHECK_HELP = {
    "model-file": "the file loads as the engine loads it; the model gives finite, normal magnitudes at every level "
    "and for every code; truncated, bit-flipped and foreign copies are refused with one clear line",
    "processing": "sample rates x block sizes x mono/stereo: a full-scale sweep gives finite output, no subnormals, "
    "nothing above +12 dBFS; with an empty region (or wet 0) the output is the input, bit for bit",
    "automation": "every parameter set to a random value every 32 samples: finite output, no click (a step larger "
    "than the input's steps allow), the same output again with the same --seed",
    "hostile-input": "NaN, +-Inf, 1e6, DC, full-scale square, silence, 0 dBFS white noise, subnormal input: finite "
    "output, back to normal within the latency plus one column, what was sanitized said once",
    "state": "reset() then the same input gives the same output; two engines agree; an engine made from another's "
    "values() agrees with it; pairs (low_hz/high_hz) set from another thread while blocks run are applied whole",
    "realtime": "the live callback path allocates nothing per block after warm-up (tracemalloc); the worker holds no "
    "lock across an engine call; time per block at 64/128/256 frames (p50/p99/max) against the block period",
}
WET_NAMES = ("wet", "mix")
"""The region's wet/dry parameter, under its new and its old name (both are accepted)."""
MAX_FINDINGS = 8


class Validator(ModelFileChecks, EngineChecks, RealtimeChecks):
    """Runs the checks of ``spectro-fx validate`` on one model and chain.

    Parameters
    ----------
    model : ModelFile
        The loaded model file (:func:`spectro_fx.models.export.load_model`).
    chain : str or sequence of Effect
        Effects in order, as ``Engine(chain=)``; Effect instances are copied for each engine.
    values : mapping, optional
        Parameter values the show starts with (``--set``); the checks that stress the region
        open it fully on top of them.
    strictness : int in [1, 10]
        How much of each check runs: 1 covers every rate, block size and case once; 10 the
        whole matrix and longer runs (5 is pluginval's default).
    seed : int >= 0
        Seed of the engines and of every random choice: a run is repeatable.
    progress : bool
        Progress bars on stderr.
    log : callable, optional
        Called with each check's verdict line as it finishes.
    """

    def __init__(
        self,
        model: ModelFile,
        *,
        chain: str | Sequence[Effect] = "none",
        values: Mapping[str, Any] | None = None,
        strictness: int = 5,
        seed: int = 0,
        progress: bool = False,
        log: Callable[[str], None] | None = None,
    ) -> None:
        if not isinstance(strictness, (int, np.integer)) or isinstance(strictness, bool) or not 1 <= strictness <= 10:
            raise ParameterError(f"strictness={strictness!r} must be an integer in [1, 10]")
        non_negative_int("seed", seed)
        self.model = model
        self.chain = chain
        self.values = dict(values or {})
        self.strictness = int(strictness)
        self.seed = int(seed)
        self.progress = progress
        self.log = log or (lambda line: None)
        # refuses a bad chain or value before any check, and says once what --set clamped or renamed
        probe = self.engine(sr=self.model_sr, channels=1, quiet=False)
        self.parameters = probe.parameters()
        region = [n for n in self.parameters if "." not in n]
        self.wet_name = next((n for n in WET_NAMES if n in region), None)
        self.latency_at_model_sr = probe.latency_samples

    # -- helpers ---------------------------------------------------------------------------------

    @property
    def model_sr(self) -> int:
        return int(self.model.module.sample_rate)

    def chain_label(self) -> str:
        if isinstance(self.chain, str):
            return self.chain
        return ",".join(getattr(e, "name", type(e).__name__) for e in self.chain)

    def engine(
        self, *, sr: int, channels: int, extra: Mapping[str, Any] | None = None, probe: Effect | None = None,
        block_hint: int | None = None, quiet: bool = True,
    ):
        """A fresh engine with the chain, ``--set`` values and ``extra`` values on top."""
        from ...core.effects import make_chain
        from ...core.engine import Engine

        chain = make_chain(self.chain) if isinstance(self.chain, str) else [copy.deepcopy(e) for e in self.chain]
        if probe is not None:
            chain.append(probe)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the start-up notes (runner choice) are not the checks' business
            # as the live command builds it (its network in ONNX Runtime where installed)
            engine = Engine(self.model, sr=sr, channels=channels, chain=chain, seed=self.seed, block_hint=block_hint,
                            runtime="auto")
        values = {**self.values, **(extra or {})}
        if values:
            with warnings.catch_warnings():
                if quiet:
                    warnings.simplefilter("ignore")
                engine.set_many(values)
        return engine

    def full_region(self) -> dict[str, Any]:
        """The region fully open and fully wet: the most work a knob can ask for."""
        values: dict[str, Any] = {"low_hz": 20.0, "high_hz": 24000.0, "period_s": 0.0}
        if self.wet_name is not None:
            values[self.wet_name] = 1.0
        return {k: v for k, v in values.items() if k in self.parameters}

    def column_frames(self, sr: int) -> int:
        """One codemap column in samples at ``sr``."""
        module = self.model.module
        return int(math.ceil(int(module.time_stride) * int(module.hop_length) * sr / self.model_sr))

    def _bar(self, total: int, desc: str):
        from tqdm import tqdm

        return tqdm(total=total, desc=f"validate {desc}", unit="run", leave=False, disable=not self.progress, file=sys.stderr)

    # -- running ---------------------------------------------------------------------------------

    def run(self, checks: Sequence[str] = CHECKS) -> Report:
        unknown = [c for c in checks if c not in CHECKS]
        if unknown:
            raise ParameterError(f"unknown check {unknown[0]!r}; checks: {', '.join(CHECKS)}")
        report = Report(
            model=str(self.model.path), chain=self.chain_label(), values=self.values,
            strictness=self.strictness, seed=self.seed,
        )
        started = time.perf_counter()
        for name in CHECKS:
            if name not in checks:
                continue
            t0 = time.perf_counter()
            with torch_threads(1):  # as `spectro-fx` runs the engine, live and offline
                result = getattr(self, "check_" + name.replace("-", "_"))()
            result.seconds = time.perf_counter() - t0
            report.results.append(result)
            self.log(result.line())
            for finding in result.findings[:MAX_FINDINGS]:
                self.log(f"      - {finding}")
            if len(result.findings) > MAX_FINDINGS:
                self.log(f"      ... and {len(result.findings) - MAX_FINDINGS} more (see --json)")
        report.seconds = time.perf_counter() - started
        return report
