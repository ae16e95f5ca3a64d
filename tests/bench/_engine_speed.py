"""What the engine benchmarks share (not a benchmark itself): the demo clip as a signal of any
length, an engine's x real time on it, and the line that names the machine."""

from __future__ import annotations

import os
import platform
import time

import numpy as np
import soundfile as sf
import torch

SR = 48000
FILE_BLOCK = 16384
"""A file render's block, in frames."""


def demo_signal(seconds: float) -> np.ndarray:
    """The bundled demo clip's first channel, repeated to ``seconds``: float32 ``[frames, 1]``."""
    from spectro_fx.assets import asset_path

    clip, sr = sf.read(asset_path("demo.wav"), dtype="float32", always_2d=True)
    assert sr == SR
    return np.tile(clip[:, :1], (int(np.ceil(seconds * SR / len(clip))), 1))[: int(seconds * SR)]


def x_real_time(engine, signal_: np.ndarray, block: int = FILE_BLOCK) -> float:
    """Seconds of ``signal_`` per CPU second of this thread, streamed from a reset engine."""
    engine.reset()
    started = time.thread_time()
    for i in range(0, len(signal_), block):
        engine.process(signal_[i : i + block])
    return len(signal_) / SR / (time.thread_time() - started)


CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")
"""The instruction sets that decide this project's speeds (AVX2 cores, AVX-512, AMX bfloat16)."""


def cpu_description() -> str:
    """The CPU model and which of :data:`CPU_FLAGS` it has, from /proc/cpuinfo (Linux), and the
    kernels torch picked (``ATEN_CPU_CAPABILITY`` and ``ONEDNN_MAX_CPU_ISA`` lower them)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    have = [f for f in CPU_FLAGS if f in flags] or ["none of " + "/".join(CPU_FLAGS)]
    capability = torch.backends.cpu.get_cpu_capability()
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA")
    return f"{model} ({', '.join(have)}; torch kernels {capability}{f', oneDNN max {isa}' if isa else ''})"


def machine_line(extra: str) -> str:
    try:
        import onnxruntime

        ort = f", onnxruntime {onnxruntime.__version__}"
    except ImportError:
        ort = ""
    return (f"machine: {cpu_description()}, {platform.machine()}, {os.cpu_count()} CPUs, load average "
            f"{os.getloadavg()[0]:.1f}, torch {torch.__version__}{ort}, 1 thread; {extra}")


def cold_cache_factor(*, megabytes: float = 2.0, period_s: float = 128 / SR, calls: int = 200,
                      rounds: int = 3) -> float:
    """How much dearer this host makes work that returns to its data once per block period (a
    live engine's pattern) than the same work back to back: the median thread time of a
    float32 matrix-vector product over ``megabytes`` of weights (about the default model's
    network, 1.9 MB), called every ``period_s`` with the thread asleep in between, over its
    median called back to back; the median of ``rounds`` alternating rounds of ``calls`` calls.

    About 1 where the caches keep the weights between calls; on this project's shared VM, whose
    neighbours evict them, 1.15-2.0 from minute to minute (the weights come from memory at every
    call), and the engine's paced and live figures pay that too. Takes about ``rounds * calls *
    period_s`` seconds."""
    if megabytes <= 0 or period_s <= 0 or calls < 1 or rounds < 1:
        raise ValueError(f"megabytes={megabytes}, period_s={period_s}, calls={calls}, rounds={rounds}: "
                         "each must be positive")
    n = max(int(np.sqrt(megabytes * 2**20 / 4)), 1)
    weights = np.random.default_rng(0).random((n, n), dtype=np.float32)
    x = np.ones((n, 8), np.float32)

    def median_call(paced: bool) -> float:
        times = np.empty(calls)
        due = time.perf_counter()
        for i in range(calls):
            if paced:
                due += period_s
                time.sleep(max(due - time.perf_counter(), 0.0))
            started = time.thread_time()
            weights @ x
            times[i] = time.thread_time() - started
        return float(np.median(times))

    ratios = [median_call(True) / max(median_call(False), 1e-9) for _ in range(rounds)]
    return float(np.median(ratios))


def cold_cache_line(period_s: float = 128 / SR, megabytes: float = 2.0) -> str:
    """:func:`cold_cache_factor` as the line the live benchmarks print beside the machine line."""
    factor = cold_cache_factor(megabytes=megabytes, period_s=period_s)
    return (f"host cache: a {megabytes:g} MB matrix product called every {period_s * 1e3:.2f} ms costs {factor:.2f}x its "
            "back-to-back time here (1 where the caches keep a live engine's weights between calls)")
