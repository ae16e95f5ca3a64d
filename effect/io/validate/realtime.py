"""The real-time safety check: the live path allocates nothing per block, the worker holds no lock
across an engine call, and time per block against the block period."""

from __future__ import annotations

import gc
import time
import tracemalloc
import warnings
from typing import Any

import numpy as np

from spectro_fx.models.runtime import torch_threads

from .probes import LockProbe, ParkingQueue, reachable_locks
from .report import CheckResult
from .signals import program, run_blocks

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


class RealtimeChecks:
    """Check 5 of :class:`~.validator.Validator` (its ``engine``, ``full_region``, ``model_sr`` and ``strictness``)."""

    # -- 5. real-time safety ---------------------------------------------------------------------

    def check_realtime(self) -> CheckResult:
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
        from ..audio_io import StreamBridge
        from ..worker import Worker

        channels = 2
        engine = self.engine(sr=sr, channels=channels, extra=self.full_region(), block_hint=block)
        fade = min(block, max(int(round(0.002 * sr)), 8))
        bridge = StreamBridge(
            sr=sr, channels=channels, out_channels=channels, blocksize=block,
            engine_latency=int(engine.latency_samples), margin=2 * block + fade, fade=fade,
        )
        params = ParkingQueue()
        probe = LockProbe(engine)
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
