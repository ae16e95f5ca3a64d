"""Test signals and measurements shared by the checks: sweeps, a steady chord, random parameter values.

Arrays are ``[frames, channels]`` float32, as the engine takes them.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ...core.effects import Parameter

FLOAT32_TINY = float(np.finfo(np.float32).tiny)
"""Smallest normal float32: magnitudes between 0 and it are subnormal (slow on many CPUs)."""


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



def run_blocks(engine: Any, x: np.ndarray, block: int) -> np.ndarray:
    """``x`` [frames, channels] through ``engine`` in blocks of ``block`` frames."""
    out = np.empty_like(x)
    for i in range(0, x.shape[0], block):
        out[i : i + block] = engine.process(x[i : i + block])
    return out


def subnormal_count(x: np.ndarray) -> int:
    magnitude = np.abs(x)
    return int(((magnitude > 0.0) & (magnitude < FLOAT32_TINY)).sum())
