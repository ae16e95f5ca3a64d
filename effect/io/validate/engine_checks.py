"""The checks of the engine through its public API: processing, automation, hostile input, state.

Mixed into :class:`~.validator.Validator`, whose ``engine()``, ``strictness`` and ``seed`` they use.
"""

from __future__ import annotations

import math
import sys
import threading
import warnings
from typing import Any

import numpy as np

from ..status import dbfs
from .probes import RegionProbe
from .report import CheckResult
from .signals import FLOAT32_TINY, program, random_value, run_blocks, subnormal_count, sweep

RATES = (22050, 44100, 48000, 88200, 96000)
BLOCKS = (1, 32, 64, 65, 128, 256, 512, 1024, 4096, 8193)
CHANNELS = (1, 2)
HEADROOM_DB = 12.0
"""Largest output peak and output step accepted above the input's (+12 dB = 4x)."""
HEADROOM = 10.0 ** (HEADROOM_DB / 20.0)
AUTOMATION_EVERY = 32
"""Samples between two random settings of every parameter (as pluginval does)."""
SETTER_SWITCH_S = 2e-5
"""Thread switch interval while another thread sets pairs: a block may start almost anywhere in the setter."""
PLAYING_PEAK = 0.25
"""Peak of the test signal around hostile input: -12 dBFS, a usual playing level."""


def processing_runs(*, strictness: int, seed: int) -> list[tuple[int, int, int]]:
    """``(sr, block, channels)`` of the processing check: at strictness 1 every rate, block
    size and channel count once (10 runs); each level adds 10 more of the full matrix, in a
    seeded order, until strictness 10 runs all 100."""
    cover = [(RATES[i % len(RATES)], BLOCKS[i], CHANNELS[(i // len(RATES)) % 2]) for i in range(len(BLOCKS))]
    rest = [(sr, b, c) for sr in RATES for b in BLOCKS for c in CHANNELS if (sr, b, c) not in cover]
    order = np.random.default_rng(seed).permutation(len(rest))
    return (cover + [rest[i] for i in order])[: 10 * strictness]


class EngineChecks:
    """Checks 1-4 of :class:`~.validator.Validator` (its ``engine``, ``full_region``, ``column_frames``,
    ``_bar``, ``strictness``, ``seed``, ``parameters`` and ``wet_name``)."""

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
                    findings.append(f"{where}: output peak {dbfs(peak):+.1f} dBFS for a full-scale sweep (limit +{HEADROOM_DB:g})")
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
            f"{dbfs(worst_peak):+.1f} dBFS for a 0 dBFS sweep, {subnormals} subnormals, dry path bit-exact in {exact}/{len(runs)}"
        )
        figures = {
            "runs": [list(r) for r in runs], "peak_dbfs": dbfs(worst_peak), "subnormal_samples": subnormals,
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
                    loud = np.flatnonzero((after > limit).any(axis=1) | ((after > 0) & (after < FLOAT32_TINY)).any(axis=1))
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
        probe = RegionProbe()
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
