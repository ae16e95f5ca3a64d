"""Streaming causal STFT and overlap-add iSTFT over blocks of any size, in numpy and in torch.

Frame for frame identical to :func:`spectro_fx.models.spectral.stft` / ``istft`` on the whole signal.
The engine runs the numpy pair (a few times cheaper per call on small blocks); the exported effect
module runs the torch pair (:class:`AnalysisRing`, :class:`OverlapAdd`, scriptable, state in
buffers); the tests hold both to the whole-signal functions.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from spectro_fx.models.config import STFTConfig
from spectro_fx.models.errors import ParameterError
from spectro_fx.models.spectral import analysis_window, overlap_norm, synthesis_window


def _check_block(x: np.ndarray, channels: int, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] != channels:
        raise ParameterError(f"{name} has shape {x.shape}; expected [{channels}, n_samples]")
    return x


class StreamingSTFT:
    """Causal STFT of a sample stream, one frame per completed hop.

    Frame ``t`` covers stream samples ``[(t + 1) * hop - win, (t + 1) * hop)`` with the window
    right-aligned inside ``n_fft`` (zeros before the stream start), exactly as
    :func:`spectro_fx.models.spectral.stft`; it is emitted as soon as sample ``(t + 1) * hop - 1``
    arrives, so the analysis itself adds no delay beyond the window length.

    Parameters
    ----------
    cfg : STFTConfig
    channels : int > 0
    """

    def __init__(self, cfg: STFTConfig, *, channels: int):
        self.cfg = cfg
        self.channels = channels
        self.window = analysis_window(cfg)
        self.reset()

    def reset(self) -> None:
        # the last n_fft - hop samples before the next frame's hop, plus any incomplete hop
        self._buffer = np.zeros((self.channels, self.cfg.n_fft - self.cfg.hop_length))
        self.frames_done = 0

    def push(self, x: np.ndarray) -> np.ndarray:
        """Feed samples, get the frames they complete.

        Parameters
        ----------
        x : np.ndarray [channels, n_samples], real
            Any number of samples, including 0.

        Returns
        -------
        np.ndarray [channels, n_bins, n_new_frames], complex128
        """
        x = _check_block(x, self.channels, "x")
        cfg = self.cfg
        buffer = np.concatenate([self._buffer, x.astype(np.float64, copy=False)], axis=1)
        count = (buffer.shape[1] - (cfg.n_fft - cfg.hop_length)) // cfg.hop_length
        if count <= 0:
            self._buffer = buffer
            return np.zeros((self.channels, cfg.n_bins, 0), dtype=np.complex128)
        view = np.lib.stride_tricks.sliding_window_view(buffer, cfg.n_fft, axis=-1)
        frames = view[:, : count * cfg.hop_length : cfg.hop_length, :]
        spec = np.fft.rfft(frames * self.window, axis=-1)
        self._buffer = buffer[:, count * cfg.hop_length :].copy()
        self.frames_done += count
        return np.swapaxes(spec, -1, -2)


class StreamingISTFT:
    """Overlap-add of STFT frames into samples, as :func:`spectro_fx.models.spectral.istft`.

    Each frame contributes its last ``cfg.synthesis_span`` samples (the whole analysis window
    for the classic pair, ``synthesis_length`` for the low-delay pair) times the synthesis
    window; each pushed frame releases the ``hop`` samples that no later frame overlaps. The
    output stream starts ``pre_roll = synthesis_span - hop`` samples before the analysed signal,
    so output sample ``k`` is signal sample ``k - pre_roll``; drop ``pre_roll`` samples to align.
    Sample ``j`` of the signal is final once frame ``floor((j + synthesis_span) / hop) - 1`` was pushed.

    Parameters
    ----------
    cfg : STFTConfig
    channels : int > 0
    """

    def __init__(self, cfg: STFTConfig, *, channels: int):
        self.cfg = cfg
        self.channels = channels
        self.span = cfg.synthesis_span
        self.window = synthesis_window(cfg)[cfg.n_fft - self.span :]
        self.pre_roll = self.span - cfg.hop_length
        norm = overlap_norm(cfg)
        self._norm = np.where(norm > 1e-10, norm, 1.0)
        self.reset()

    def reset(self) -> None:
        self._acc = np.zeros((self.channels, self.span))

    def push(self, spec: np.ndarray) -> np.ndarray:
        """Feed frames, get ``n_frames * hop`` samples.

        Parameters
        ----------
        spec : np.ndarray [channels, n_bins, n_frames], complex

        Returns
        -------
        np.ndarray [channels, n_frames * hop], float64
        """
        spec = np.asarray(spec)
        if spec.ndim != 3 or spec.shape[0] != self.channels or spec.shape[1] != self.cfg.n_bins:
            raise ParameterError(
                f"spec has shape {spec.shape}; expected [{self.channels}, {self.cfg.n_bins}, n_frames]"
            )
        hop, n_fft, span = self.cfg.hop_length, self.cfg.n_fft, self.span
        count = spec.shape[2]
        out = np.empty((self.channels, count * hop))
        if count == 0:
            return out
        if spec.any():
            frames = np.fft.irfft(np.swapaxes(spec, -1, -2), n=n_fft, axis=-1)[..., n_fft - span :] * self.window
        else:  # silence in (an engine's region switched off): no transforms needed
            frames = np.zeros((self.channels, count, span))
        if span % hop == 0:
            # all frames at once, one hop-long segment of every frame per pass, oldest frame's
            # segment first at every sample: the same additions in the same order as frame by frame
            buf = np.zeros((self.channels, span + count * hop))
            buf[:, :span] = self._acc
            for seg in reversed(range(span // hop)):
                part = frames[:, :, seg * hop : (seg + 1) * hop].reshape(self.channels, count * hop)
                buf[:, seg * hop : seg * hop + count * hop] += part
            out = buf[:, : count * hop]
            self._acc = buf[:, count * hop : count * hop + span].copy()
        else:
            acc = self._acc
            for t in range(count):
                acc += frames[:, t, :]
                out[:, t * hop : (t + 1) * hop] = acc[:, :hop]
                acc = np.concatenate([acc[:, hop:], np.zeros((self.channels, hop))], axis=1)
            self._acc = acc
        return out / np.tile(self._norm, count)


class AnalysisRing(nn.Module):
    """Causal STFT of ``streams`` sample streams, one frame per completed hop (torch, scriptable).

    Frame ``t`` covers stream samples ``[(t + 1) * hop - win, (t + 1) * hop)`` with the window
    right-aligned inside ``n_fft`` (zeros before the stream start), exactly as
    :func:`spectro_fx.models.spectral.stft`; it is emitted as soon as sample ``(t + 1) * hop - 1``
    arrives, so the analysis itself adds no delay beyond the window length.
    """

    def __init__(self, cfg: STFTConfig, streams: int):
        super().__init__()
        self.n_fft = int(cfg.n_fft)
        self.hop = int(cfg.hop_length)
        self.n_bins = int(cfg.n_bins)
        self.register_buffer("window", torch.from_numpy(analysis_window(cfg).copy()))
        # the last n_fft - hop samples before the next frame's hop, plus any incomplete hop
        self.register_buffer("ring", torch.zeros(streams, self.n_fft - self.hop, dtype=torch.float64))
        self.frames_done = 0

    @torch.jit.export
    def reset(self, streams: int) -> None:
        self.ring = torch.zeros(streams, self.n_fft - self.hop, dtype=torch.float64)
        self.frames_done = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Samples ``[streams, n]`` float64 in (any ``n``, 0 included), the frames they
        complete out: ``[streams, n_bins, n_new_frames]`` complex128."""
        ring = torch.cat([self.ring, x], dim=1)
        count = (ring.shape[1] - (self.n_fft - self.hop)) // self.hop
        if count <= 0:
            self.ring = ring
            return torch.zeros(x.shape[0], self.n_bins, 0, dtype=torch.complex128)
        frames = ring.unfold(1, self.n_fft, self.hop)[:, :count]
        self.ring = ring[:, count * self.hop :].clone()
        self.frames_done += count
        return torch.fft.rfft(frames * self.window, dim=-1).transpose(1, 2)


