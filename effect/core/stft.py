"""Streaming causal STFT and overlap-add iSTFT over blocks of any size (torch, scriptable, state in buffers).

Frame for frame identical to :func:`spectro_fx.models.spectral.stft` / ``istft`` on the whole signal;
the engine runs them eagerly, the exported effect module scripted.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from spectro_fx.models.config import STFTConfig
from spectro_fx.models.spectral import analysis_window, overlap_norm, synthesis_window


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
        if span % hop == 0 and count > 1:
            # all frames at once, one hop-long segment of every frame per pass, the oldest
            # frame's segment first at every sample: the additions of the frame-by-frame loop
            # (one frame, the live case, takes the loop: fewer ops)
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
