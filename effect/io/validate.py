"""`spectro-fx validate`: a pluginval-style check of a model file and an effect chain before a gig.

Six checks through the public Engine API and the live path, seeded and repeatable, at a strictness 1-10.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import math
import os
import platform
import struct
import sys
import tempfile
import threading
import time
import tracemalloc
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from spectro_fx.models.errors import ModelFileError, ParameterError
from spectro_fx.models.export import ModelFile, load_model
from spectro_fx.models.runtime import torch_threads

from ..core.effects import Effect, Parameter

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
RATES = (22050, 44100, 48000, 88200, 96000)
BLOCKS = (1, 32, 64, 65, 128, 256, 512, 1024, 4096, 8193)
CHANNELS = (1, 2)
HEADROOM_DB = 12.0
"""Largest output peak and output step accepted above the input's (+12 dB = 4x)."""
HEADROOM = 10.0 ** (HEADROOM_DB / 20.0)
AUTOMATION_EVERY = 32
"""Samples between two random settings of every parameter (as pluginval does)."""
REALTIME_BLOCKS = (64, 128, 256)
"""Block sizes timed (frames); the last is the live default, where the engine must keep up."""
LIVE_PATH_BLOCKS = (64, 256, 4096)
"""Callback sizes whose allocations are traced: a per-block buffer would grow with the block."""
LEAK_BYTES_PER_BLOCK = 4
"""Bytes kept per callback, on average over each half of the measured blocks, that count as growth."""
CALLBACK_OBJECT_BYTES = 8192
"""Most bytes the callback may have allocated at once (numpy views and numbers, no buffers)."""
MAX_LOAD = 1.0
"""Engine CPU seconds per audio second above which it cannot keep up live (the check fails)."""
TIGHT_LOAD = 0.7
"""Load above which the check passes but says there is little headroom."""
MAX_CALL_S = 0.1
"""Longest engine call the live safety margin can absorb (its automatic cap, 100 ms)."""
WET_NAMES = ("wet", "mix")
"""The region's wet/dry parameter, under its new and its old name (issue 16)."""
SETTER_SWITCH_S = 2e-5
"""Thread switch interval while another thread sets pairs: a block may start almost anywhere in the setter."""
PLAYING_PEAK = 0.25
"""Peak of the test signal around hostile input: -12 dBFS, a usual playing level."""
MAX_FINDINGS = 8
_TINY = float(np.finfo(np.float32).tiny)


