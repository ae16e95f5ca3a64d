"""The region: a frequency band times a time gate, as a soft spectral mask and as codemap cells.

Pure functions of parameter values and frame times, so a stream and a whole-file render agree.
The engine calls the numpy functions; the exported effect module their torch twins (``*_tensor``,
scriptable), which the tests hold equal to them.
"""

from __future__ import annotations

import math

import numpy as np
import torch

EDGE_BINS = 3.0
"""Width of the band's soft edges in STFT bins, outside the band (3 bins = 281 Hz at 48 kHz / 512)."""

GATE_RAMP_FRAMES = 3
"""Frames the time gate takes to open or close (3 hops = 8 ms at 48 kHz / hop 128)."""


def band_mask(low_hz: np.ndarray, high_hz: np.ndarray, *, sr: int, n_fft: int, edge_bins: float = EDGE_BINS) -> np.ndarray:
    """Soft band-pass mask over STFT bins, one row per frame.

    1 for bins inside ``[low_hz, high_hz]``, a raised-cosine fall to 0 over ``edge_bins`` bins
    outside each edge, exactly 0 beyond. An empty band (``high_hz <= low_hz``) is all 0.

    Parameters
    ----------
    low_hz, high_hz : np.ndarray [n_frames], Hz
    sr : int
        Model sample rate in Hz.
    n_fft : int

    Returns
    -------
    np.ndarray [n_frames, n_bins], float64 in [0, 1]
    """
    low_hz = np.atleast_1d(np.asarray(low_hz, dtype=np.float64))[:, None]
    high_hz = np.atleast_1d(np.asarray(high_hz, dtype=np.float64))[:, None]
    bin_hz = sr / n_fft
    freqs = np.arange(n_fft // 2 + 1) * bin_hz
    outside = np.maximum(np.maximum(low_hz - freqs, freqs - high_hz), 0.0) / bin_hz
    mask = np.where(outside < edge_bins, 0.5 + 0.5 * np.cos(np.pi * np.minimum(outside / edge_bins, 1.0)), 0.0)
    return np.where(high_hz > low_hz, mask, 0.0)


def gate_targets(frames: np.ndarray, *, period_s: float, duty: float, hop_s: float) -> np.ndarray:
    """Open (1) or closed (0) state of the time gate at the given frame indices.

    The gate is open for the first ``duty * period_s`` seconds of every period, counted from
    the stream start; ``period_s == 0`` or ``duty >= 1`` means always open, ``duty == 0`` never.

    Parameters
    ----------
    frames : np.ndarray [n] int
        Frame indices; frame ``t`` ends at ``(t + 1) * hop`` samples, its time is ``t * hop_s``.
    hop_s : float
        Seconds per hop at the model rate.
    """
    frames = np.asarray(frames)
    if period_s <= 0.0 or duty >= 1.0:
        return np.ones(frames.shape)
    if duty <= 0.0:
        return np.zeros(frames.shape)
    phase = np.mod(frames * hop_s, period_s)
    return (phase < duty * period_s).astype(np.float64)


def slew_gate(targets: np.ndarray, start: float, *, ramp_frames: int = GATE_RAMP_FRAMES) -> np.ndarray:
    """Move from ``start`` towards each frame's target by at most ``1 / ramp_frames`` per frame,
    so the gate never switches in one frame (no clicks). Returns ``[n]`` gate values in [0, 1]."""
    step = 1.0 / max(ramp_frames, 1)
    out = np.empty(len(targets))
    value = start
    for i, target in enumerate(targets):
        value = min(max(target, value - step), value + step)
        out[i] = value
    return out


def region_rows(mask: np.ndarray, *, freq_stride: int, n_rows: int) -> np.ndarray:
    """Codemap rows that overlap the mask.

    Parameters
    ----------
    mask : np.ndarray [n_frames, n_bins]
    freq_stride : int
        Bins per codemap row (row ``r`` = bins ``r * freq_stride`` .. ``(r + 1) * freq_stride - 1``).
    n_rows : int

    Returns
    -------
    np.ndarray [n_rows] bool
    """
    active = (mask > 0.0).any(axis=0)
    padded = np.zeros(n_rows * freq_stride, dtype=bool)
    padded[: active.shape[0]] = active
    return padded.reshape(n_rows, freq_stride).any(axis=1)


def region_cells(mask: np.ndarray, *, time_stride: int, freq_stride: int, n_rows: int) -> np.ndarray:
    """Codemap cells that overlap the mask, for whole columns at once.

    Parameters
    ----------
    mask : np.ndarray [n_columns * time_stride, n_bins]

    Returns
    -------
    np.ndarray [n_columns, n_rows] bool (row ``r`` of column ``c``: :func:`region_rows` of the
    column's frames)
    """
    n_frames, n_bins = mask.shape
    active = (mask > 0.0).reshape(n_frames // time_stride, time_stride, n_bins).any(axis=1)
    padded = np.zeros((active.shape[0], n_rows * freq_stride), dtype=bool)
    padded[:, :n_bins] = active
    return padded.reshape(active.shape[0], n_rows, freq_stride).any(axis=2)


# torch twins of the functions above, for the exported effect module


def band_mask_tensor(low_hz: torch.Tensor, high_hz: torch.Tensor, sr: int, n_fft: int, edge_bins: float) -> torch.Tensor:
    """:func:`band_mask` on float64 tensors ``[n_frames]`` -> ``[n_frames, n_bins]``."""
    bin_hz = sr / n_fft
    freqs = torch.arange(n_fft // 2 + 1, dtype=torch.float64)[None, :] * bin_hz
    low = low_hz[:, None]
    high = high_hz[:, None]
    outside = torch.clamp_min(torch.maximum(low - freqs, freqs - high), 0.0) / bin_hz
    soft = 0.5 + 0.5 * torch.cos(math.pi * torch.clamp_max(outside / edge_bins, 1.0))
    mask = torch.where(outside < edge_bins, soft, torch.zeros_like(soft))
    return torch.where(high > low, mask, torch.zeros_like(mask))


def gate_targets_tensor(frames: torch.Tensor, period_s: float, duty: float, hop_s: float) -> torch.Tensor:
    """:func:`gate_targets` of int64 frame indices, float64 ``[n]``."""
    if period_s <= 0.0 or duty >= 1.0:
        return torch.ones(frames.shape[0], dtype=torch.float64)
    if duty <= 0.0:
        return torch.zeros(frames.shape[0], dtype=torch.float64)
    # fmod, as numpy's mod of positive numbers: the same phase to the last bit
    phase = torch.fmod(frames.double() * hop_s, period_s)
    return (phase < duty * period_s).double()


def slew_gate_tensor(targets: torch.Tensor, start: float, ramp_frames: int) -> torch.Tensor:
    """:func:`slew_gate` on a float64 tensor."""
    step = 1.0 / max(ramp_frames, 1)
    out = torch.empty(targets.shape[0], dtype=torch.float64)
    value = start
    for i in range(targets.shape[0]):
        value = min(max(float(targets[i]), value - step), value + step)
        out[i] = value
    return out


def region_cells_tensor(mask: torch.Tensor, time_stride: int, freq_stride: int, n_rows: int) -> torch.Tensor:
    """:func:`region_cells` of a tensor mask, bool ``[n_columns, n_rows]``."""
    n_frames, n_bins = mask.shape[0], mask.shape[1]
    active = (mask > 0.0).reshape(n_frames // time_stride, time_stride, n_bins).any(dim=1)
    padded = torch.zeros(active.shape[0], n_rows * freq_stride, dtype=torch.bool)
    padded[:, :n_bins] = active
    return padded.reshape(active.shape[0], n_rows, freq_stride).any(dim=2)
