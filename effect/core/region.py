"""The region: a frequency band times a time gate, as a soft spectral mask and as codemap cells.

Pure torch functions of parameter values and frame times (scriptable: the exported module runs
them as the engine does), so a stream and a whole-file render agree.
"""

import math
from typing import List

import torch

EDGE_BINS = 3.0
"""Width of the band's soft edges in STFT bins, outside the band (3 bins = 281 Hz at 48 kHz / 512)."""

GATE_RAMP_FRAMES = 3
"""Frames the time gate takes to open or close (3 hops = 8 ms at 48 kHz / hop 128)."""


def band_mask(low_hz: torch.Tensor, high_hz: torch.Tensor, sr: int, n_fft: int, edge_bins: float) -> torch.Tensor:
    """Soft band-pass mask over STFT bins, one row per frame.

    1 for bins inside ``[low_hz, high_hz]``, a raised-cosine fall to 0 over ``edge_bins`` bins
    outside each edge, exactly 0 beyond. An empty band (``high_hz <= low_hz``) is all 0.

    Parameters
    ----------
    low_hz, high_hz : torch.Tensor [n_frames] float64, Hz
    sr : int
        Model sample rate in Hz.
    n_fft : int
    edge_bins : float
        :data:`EDGE_BINS` for the effect.

    Returns
    -------
    torch.Tensor [n_frames, n_bins], float64 in [0, 1]
    """
    bin_hz = sr / n_fft
    freqs = torch.arange(n_fft // 2 + 1, dtype=torch.float64)[None, :] * bin_hz
    low = low_hz[:, None]
    high = high_hz[:, None]
    outside = torch.clamp_min(torch.maximum(low - freqs, freqs - high), 0.0) / bin_hz
    soft = 0.5 + 0.5 * torch.cos(math.pi * torch.clamp_max(outside / edge_bins, 1.0))
    mask = torch.where(outside < edge_bins, soft, torch.zeros_like(soft))
    return torch.where(high > low, mask, torch.zeros_like(mask))


def gate_targets(frames: torch.Tensor, period_s: float, duty: float, hop_s: float) -> torch.Tensor:
    """Open (1) or closed (0) state of the time gate at the given frame indices, float64 ``[n]``.

    The gate is open for the first ``duty * period_s`` seconds of every period, counted from
    the stream start; ``period_s == 0`` or ``duty >= 1`` means always open, ``duty == 0`` never.
    Frame ``t`` (int64 ``frames``) ends at ``(t + 1) * hop`` samples, its time is ``t * hop_s``.
    """
    if period_s <= 0.0 or duty >= 1.0:
        return torch.ones(frames.shape[0], dtype=torch.float64)
    if duty <= 0.0:
        return torch.zeros(frames.shape[0], dtype=torch.float64)
    phase = torch.fmod(frames.double() * hop_s, period_s)
    return (phase < duty * period_s).double()


def slew_gate(targets: torch.Tensor, start: float, ramp_frames: int) -> torch.Tensor:
    """Move from ``start`` towards each frame's target by at most ``1 / ramp_frames`` per frame,
    so the gate never switches in one frame (no clicks). Returns ``[n]`` float64 gate values in [0, 1]."""
    step = 1.0 / max(ramp_frames, 1)
    n = targets.shape[0]
    out = torch.empty(n, dtype=torch.float64)
    wanted: List[float] = targets.tolist()
    value = start
    run_start, run_value = 0, start  # one fill per run of equal values, not one op per frame
    for i in range(n):
        value = min(max(wanted[i], value - step), value + step)
        if value != run_value:
            out[run_start:i].fill_(run_value)  # fill_, not `out[i] = v`: scripted, that rounds through float32
            run_start, run_value = i, value
    out[run_start:n].fill_(run_value)
    return out


def region_cells(mask: torch.Tensor, time_stride: int, freq_stride: int, n_rows: int) -> torch.Tensor:
    """Codemap cells that overlap ``mask`` [n_columns * time_stride, n_bins]: bool
    ``[n_columns, n_rows]``, row ``r`` of column ``c`` set when any of the column's frames has
    mask > 0 in bins ``r * freq_stride`` .. ``(r + 1) * freq_stride - 1``."""
    n_frames, n_bins = mask.shape[0], mask.shape[1]
    active = (mask > 0.0).reshape(n_frames // time_stride, time_stride, n_bins).any(dim=1)
    padded = torch.zeros(active.shape[0], n_rows * freq_stride, dtype=torch.bool)
    padded[:, :n_bins] = active
    return padded.reshape(active.shape[0], n_rows, freq_stride).any(dim=2)
