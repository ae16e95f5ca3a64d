"""Causal STFT analysis and synthesis shared by training, evaluation and the engine.

Frame ``t`` covers samples ``[(t + 1) * hop - win, (t + 1) * hop)`` (zeros before the start).
"""

from __future__ import annotations

import numpy as np
import scipy.signal
import torch

from .config import STFTConfig
from .errors import ParameterError


def analysis_window(cfg: STFTConfig) -> np.ndarray:
    """Periodic window of ``win_length`` samples, float64, zero-padded on the left to ``n_fft``
    (right-aligned, so a frame ends at its newest sample and adds no latency)."""
    win = scipy.signal.get_window(cfg.window, cfg.win_length, fftbins=True).astype(np.float64)
    return np.pad(win, (cfg.n_fft - cfg.win_length, 0))


def n_frames(n_samples: int, cfg: STFTConfig) -> int:
    """Number of complete causal frames in ``n_samples`` samples."""
    return n_samples // cfg.hop_length


def _frames(y: np.ndarray, cfg: STFTConfig) -> np.ndarray:
    pad = cfg.n_fft - cfg.hop_length
    padded = np.concatenate([np.zeros(y.shape[:-1] + (pad,), dtype=y.dtype), y], axis=-1)
    count = n_frames(y.shape[-1], cfg)
    view = np.lib.stride_tricks.sliding_window_view(padded, cfg.n_fft, axis=-1)
    return view[..., : count * cfg.hop_length : cfg.hop_length, :]


def stft(y: np.ndarray, cfg: STFTConfig) -> np.ndarray:
    """Complex causal STFT.

    Parameters
    ----------
    y : np.ndarray [..., n_samples], real
    cfg : STFTConfig

    Returns
    -------
    np.ndarray [..., n_bins, n_frames], complex128
    """
    y = np.asarray(y, dtype=np.float64)
    if y.ndim < 1:
        raise ParameterError(f"y must have at least one dimension, got shape {y.shape}")
    spec = np.fft.rfft(_frames(y, cfg) * analysis_window(cfg), axis=-1)
    return np.swapaxes(spec, -1, -2)


def istft(spec: np.ndarray, cfg: STFTConfig) -> np.ndarray:
    """Inverse of :func:`stft` by weighted overlap-add with window-square normalisation.

    Returns ``n_frames * hop_length`` samples aligned with the analysed signal; exact
    (to float64 precision) for an unmodified spectrum.
    """
    spec = np.asarray(spec)
    frames = np.fft.irfft(np.swapaxes(spec, -1, -2), n=cfg.n_fft, axis=-1)
    win = analysis_window(cfg)
    count = frames.shape[-2]
    hop, n_fft = cfg.hop_length, cfg.n_fft
    pad = n_fft - hop
    total = pad + count * hop
    out = np.zeros(frames.shape[:-2] + (total,))
    norm = np.zeros(total)
    for t in range(count):
        out[..., t * hop : t * hop + n_fft] += frames[..., t, :] * win
        norm[t * hop : t * hop + n_fft] += win**2
    norm = np.where(norm > 1e-10, norm, 1.0)
    return (out / norm)[..., pad:]


def magnitude(y: torch.Tensor, cfg: STFTConfig) -> torch.Tensor:
    """Linear magnitude of the causal STFT of a batch, in torch (differentiable, any device).

    Parameters
    ----------
    y : torch.Tensor [batch, n_samples]

    Returns
    -------
    torch.Tensor [batch, n_bins, n_samples // hop_length]
    """
    if y.dim() != 2:
        raise ParameterError(f"y must be [batch, n_samples], got shape {tuple(y.shape)}")
    pad = cfg.n_fft - cfg.hop_length
    count = n_frames(y.shape[-1], cfg)
    y = torch.nn.functional.pad(y, (pad, 0))[:, : pad + count * cfg.hop_length]
    window = torch.from_numpy(analysis_window(cfg)).to(y)
    spec = torch.stft(y, cfg.n_fft, cfg.hop_length, window=window, center=False, return_complex=True)
    return spec.abs()