class OverlapAdd(nn.Module):
    """Overlap-add of STFT frames into samples, as :func:`spectro_fx.models.spectral.istft`
    (torch, scriptable).

    Each frame contributes its last ``cfg.synthesis_span`` samples (the whole analysis window
    for the classic pair, ``synthesis_length`` for the low-delay pair) times the synthesis
    window; each pushed frame releases the ``hop`` samples that no later frame overlaps. The
    output stream starts ``pre_roll = synthesis_span - hop`` samples before the analysed signal,
    so output sample ``k`` is signal sample ``k - pre_roll``; drop ``pre_roll`` samples to align.
    """

    def __init__(self, cfg: STFTConfig, streams: int):
        super().__init__()
        self.n_fft = int(cfg.n_fft)
        self.hop = int(cfg.hop_length)
        self.span = int(cfg.synthesis_span)
        self.pre_roll = self.span - self.hop
        self.register_buffer("window", torch.from_numpy(synthesis_window(cfg)[self.n_fft - self.span :].copy()))
        norm = overlap_norm(cfg)
        self.register_buffer("norm", torch.from_numpy(np.where(norm > 1e-10, norm, 1.0)))
        self.register_buffer("overlap", torch.zeros(streams, self.span, dtype=torch.float64))

    @torch.jit.export
    def reset(self, streams: int) -> None:
        self.overlap = torch.zeros(streams, self.span, dtype=torch.float64)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        """Frames ``[streams, n_bins, n_frames]`` complex in, ``[streams, n_frames * hop]``
        float64 samples out."""
        hop, span = self.hop, self.span
        streams, count = spec.shape[0], spec.shape[2]
        out = torch.empty(streams, count * hop, dtype=torch.float64)
        if count == 0:
            return out
        if bool((spec != 0).any()):
            frames = torch.fft.irfft(spec.transpose(1, 2), n=self.n_fft, dim=-1)[:, :, self.n_fft - span :] * self.window
        else:  # silence in (a region switched off): no transforms needed
            frames = torch.zeros(streams, count, span, dtype=torch.float64)
        if span % hop == 0:
            # all frames at once, one hop-long segment of every frame per pass, the oldest
            # frame's segment first at every sample: the additions of the frame-by-frame loop
            buf = torch.zeros(streams, span + count * hop, dtype=torch.float64)
            buf[:, :span] = self.overlap
            for seg in range(span // hop - 1, -1, -1):
                part = frames[:, :, seg * hop : (seg + 1) * hop].reshape(streams, count * hop)
                buf[:, seg * hop : seg * hop + count * hop] += part
            out = buf[:, : count * hop]
            self.overlap = buf[:, count * hop : count * hop + span].clone()
        else:
            acc = self.overlap
            for t in range(count):
                acc = acc + frames[:, t]
                out[:, t * hop : (t + 1) * hop] = acc[:, :hop]
                acc = torch.cat([acc[:, hop:], torch.zeros(streams, hop, dtype=torch.float64)], dim=1)
            self.overlap = acc
        return out / self.norm.repeat(count)[None]
