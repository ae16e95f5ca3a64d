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


def machine_line(extra: str) -> str:
    return (f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, "
            f"torch {torch.__version__}, 1 thread; {extra}")