@dataclass
class CheckResult:
    """The verdict of one check: ``summary`` is its one line; ``findings`` say what failed."""

    name: str
    passed: bool
    summary: str
    findings: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def line(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        return f"{verdict}  {self.name:<14} {self.summary} ({self.seconds:.1f} s)"


@dataclass
class Report:
    """All checks of one run, as printed and as written to ``--json``."""

    model: str
    chain: str
    values: dict[str, Any]
    strictness: int
    seed: int
    results: list[CheckResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    def summary(self) -> str:
        failed = [r.name for r in self.results if not r.passed]
        text = f"{len(self.results)} checks at strictness {self.strictness}, seed {self.seed}: "
        text += f"{sum(r.passed for r in self.results)} passed"
        if failed:
            text += f", {len(failed)} failed ({', '.join(failed)})"
        return text + f" in {self.seconds:.1f} s"

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "model": self.model,
            "chain": self.chain,
            "values": self.values,
            "strictness": self.strictness,
            "seed": self.seed,
            "seconds": round(self.seconds, 2),
            "machine": {
                "platform": platform.platform(),
                "machine": platform.machine(),
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "torch": torch.__version__,
            },
            "checks": [
                {
                    "name": r.name,
                    "passed": r.passed,
                    "summary": r.summary,
                    "findings": r.findings,
                    "figures": r.figures,
                    "seconds": round(r.seconds, 2),
                }
                for r in self.results
            ],
        }


# ----------------------------------------------------------------------------- signals


def sweep(sr: int, frames: int, channels: int, *, amplitude: float = 1.0) -> np.ndarray:
    """Exponential sine sweep from 40 Hz to 0.45 ``sr``, ``[frames, channels]`` float32 with
    peak ``amplitude`` (1.0 = full scale); channels start a sixth of a cycle apart."""
    t = np.arange(frames) / sr
    duration = max(frames / sr, 1e-9)
    rate = math.log(0.45 * sr / 40.0)
    phase = 2.0 * math.pi * 40.0 * duration / rate * (np.exp(t * rate / duration) - 1.0)
    return np.stack([amplitude * np.sin(phase + c * math.pi / 3) for c in range(channels)], axis=1).astype(np.float32)


def program(rng: np.random.Generator, sr: int, frames: int, channels: int, *, peak: float = 0.3) -> np.ndarray:
    """A steady musical test signal: four partials of a chord over faint noise,
    ``[frames, channels]`` float32 scaled to ``peak``."""
    t = np.arange(frames) / sr
    out = np.zeros((frames, channels))
    for c in range(channels):
        for k, f in enumerate((110.0, 330.0, 554.4, 987.8)):
            out[:, c] += np.sin(2 * math.pi * f * t + rng.uniform(0, 2 * math.pi)) / (k + 1)
        out[:, c] += 0.02 * rng.standard_normal(frames)
    return (peak * out / max(np.abs(out).max(), 1e-12)).astype(np.float32)


def random_value(parameter: Parameter, rng: np.random.Generator) -> Any:
    """A random value of ``parameter`` over its whole declared range (log scale in log)."""
    if parameter.kind == "choice":
        return parameter.choices[int(rng.integers(len(parameter.choices)))]
    if parameter.kind == "bool":
        return bool(rng.integers(2))
    if parameter.kind == "int":
        return int(rng.integers(int(parameter.minimum), int(parameter.maximum) + 1))
    if parameter.scale == "log" and parameter.minimum > 0:
        return float(math.exp(rng.uniform(math.log(parameter.minimum), math.log(parameter.maximum))))
    return float(rng.uniform(parameter.minimum, parameter.maximum))


def processing_runs(*, strictness: int, seed: int) -> list[tuple[int, int, int]]:
    """``(sr, block, channels)`` of the processing check: at strictness 1 every rate, block
    size and channel count once (10 runs); each level adds 10 more of the full matrix, in a
    seeded order, until strictness 10 runs all 100."""
    cover = [(RATES[i % len(RATES)], BLOCKS[i], CHANNELS[(i // len(RATES)) % 2]) for i in range(len(BLOCKS))]
    rest = [(sr, b, c) for sr in RATES for b in BLOCKS for c in CHANNELS if (sr, b, c) not in cover]
    order = np.random.default_rng(seed).permutation(len(rest))
    return (cover + [rest[i] for i in order])[: 10 * strictness]


def run_blocks(engine: Any, x: np.ndarray, block: int) -> np.ndarray:
    """``x`` [frames, channels] through ``engine`` in blocks of ``block`` frames."""
    out = np.empty_like(x)
    for i in range(0, x.shape[0], block):
        out[i : i + block] = engine.process(x[i : i + block])
    return out


def subnormal_count(x: np.ndarray) -> int:
    magnitude = np.abs(x)
    return int(((magnitude > 0.0) & (magnitude < _TINY)).sum())


def _dbfs(peak: float) -> float:
    return round(20.0 * math.log10(peak), 2) if peak > 0 else -math.inf


class _ParkingQueue:
    """The live worker's parameter queue, with a place to park the worker: it drains the queue
    at the top of every loop, between engine calls, so parked there it holds nothing and runs
    nothing while the callback is measured alone."""

    def __init__(self) -> None:
        from .midi import ParameterQueue

        self.queue = ParameterQueue()
        self.go = threading.Event()
        self.go.set()
        self.parked = threading.Event()

    def drain(self) -> list:
        if not self.go.is_set():
            self.parked.set()
            self.go.wait()
            self.parked.clear()
        return self.queue.drain()

    def park(self, timeout: float = 10.0) -> bool:
        self.parked.clear()
        self.go.clear()
        return self.parked.wait(timeout)

    def release(self) -> None:
        self.go.set()


def _is_lock(obj: Any) -> bool:
    return type(obj).__name__ in ("lock", "RLock") and type(obj).__module__ in ("_thread", "threading")


def reachable_locks(roots: Mapping[str, Any], *, depth: int = 5) -> list[tuple[str, Any]]:
    """Every lock reachable from ``roots`` through attributes and containers, by path
    (``engine._bank._lock``); a thread's own state lock (held while it lives) is left out."""
    thread_attrs = set(vars(threading.Thread()))
    found: list[tuple[str, Any]] = []
    seen: set[int] = set()
    frontier = list(roots.items())
    for _ in range(depth):
        nxt = []
        for path, obj in frontier:
            if id(obj) in seen or isinstance(obj, (np.ndarray, torch.Tensor, torch.nn.Module, str, bytes, int, float)):
                continue
            seen.add(id(obj))
            if _is_lock(obj):
                found.append((path, obj))
                continue
            if isinstance(obj, dict):
                nxt += [(f"{path}[{k!r}]", v) for k, v in list(obj.items())[:64]]
            elif isinstance(obj, (list, tuple, set)):
                nxt += [(f"{path}[{i}]", v) for i, v in enumerate(list(obj)[:64])]
            elif hasattr(obj, "__dict__") and not isinstance(obj, type):
                skip = thread_attrs if isinstance(obj, threading.Thread) else set()
                nxt += [(f"{path}.{k}", v) for k, v in vars(obj).items() if k not in skip]
        frontier = nxt
    return found


def _lock_held(lock: Any) -> bool:
    owned = getattr(lock, "_is_owned", None)
    return bool(owned()) if owned is not None else bool(lock.locked())


class _LockProbe:
    """The engine as the worker sees it, noting every given lock that is held when an engine
    call starts (the worker is then the only thread that could hold one)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.locks: list[tuple[str, Any]] = []
        self.held: set[str] = set()
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    def process(self, block: np.ndarray) -> np.ndarray:
        self.calls += 1
        for path, lock in self.locks:
            if _lock_held(lock):
                self.held.add(path)
        return self.engine.process(block)


class _RegionProbe(Effect):
    """A pass-through effect that notes, per column, whether the region the engine hands the
    chain is empty, and whether its own pair of parameters was ever seen half-applied."""

    name = "validate-probe"
    description = "validation probe: codes pass through unchanged"
    parameters = (
        Parameter("lo", 0.0, 100.0, 10.0, help="lower of a pair always set together, below hi"),
        Parameter("hi", 0.0, 100.0, 20.0, help="upper of the pair"),
    )

    def __init__(self) -> None:
        super().__init__()
        self.columns = 0
        self.empty_columns = 0
        self.torn_pairs = 0

    def process_codes(self, codes, region, ctx):
        self.columns += 1
        if not bool(region.any()):
            self.empty_columns += 1
        if not self.values["lo"] < self.values["hi"]:
            self.torn_pairs += 1
        return codes


# ----------------------------------------------------------------------------- the validator


class Validator:
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
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
            raise ParameterError(f"seed={seed!r} must be an integer >= 0")
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
        from ..core.effects import make_chain
        from ..core.engine import Engine

        chain = make_chain(self.chain) if isinstance(self.chain, str) else [copy.deepcopy(e) for e in self.chain]
        if probe is not None:
            chain.append(probe)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the start-up notes (runner choice) are not the checks' business
            engine = Engine(self.model, sr=sr, channels=channels, chain=chain, seed=self.seed, block_hint=block_hint)
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

    # -- 6. the model file (run first: the others need a model that loads) -----------------------

    def check_model_file(self) -> CheckResult:
        findings: list[str] = []
        module = self.model.module
        figures: dict[str, Any] = {
            "format_version": int(module.format_version),
            "sample_rate": self.model_sr,
            "codebook_size": int(module.codebook_size),
            "has_prior": bool(module.has_prior),
            "bytes": Path(self.model.path).stat().st_size if Path(self.model.path).is_file() else None,
        }
        # the model itself at every level, and every code it can emit
        levels = self._model_levels(findings)
        figures["decoded_peak_by_level"] = levels
        self._model_codes(findings, figures)
        # damaged and foreign copies must be refused with one clear line
        refused, total = self._damaged_copies(findings)
        figures["damaged_copies"] = total
        figures["damaged_refused"] = refused
        summary = (
            f"format {figures['format_version']}, {self.model_sr} Hz, {figures['codebook_size']} codes; "
            f"finite at {len(levels)} input levels and for every code; {refused}/{total} damaged or foreign copies "
            "refused with one line"
        )
        return CheckResult("model-file", not findings, summary, findings, figures)

    def _model_levels(self, findings: list[str]) -> dict[str, float]:
        from spectro_fx.models.spectral import stft

        module = self.model.module
        cfg = self.model.config.stft
        rng = np.random.default_rng(self.seed)
        ts = int(module.time_stride)
        n = self.model_sr // 4
        peaks: dict[str, float] = {}
        signals = {"silence": np.zeros(n)}
        for db in (-100, -60, -30, -12, 0, 12, 40):
            level = 10.0 ** (db / 20.0)
            signals[f"noise {db:+d} dBFS"] = level * np.clip(rng.standard_normal(n) / 3.0, -1, 1)
            signals[f"sine {db:+d} dBFS"] = level * np.sin(2 * math.pi * 1000.0 * np.arange(n) / self.model_sr)
        for label, y in signals.items():
            spec = stft(y, cfg)
            frames = spec.shape[1] // ts * ts
            mag = torch.from_numpy(np.abs(spec[:, :frames])).float()[None]
            with torch.no_grad():
                latent = module.encode_latent(mag)
                decoded = module.decode(module.quantize(latent))
            if not bool(torch.isfinite(latent).all()):
                findings.append(f"the encoder gives non-finite latents for {label} input")
            if not bool(torch.isfinite(decoded).all()):
                findings.append(f"the decoder gives non-finite magnitudes for {label} input")
                continue
            tiny = int(((decoded > 0) & (decoded < _TINY)).sum())
            if tiny:
                findings.append(f"the decoder gives {tiny} subnormal magnitudes for {label} input (CPU stalls, subnormal output)")
            peaks[label] = round(float(decoded.max()), 4)
        return peaks

    def _model_codes(self, findings: list[str], figures: dict[str, Any]) -> None:
        module = self.model.module
        k = int(module.codebook_size)
        columns = max(int(module.decoder_receptive_field_columns), 1) + 1
        codes = torch.arange(k)[:, None, None].expand(k, int(module.n_rows), columns).contiguous()
        with torch.no_grad():
            decoded = module.decode(codes)
        bad = (~torch.isfinite(decoded)).flatten(1).any(1)
        tiny = ((decoded > 0) & (decoded < _TINY)).flatten(1).any(1)
        if bool(bad.any()):
            findings.append(f"{int(bad.sum())} of {k} codes decode to non-finite magnitudes (e.g. code {int(bad.nonzero()[0])})")
        if bool(tiny.any()):
            findings.append(f"{int(tiny.sum())} of {k} codes decode to subnormal magnitudes (e.g. code {int(tiny.nonzero()[0])})")
        finite = decoded[torch.isfinite(decoded)]
        figures["decoded_peak_any_code"] = round(float(finite.max()), 4) if finite.numel() else None

    def _damaged_copies(self, findings: list[str]) -> tuple[int, int]:
        path = Path(self.model.path)
        if not path.is_file():
            return 0, 0
        data = path.read_bytes()
        rng = np.random.default_rng(self.seed)
        copies: dict[str, bytes] = {}
        fractions = [0.0, 0.02, 0.5, 0.98, 1 - 1 / max(len(data), 1)]
        fractions += list(rng.uniform(0, 1, self.strictness - 1))
        for f in fractions:
            cut = int(f * len(data))
            copies[f"truncated to {cut} of {len(data)} bytes"] = data[:cut]
        with zipfile.ZipFile(path) as archive:
            members = [i for i in archive.infolist() if i.file_size > 0]
        for _ in range(2 + self.strictness):
            info = members[int(rng.integers(len(members)))]
            offset = info.header_offset
            name_len, extra_len = struct.unpack("<HH", data[offset + 26 : offset + 30])
            start = offset + 30 + name_len + extra_len
            pos = start + int(rng.integers(max(info.compress_size, 1)))
            bit = int(rng.integers(8))
            flipped = bytearray(data)
            flipped[pos] ^= 1 << bit
            copies[f"bit {bit} of byte {pos} flipped (in {info.filename.split('/', 1)[-1]})"] = bytes(flipped)
        copies["empty file"] = b""
        copies["random bytes"] = rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()
        copies["a text file"] = b"this is not a model\n" * 20
        with tempfile.TemporaryDirectory(prefix="spectro-fx-validate-") as tmp:
            zipped = Path(tmp) / "foreign-zip.pt"
            with zipfile.ZipFile(zipped, "w") as archive:
                archive.writestr("readme.txt", "a zip archive that is not TorchScript")
            copies["a zip that is not TorchScript"] = zipped.read_bytes()
            state = Path(tmp) / "state-dict.pt"
            torch.save({"weight": torch.zeros(3)}, state)
            copies["a torch.save state dict"] = state.read_bytes()
            refused = 0
            for i, (label, content) in enumerate(copies.items()):
                target = Path(tmp) / f"copy{i}.pt"
                target.write_bytes(content)
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        load_model(target)
                except ModelFileError as exc:
                    message = str(exc)
                    if "\n" in message.strip() or str(target) not in message:
                        findings.append(f"{label}: the error is not one line naming the file: {message!r}")
                    else:
                        refused += 1
                except Exception as exc:  # anything else is a traceback in front of the audience
                    findings.append(f"{label}: {type(exc).__name__} instead of a clear error: {str(exc).splitlines()[0] if str(exc) else ''}")
                else:
                    findings.append(f"{label}: loaded without complaint")
        return refused, len(copies)

    # -- 1. processing -------------------------------------------------------------------------

    def check_processing(self) -> CheckResult:
        findings: list[str] = []
        runs = processing_runs(strictness=self.strictness, seed=self.seed)
        worst_peak = 0.0
        subnormals = late = model_bad = 0
        exact = 0
        with self._bar(len(runs), "processing") as bar:
            for index, (sr, block, channels) in enumerate(runs):
                where = f"{sr} Hz, block {block}, {'mono' if channels == 1 else 'stereo'}"
                engine = self.engine(sr=sr, channels=channels, extra=self.full_region(), block_hint=block)
                column = self.column_frames(sr)
                active = max(6 * column, 2 * block)
                tail = engine.latency_samples + 2 * column + block
                x = np.concatenate([sweep(sr, active, channels), np.zeros((tail, channels), np.float32)])
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    out = run_blocks(engine, x, block)
                late += engine.late_samples
                if not np.isfinite(out).all():
                    findings.append(f"{where}: {int((~np.isfinite(out)).sum())} non-finite output samples")
                    bar.update()
                    continue
                peak = float(np.abs(out).max())
                worst_peak = max(worst_peak, peak)
                if peak > HEADROOM:
                    findings.append(f"{where}: output peak {_dbfs(peak):+.1f} dBFS for a full-scale sweep (limit +{HEADROOM_DB:g})")
                count = subnormal_count(out)
                subnormals += count
                if count:
                    findings.append(f"{where}: {count} subnormal output samples")
                if engine.model_nonfinite_values:
                    model_bad += engine.model_nonfinite_values
                    findings.append(f"{where}: the model decoded {engine.model_nonfinite_values} non-finite magnitudes (the engine hid them)")
                # the dry path: an empty region, or wet 0, gives the input back bit for bit
                use_wet = index % 2 == 1 and self.wet_name is not None
                null = {**self.full_region(), **({self.wet_name: 0.0} if use_wet else {"high_hz": 20.0})}
                engine = self.engine(sr=sr, channels=channels, extra=null, block_hint=block)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    out = run_blocks(engine, x, block)
                d = engine.latency_samples
                if np.array_equal(out[d:], x[: x.shape[0] - d]) and not out[:d].any():
                    exact += 1
                else:
                    diff = float(np.abs(out[d:].astype(np.float64) - x[: x.shape[0] - d]).max()) if x.shape[0] > d else float("nan")
                    findings.append(
                        f"{where}: with {'wet 0' if use_wet else 'an empty band'} the output is not the input "
                        f"delayed by {d} samples (largest difference {diff:.3g})"
                    )
                bar.update()
        rates = sorted({r[0] for r in runs})
        blocks = sorted({r[1] for r in runs})
        summary = (
            f"{len(runs)} runs ({len(rates)} rates, {len(blocks)} block sizes, mono/stereo): peak "
            f"{_dbfs(worst_peak):+.1f} dBFS for a 0 dBFS sweep, {subnormals} subnormals, dry path bit-exact in {exact}/{len(runs)}"
        )
        figures = {
            "runs": [list(r) for r in runs], "peak_dbfs": _dbfs(worst_peak), "subnormal_samples": subnormals,
            "model_nonfinite_values": model_bad, "dry_path_exact": exact, "late_samples": late,
        }
        return CheckResult("processing", not findings, summary, findings, figures)

    # -- 2. automation -------------------------------------------------------------------------

    def automation_runs(self) -> list[tuple[int, int]]:
        runs = [(48000, 2), (44100, 1), (96000, 2), (22050, 1), (88200, 2)]
        return runs[: 1 + (self.strictness - 1) // 2]

    def _automate(self, sr: int, channels: int, x: np.ndarray, rng_seed: int) -> tuple[np.ndarray, Any]:
        engine = self.engine(sr=sr, channels=channels, block_hint=AUTOMATION_EVERY)
        rng = np.random.default_rng(rng_seed)
        parameters = engine.parameters()
        out = np.empty_like(x)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for i in range(0, x.shape[0], AUTOMATION_EVERY):
                for name, parameter in parameters.items():
                    engine.set(name, random_value(parameter, rng))
                out[i : i + AUTOMATION_EVERY] = engine.process(x[i : i + AUTOMATION_EVERY])
        return out, engine

    def check_automation(self) -> CheckResult:
        findings: list[str] = []
        runs = self.automation_runs()
        seconds = 0.4 + 0.1 * self.strictness
        worst_ratio = 0.0
        changes = 0
        with self._bar(2 * len(runs), "automation") as bar:
            for sr, channels in runs:
                where = f"{sr} Hz, {'mono' if channels == 1 else 'stereo'}"
                rng = np.random.default_rng([self.seed, sr])
                x = program(rng, sr, int(seconds * sr), channels, peak=0.5)
                out, engine = self._automate(sr, channels, x, self.seed)
                bar.update()
                again, _ = self._automate(sr, channels, x, self.seed)
                bar.update()
                changes += len(engine.parameters()) * (x.shape[0] // AUTOMATION_EVERY)
                if not np.isfinite(out).all():
                    findings.append(f"{where}: {int((~np.isfinite(out)).sum())} non-finite output samples")
                    continue
                if not np.array_equal(out, again):
                    findings.append(f"{where}: two runs with seed {self.seed} differ (largest difference {float(np.abs(out - again).max()):.3g})")
                d = engine.latency_samples
                step_in = float(np.abs(np.diff(x, axis=0)).max())
                steps = np.abs(np.diff(out[d:], axis=0))
                ratio = float(steps.max()) / max(step_in, 1e-12)
                worst_ratio = max(worst_ratio, ratio)
                if ratio > HEADROOM:
                    at = int(np.unravel_index(int(np.argmax(steps)), steps.shape)[0]) + d + 1
                    findings.append(
                        f"{where}: a click: an output step of {float(steps.max()):.3g} at output sample {at} "
                        f"({20 * math.log10(ratio):+.1f} dB over the input's largest step {step_in:.3g}; limit +{HEADROOM_DB:g} dB)"
                    )
                subnormals = subnormal_count(out)
                if subnormals:
                    findings.append(f"{where}: {subnormals} subnormal output samples")
                if engine.model_nonfinite_values:
                    findings.append(f"{where}: the model decoded {engine.model_nonfinite_values} non-finite magnitudes (the engine hid them)")
        names = list(self.parameters)
        summary = (
            f"{len(names)} parameters set every {AUTOMATION_EVERY} samples ({changes} changes, {len(runs)} runs of "
            f"{seconds:.1f} s): largest output step {20 * math.log10(max(worst_ratio, 1e-12)):+.1f} dB against the input's, "
            f"repeatable with seed {self.seed}"
        )
        figures = {"runs": [list(r) for r in runs], "parameters": names, "changes": changes,
                   "largest_step_ratio_db": round(20 * math.log10(max(worst_ratio, 1e-12)), 2)}
        return CheckResult("automation", not findings, summary, findings, figures)

    # -- 3. hostile input ----------------------------------------------------------------------

    def hostile_cases(self, rng: np.random.Generator, frames: int, channels: int, sr: int) -> dict[str, tuple[np.ndarray, str | None]]:
        """Bad segments ``[frames, channels]`` by name, with the sanitizer note each must give
        (``nonfinite``, ``subnormal`` or None)."""
        t = np.arange(frames)[:, None] / sr
        square = np.where(np.sin(2 * math.pi * 100.0 * t) >= 0, 1.0, -1.0) * np.ones((1, channels))
        cases: dict[str, tuple[np.ndarray, str | None]] = {
            "NaN": (np.full((frames, channels), np.nan), "nonfinite"),
            "+Inf": (np.full((frames, channels), np.inf), "nonfinite"),
            "-Inf": (np.full((frames, channels), -np.inf), "nonfinite"),
            "1e6": (1e6 * np.clip(rng.standard_normal((frames, channels)) / 3, -1, 1), None),
            "DC": (np.ones((frames, channels)), None),
            "full-scale square": (square, None),
            "silence": (np.zeros((frames, channels)), None),
            "white noise 0 dBFS": (rng.uniform(-1.0, 1.0, (frames, channels)), None),
            "subnormal": (1e-40 * np.sign(rng.standard_normal((frames, channels))), "subnormal"),
        }
        if self.strictness >= 4:
            scattered = rng.uniform(-0.3, 0.3, (frames, channels))
            scattered[rng.random((frames, channels)) < 0.01] = np.nan
            cases["scattered NaN"] = (scattered, "nonfinite")
        return {k: (v.astype(np.float32), note) for k, (v, note) in cases.items()}

    def hostile_runs(self) -> list[tuple[int, int, int]]:
        runs = [(48000, 2, 256), (44100, 2, 64), (96000, 1, 1024), (22050, 2, 65)]
        return runs[: 1 + self.strictness // 4]

    def check_hostile_input(self) -> CheckResult:
        findings: list[str] = []
        runs = self.hostile_runs()
        worst_recovery = worst_memory = 0.0
        cases_run = 0
        with self._bar(len(runs) * 10, "hostile input") as bar:
            for sr, channels, block in runs:
                rng = np.random.default_rng([self.seed, sr, 3])
                bad_frames = int(0.1 * sr)
                cases = self.hostile_cases(rng, bad_frames, channels, sr)
                for label, (bad, note) in cases.items():
                    cases_run += 1
                    where = f"{label} at {sr} Hz, block {block}"
                    engine = self.engine(sr=sr, channels=channels, extra=self.full_region(), block_hint=block)
                    column = self.column_frames(sr)
                    allowed = engine.latency_samples + column
                    pre = program(rng, sr, int(0.1 * sr), channels, peak=PLAYING_PEAK)
                    post = program(rng, sr, allowed + int(0.15 * sr), channels, peak=PLAYING_PEAK)
                    x = np.concatenate([pre, bad, post])
                    with warnings.catch_warnings(record=True) as caught:
                        warnings.simplefilter("always")
                        out = run_blocks(engine, x, block)
                    # what it plays had the bad samples been silence: "normal" for this input
                    reference = self.engine(sr=sr, channels=channels, extra=self.full_region(), block_hint=block)
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        normal = run_blocks(reference, np.concatenate([pre, np.zeros_like(bad), post]), block)
                    bar.update()
                    if not np.isfinite(out).all():
                        findings.append(f"{where}: {int((~np.isfinite(out)).sum())} non-finite output samples")
                        continue
                    stop = pre.shape[0] + bad.shape[0]
                    limit = HEADROOM * max(float(np.abs(post).max()), float(np.abs(normal[stop + allowed :]).max()))
                    after = np.abs(out[stop:])
                    loud = np.flatnonzero((after > limit).any(axis=1) | ((after > 0) & (after < _TINY)).any(axis=1))
                    recovery = (int(loud[-1]) + 1) if loud.size else 0
                    worst_recovery = max(worst_recovery, recovery / sr)
                    changed = np.flatnonzero(np.abs(out[stop:] - normal[stop:]).max(axis=1) > 1e-3 * limit)
                    worst_memory = max(worst_memory, (int(changed[-1]) + 1) / sr if changed.size else 0.0)
                    if recovery > allowed:
                        findings.append(
                            f"{where}: back to normal only {1000 * recovery / sr:.1f} ms after the bad samples stopped "
                            f"(allowed: latency + one column = {1000 * allowed / sr:.1f} ms)"
                        )
                    messages = [str(w.message) for w in caught]
                    said = {kind: sum(kind_word in m for m in messages) for kind, kind_word in (("nonfinite", "non-finite samples"), ("subnormal", "subnormal samples"))}
                    if note is not None and said[note] != 1:
                        findings.append(f"{where}: the engine said {said[note]} times what it sanitized (once expected)")
                    for kind, count in said.items():
                        if kind != note and count:
                            findings.append(f"{where}: the engine reported sanitizing {kind} samples that were not there")
                    if engine.model_nonfinite_values:
                        findings.append(f"{where}: the model decoded {engine.model_nonfinite_values} non-finite magnitudes (the engine hid them)")
        summary = (
            f"{cases_run} bad inputs in {len(runs)} settings: output finite, back to normal at most "
            f"{1000 * worst_recovery:.1f} ms after the bad samples (still audible in the model's memory up to "
            f"{1000 * worst_memory:.0f} ms), sanitizing said once"
        )
        figures = {"runs": [list(r) for r in runs], "cases": cases_run, "worst_recovery_ms": round(1000 * worst_recovery, 2),
                   "worst_memory_ms": round(1000 * worst_memory, 2)}
        return CheckResult("hostile-input", not findings, summary, findings, figures)

    # -- 4. state -------------------------------------------------------------------------------

    def check_state(self) -> CheckResult:
        findings: list[str] = []
        runs = [(48000, 2), (44100, 1), (96000, 2)][: 1 + self.strictness // 5]
        block = 256
        with self._bar(len(runs) * 4 + 1, "state") as bar:
            for sr, channels in runs:
                where = f"{sr} Hz, {'mono' if channels == 1 else 'stereo'}"
                rng = np.random.default_rng([self.seed, sr, 4])
                x = program(rng, sr, int(0.3 * sr), channels, peak=0.3)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    engine = self.engine(sr=sr, channels=channels, extra=self.full_region(), block_hint=block)
                    first = run_blocks(engine, x, block)
                    engine.reset()
                    second = run_blocks(engine, x, block)
                    bar.update()
                    twin = self.engine(sr=sr, channels=channels, extra=self.full_region(), block_hint=block)
                    third = run_blocks(twin, x, block)
                    bar.update()
                    if not np.array_equal(first, second):
                        findings.append(f"{where}: after reset() the same input gives another output (largest difference {float(np.abs(first - second).max()):.3g})")
                    if not np.array_equal(first, third):
                        findings.append(f"{where}: two engines with seed {self.seed} disagree (largest difference {float(np.abs(first - third).max()):.3g})")
                    # state restore: random settings, then an engine made from values()
                    for name, parameter in engine.parameters().items():
                        engine.set(name, random_value(parameter, rng))
                    run_blocks(engine, x[: 4 * block], block)
                    saved = engine.values()
                    engine.reset()
                    restored = self.engine(sr=sr, channels=channels, extra=saved, block_hint=block)
                    a = run_blocks(engine, x, block)
                    bar.update()
                    b = run_blocks(restored, x, block)
                    bar.update()
                    if not np.array_equal(a, b):
                        findings.append(f"{where}: an engine made from values() does not sound like the one it was saved from")
            torn = self._threaded_pairs(findings)
            bar.update()
        summary = (
            f"reset, twin engines and values() restore bit-exact in {len(runs)} settings; "
            f"{torn['sets']} pair updates from another thread during {torn['blocks']} blocks, none applied half"
        )
        return CheckResult("state", not findings, summary, findings, {"runs": [list(r) for r in runs], **torn})

    def _threaded_pairs(self, findings: list[str]) -> dict[str, int]:
        """Another thread sets low_hz/high_hz (always low < high) and the probe's lo/hi while
        blocks run; the region handed to the chain must never be empty, the probe's pair never torn."""
        # one column per block: the probe sees every state a block took from the setter
        sr, channels = self.model_sr, 2
        block = int(self.model.module.time_stride) * int(self.model.module.hop_length)
        probe = _RegionProbe()
        engine = self.engine(sr=sr, channels=channels, extra=self.full_region(), probe=probe)
        bands = [(100.0, 300.0), (6000.0, 12000.0), (1000.0, 1500.0), (15000.0, 20000.0)]
        pairs = [(1.0, 2.0), (50.0, 90.0), (10.0, 11.0), (80.0, 99.0)]
        stop = threading.Event()
        sets = [0]
        errors: list[str] = []

        def setter() -> None:
            i = 0
            while not stop.is_set():
                low, high = bands[i % len(bands)]
                lo, hi = pairs[(i * 3 + 1) % len(pairs)]
                try:
                    engine.set_many({"low_hz": low, "high_hz": high, "validate-probe.lo": lo, "validate-probe.hi": hi})
                except Exception as exc:  # reported as a finding: a setter must never fail mid-show
                    errors.append(f"{type(exc).__name__}: {exc}")
                    return
                sets[0] += 1
                i += 1  # no pause: the setter is always mid-update when a block may start

        x = program(np.random.default_rng(self.seed), sr, int((0.5 + 0.1 * self.strictness) * sr), channels, peak=0.3)
        thread = threading.Thread(target=setter, name="validate-setter", daemon=True)
        switch = sys.getswitchinterval()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run_blocks(engine, x[: 8 * block], block)
            probe.columns = probe.empty_columns = probe.torn_pairs = 0
            # threads switch every few microseconds, so a block may start between any two bytecodes of the setter
            sys.setswitchinterval(SETTER_SWITCH_S)
            thread.start()
            try:
                out = run_blocks(engine, x, block)
            finally:
                stop.set()
                thread.join(5)
                sys.setswitchinterval(switch)
        blocks = x.shape[0] // block
        if errors:
            findings.append(f"setting parameters from another thread failed: {errors[0]}")
        if probe.empty_columns:
            findings.append(
                f"{probe.empty_columns} of {probe.columns} columns saw an empty region although every low_hz/high_hz "
                "pair set had low < high: a pair was applied half"
            )
        if probe.torn_pairs:
            findings.append(f"{probe.torn_pairs} of {probe.columns} columns saw an effect's pair half applied")
        if not np.isfinite(out).all():
            findings.append("non-finite output while parameters were set from another thread")
        return {"sets": sets[0], "blocks": blocks, "columns": probe.columns, "empty_columns": probe.empty_columns}

    # -- 5. real-time safety ---------------------------------------------------------------------

    def check_realtime(self) -> CheckResult:
        from spectro_fx.models.runtime import torch_threads

        with torch_threads(1):  # timed as the live command runs the engine: on one torch thread
            return self._check_realtime()

    def _check_realtime(self) -> CheckResult:
        findings: list[str] = []
        figures: dict[str, Any] = {"timing": {}, "live_path": {}}
        sr = self.model_sr
        with self._bar(len(REALTIME_BLOCKS) + len(LIVE_PATH_BLOCKS), "realtime") as bar:
            for block in REALTIME_BLOCKS:
                figures["timing"][block] = self._timing(sr, block)
                bar.update()
            live_block = REALTIME_BLOCKS[-1]
            # an engine that cannot keep up has failed already; tracing its live path would take minutes
            if figures["timing"][live_block]["load"] <= MAX_LOAD:
                for block in LIVE_PATH_BLOCKS:
                    figures["live_path"][block] = self._live_path(sr, block)
                    bar.update()
        timing = figures["timing"]
        if timing[live_block]["load"] > MAX_LOAD:
            findings.append(
                f"at {live_block} frames (the live default) the engine needs {timing[live_block]['load']:.2f} CPU s per "
                "second of audio: it cannot keep up live"
            )
        for block, t in timing.items():
            if t["second_longest_cpu_ms"] > 1000 * MAX_CALL_S:
                findings.append(
                    f"at {block} frames engine calls needed up to {t['second_longest_cpu_ms']:.1f} ms of CPU, more than "
                    f"the live safety margin can absorb ({1000 * MAX_CALL_S:.0f} ms)"
                )
        live = figures["live_path"]
        small, large = live.get(LIVE_PATH_BLOCKS[0]), live.get(LIVE_PATH_BLOCKS[-1])
        growth = large["largest_block_bytes"] - small["largest_block_bytes"] if live else 0
        buffer_bytes = (LIVE_PATH_BLOCKS[-1] - LIVE_PATH_BLOCKS[0]) * 2 * 4
        if growth > buffer_bytes // 2:
            findings.append(
                f"the audio callback allocates {growth} bytes more per block at {LIVE_PATH_BLOCKS[-1]} frames than at "
                f"{LIVE_PATH_BLOCKS[0]}: it allocates audio buffers per block"
            )
        for block, v in live.items():
            where = f"live path at {block} frames"
            if v["retained_bytes"] > 0:
                findings.append(f"{where}: the audio callback kept {v['retained_bytes']} more bytes after {v['blocks']} blocks (it grows)")
            if v["largest_block_bytes"] > CALLBACK_OBJECT_BYTES:
                findings.append(
                    f"{where}: the audio callback had {v['largest_block_bytes']} bytes allocated at once in one block "
                    f"(views and numbers stay under {CALLBACK_OBJECT_BYTES})"
                )
            if v["locks_held"]:
                findings.append(f"{where}: the worker held {', '.join(v['locks_held'])} across an engine call")
            if v["error"] or v["callback_error"]:
                findings.append(f"{where}: the worker or the callback failed: {v['error'] or v['callback_error']}")
        keeps_up = [b for b, t in timing.items() if t["load"] <= MAX_LOAD]
        t = timing[live_block]
        loads = ", ".join(f"{timing[b]['load']:.2f}" for b in REALTIME_BLOCKS)
        summary = (
            f"engine load {loads} CPU s per audio s at "
            f"{'/'.join(map(str, REALTIME_BLOCKS))} frames (p50 {t['p50_ms']:.1f}, p99 {t['p99_ms']:.1f}, max {t['max_ms']:.1f} ms "
            f"at {live_block}: period {t['period_ms']:.1f} ms); keeps up at {'/'.join(map(str, keeps_up)) or 'none'}"
        )
        if live:
            summary += (
                f"; callback: {max(v['largest_block_bytes'] for v in live.values())} B of views at most per block, "
                f"{sum(v['retained_bytes'] for v in live.values())} B kept; locks held across "
                f"{sum(v['engine_calls'] for v in live.values())} engine calls: {len(set().union(*(v['locks_held'] for v in live.values())))}"
            )
        else:
            summary += "; live path not traced (too slow to run live)"
        if not findings and t["load"] > TIGHT_LOAD:
            summary += f" (little headroom: load above {TIGHT_LOAD:g})"
        return CheckResult("realtime", not findings, summary, findings, figures)

    def _timing(self, sr: int, block: int) -> dict[str, float]:
        channels = 2
        engine = self.engine(sr=sr, channels=channels, extra=self.full_region(), block_hint=block)
        rng = np.random.default_rng([self.seed, block, 5])
        x = program(rng, sr, int((0.6 + 0.2 * self.strictness) * sr), channels, peak=0.3)
        warm = int(0.3 * sr) // block * block
        times, cpu = [], []
        # as live mode does: what exists before the show is frozen out of the collector's full passes
        gc.collect()
        gc.freeze()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                run_blocks(engine, x[:warm], block)
                for i in range(warm, x.shape[0] - block + 1, block):
                    t0, c0 = time.perf_counter(), time.thread_time()
                    engine.process(x[i : i + block])
                    times.append(time.perf_counter() - t0)
                    cpu.append(time.thread_time() - c0)
        finally:
            gc.unfreeze()
        times_ms = 1000 * np.asarray(times)
        cpu_ms = 1000 * np.asarray(cpu)
        period_ms = 1000 * block / sr
        return {
            "block": block,
            "period_ms": round(period_ms, 3),
            "p50_ms": round(float(np.percentile(times_ms, 50)), 3),
            "p99_ms": round(float(np.percentile(times_ms, 99)), 3),
            "max_ms": round(float(times_ms.max()), 3),
            # the verdicts use CPU time, so a machine busy with other work does not fail them
            "second_longest_cpu_ms": round(float(np.sort(cpu_ms)[-2]), 3) if len(cpu_ms) > 1 else 0.0,
            "load": round(float(cpu_ms.sum()) / (len(cpu) * period_ms), 3),
            "wall_load": round(float(times_ms.sum()) / (len(times) * period_ms), 3),
            "calls": len(times),
        }

    def _live_path(self, sr: int, block: int) -> dict[str, Any]:
        """The live callback (``StreamBridge``) and worker (``live.Worker``) as ``--input jack``
        runs them, the callback called here block by block while the worker is parked between
        engine calls, so tracemalloc sees the callback alone."""
        from .audio_io import StreamBridge
        from .worker import Worker

        channels = 2
        engine = self.engine(sr=sr, channels=channels, extra=self.full_region(), block_hint=block)
        fade = min(block, max(int(round(0.002 * sr)), 8))
        bridge = StreamBridge(
            sr=sr, channels=channels, out_channels=channels, blocksize=block,
            engine_latency=int(engine.latency_samples), margin=2 * block + fade, fade=fade,
        )
        params = _ParkingQueue()
        probe = _LockProbe(engine)
        worker = Worker(probe, bridge, params=params)
        probe.locks = reachable_locks({"worker": worker, "bridge": bridge, "params": params, "engine": engine})
        warm_blocks = max(int(0.5 * sr) // block, 24)
        traced_from = warm_blocks - 16  # objects made before tracing would look kept when replaced
        measured = (40 + 20 * self.strictness) if block <= 1024 else (8 + 2 * self.strictness)
        rng = np.random.default_rng([self.seed, block, 6])
        x = program(rng, sr, (warm_blocks + measured) * block, channels, peak=0.3)
        out = np.zeros((block, channels), np.float32)
        largest = 0
        retained = [0, 0]  # bytes kept over the first and the second half of the measured blocks
        wet_blocks = 0

        def caught_up() -> bool:
            deadline = time.monotonic() + 10.0
            while worker.pos < bridge.to_worker.write_pos and worker.error is None:
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.0002)
            return True

        was_tracing = tracemalloc.is_tracing()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            worker.start()
            try:
                for k in range(warm_blocks + measured):
                    inp = x[k * block : (k + 1) * block]
                    if not caught_up() or not params.park():
                        break
                    if k == traced_from and not was_tracing:
                        tracemalloc.start()
                    if k >= warm_blocks:
                        before = tracemalloc.get_traced_memory()[0]
                        tracemalloc.reset_peak()
                        bridge.duplex_callback(inp, out, block, None, 0)
                        current, peak = tracemalloc.get_traced_memory()
                        largest = max(largest, peak - before)
                        retained[(k - warm_blocks) * 2 // measured] += current - before
                        wet_blocks += bridge.wet
                    else:
                        bridge.duplex_callback(inp, out, block, None, 0)
                    params.release()
            finally:
                if not was_tracing and tracemalloc.is_tracing():
                    tracemalloc.stop()
                params.release()
                worker.stop()
        return {
            "blocks": measured,
            "wet_blocks": int(wet_blocks),
            "largest_block_bytes": int(largest),
            # a number kept now and then (the float free list filling) is no leak; a leak keeps
            # bytes block after block, in both halves
            "retained_bytes": int(min(retained)) if min(retained) > LEAK_BYTES_PER_BLOCK * measured / 2 else 0,
            "retained_by_half": [int(r) for r in retained],
            "channels": channels,
            "locks_checked": [path for path, _ in probe.locks],
            "locks_held": sorted(probe.held),
            "engine_calls": probe.calls,
            "underruns": bridge.underruns,
            "error": None if worker.error is None else repr(worker.error),
            "callback_error": bridge.callback_error,
        }


# ----------------------------------------------------------------------------- command line


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
    parser.add_argument("--model", metavar="FILE", help="model file (default: the bundled default model)")
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
        from ..core.params import parse_settings
        from .render import resolve_model

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
