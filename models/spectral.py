"""Causal STFT analysis and synthesis shared by training, evaluation and the engine.

Frame ``t`` covers samples ``[(t + 1) * hop - win, (t + 1) * hop)`` (zeros before the start).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from .config import STFTConfig
from .errors import ParameterError


# cosine-sum coefficients of the periodic windows: w[n] = sum_k a_k cos(k (2 pi n / N - pi));
# the second of hann and hamming written 1 - a_0, as scipy computes it, so the windows are its bit for bit
_COSINE_SUMS = {"hann": (0.5, 1 - 0.5), "hamming": (0.54, 1 - 0.54), "blackman": (0.42, 0.5, 0.08)}


def _periodic(shape: str, length: int) -> np.ndarray:
    # periodic windows overlap-add to a constant at hops that divide them: the first `length`
    # points of the symmetric window of `length + 1` (numpy here, not scipy.signal, whose import
    # cost every command a second); clipped because blackman is -1e-17 at its first sample, and
    # its square root is taken below
    if length == 1:
        return np.ones(1)
    phase = np.linspace(-np.pi, np.pi, length + 1)[:length]
    window = np.zeros(length)
    for k, a in enumerate(_COSINE_SUMS[shape]):
        window += a * np.cos(k * phase)
    return np.clip(window, 0.0, None)


@functools.lru_cache(maxsize=16)
def _window_pair(cfg: STFTConfig) -> tuple[np.ndarray, np.ndarray]:
    n_fft, win, span = cfg.n_fft, cfg.win_length, cfg.synthesis_span
    if not cfg.synthesis_length:
        analysis = np.pad(_periodic(cfg.window, win), (n_fft - win, 0))
        analysis.setflags(write=False)
        return analysis, analysis
    # low delay (Mauler and Martin 2007): rise as the square root of a window of 2 * rise points,
    # fall as the square root of the second half of a window of `span` points; the synthesis
    # window then makes the product over the last `span` samples exactly that short window
    half = span // 2
    rise = win - half
    short = _periodic(cfg.window, span)
    analysis = np.zeros(n_fft)
    analysis[n_fft - win : n_fft - half] = np.sqrt(_periodic(cfg.window, 2 * rise)[:rise])
    analysis[n_fft - half :] = np.sqrt(short[half:])
    tail = analysis[n_fft - span :]
    synthesis = np.zeros(n_fft)
    synthesis[n_fft - span :] = np.divide(short, tail, out=np.zeros(span), where=tail > 1e-12)
    analysis.setflags(write=False)
    synthesis.setflags(write=False)
    return analysis, synthesis


def analysis_window(cfg: STFTConfig) -> np.ndarray:
    """Analysis window, float64 ``[n_fft]``, right-aligned (zeros on the left), so a frame ends
    at its newest sample and adds no latency.

    With ``cfg.synthesis_length == 0`` it is the periodic ``cfg.window`` of ``win_length``
    points; otherwise the asymmetric low-delay window (long rise, falling over the last
    ``synthesis_length / 2`` samples). Read-only.
    """
    return _window_pair(cfg)[0]


def synthesis_window(cfg: STFTConfig) -> np.ndarray:
    """Synthesis window, float64 ``[n_fft]``, non-zero only on the last ``cfg.synthesis_span``
    samples; the analysis window itself for the classic pair. Read-only.

    For the low-delay pair, ``analysis * synthesis`` is the periodic ``cfg.window`` of
    ``synthesis_length`` points on the frame's last samples (a Hann of ``2 * hop`` overlap-adds
    to exactly 1).
    """
    return _window_pair(cfg)[1]


def overlap_norm(cfg: STFTConfig) -> np.ndarray:
    """Sum of ``analysis * synthesis`` over every frame overlapping a sample, float64 ``[hop]``,
    by the sample's position in its hop (oldest frame first, as :func:`istft` adds them).
    Dividing the overlap-add by it makes analysis followed by synthesis the identity."""
    hop = cfg.hop_length
    product = analysis_window(cfg) * synthesis_window(cfg)
    start = cfg.n_fft - cfg.synthesis_span
    norm = np.zeros(hop)
    for back in reversed(range(-(-cfg.synthesis_span // hop))):
        idx = start + np.arange(hop) + back * hop
        ok = idx < cfg.n_fft
        norm[ok] += product[idx[ok]]
    return norm


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
    """Inverse of :func:`stft`: overlap-add of the synthesis-windowed frames, divided by the
    summed ``analysis * synthesis`` windows.

    Parameters
    ----------
    spec : np.ndarray [..., n_bins, n_frames], complex
    cfg : STFTConfig

    Returns
    -------
    np.ndarray [..., n_frames * hop_length], float64
        Aligned with the analysed signal; exact (to float64 precision) for an unmodified
        spectrum, except the last ``synthesis_span - hop_length`` samples, which later frames
        would complete.
    """
    spec = np.asarray(spec)
    hop, n_fft, span = cfg.hop_length, cfg.n_fft, cfg.synthesis_span
    frames = np.fft.irfft(np.swapaxes(spec, -1, -2), n=n_fft, axis=-1)[..., n_fft - span :]
    synth = synthesis_window(cfg)[n_fft - span :]
    product = (analysis_window(cfg) * synthesis_window(cfg))[n_fft - span :]
    count = frames.shape[-2]
    pad = span - hop
    total = pad + count * hop
    out = np.zeros(frames.shape[:-2] + (total,))
    norm = np.zeros(total)
    for t in range(count):
        out[..., t * hop : t * hop + span] += frames[..., t, :] * synth
        norm[t * hop : t * hop + span] += product
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
    window = torch.tensor(analysis_window(cfg)).to(y)
    spec = torch.stft(y, cfg.n_fft, cfg.hop_length, window=window, center=False, return_complex=True)
    return spec.abs()
