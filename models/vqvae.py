"""The VQ-VAE over log-magnitude spectrograms: causal 2D convolutional encoder and decoder.

Codemap rows are frequency bands by construction; columns are causal in time.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
import torch.nn.functional as F

from .config import VQVAEConfig
from .errors import ParameterError
from .quantizer import VectorQuantizer


class CausalConv2d(nn.Module):
    """Conv2d over ``[batch, ch, freq, time]``: 'same' padding in frequency, causal in time.

    With time stride ``s`` and kernel ``k >= s`` the input is left-padded by ``k - s`` frames,
    so output column ``c`` depends on input frames ``<= (c + 1) * s - 1`` (the end of its group).
    """

    def __init__(self, c_in: int, c_out: int, *, kernel: tuple[int, int], stride: tuple[int, int] = (1, 1)):
        super().__init__()
        kf, kt = kernel
        sf, st = stride
        self.pad_f = ((kf - sf) // 2, kf - sf - (kf - sf) // 2)
        self.pad_t = kt - st
        self.conv = nn.Conv2d(c_in, c_out, kernel_size=kernel, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (self.pad_t, 0, self.pad_f[0], self.pad_f[1]))
        return self.conv(x)


class ResBlock(nn.Module):
    """Residual block at codemap resolution (causal in time)."""

    def __init__(self, channels: int, *, time_kernel: int):
        super().__init__()
        self.conv1 = CausalConv2d(channels, channels, kernel=(3, time_kernel))
        self.conv2 = CausalConv2d(channels, channels, kernel=(1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.gelu(self.conv1(F.gelu(x))))


class UpBlock(nn.Module):
    """Sub-pixel upsampling by ``(sf, st)``: a causal conv makes ``sf * st`` times the channels,
    which are shuffled into frequency and time. Output frame ``c * st + j`` depends on input
    columns ``<= c`` only."""

    def __init__(self, c_in: int, c_out: int, *, stride: tuple[int, int], freq_kernel: int):
        super().__init__()
        self.sf, self.st = stride
        self.c_out = c_out
        self.conv = CausalConv2d(c_in, c_out * self.sf * self.st, kernel=(freq_kernel, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, f, t = x.shape
        y = self.conv(x).reshape(b, self.c_out, self.sf, self.st, f, t)
        return y.permute(0, 1, 4, 2, 5, 3).reshape(b, self.c_out, f * self.sf, t * self.st)


class Normalizer(nn.Module):
    """Linear magnitude <-> normalised log magnitude; lives in the model so train and engine agree."""

    def __init__(self, *, floor: float, offset: float, scale: float):
        super().__init__()
        self.floor = floor
        self.offset = offset
        self.scale = scale

    def forward(self, mag: torch.Tensor) -> torch.Tensor:
        return (torch.log(mag.clamp_min(0.0) + self.floor) - self.offset) / self.scale

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        return (torch.exp(z * self.scale + self.offset) - self.floor).clamp_min(0.0)


class Encoder(nn.Module):
    """``[batch, 1, padded_bins, frames]`` -> latent ``[batch, code_dim, n_rows, columns]``."""

    def __init__(self, cfg: VQVAEConfig):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 1
        for c, sf, st, kf in zip(cfg.channels, cfg.freq_strides, cfg.time_strides, cfg.freq_kernels):
            layers += [CausalConv2d(c_in, c, kernel=(kf, cfg.time_kernel), stride=(sf, st)), nn.GELU()]
            c_in = c
        layers += [ResBlock(c_in, time_kernel=cfg.time_kernel) for _ in range(cfg.n_res_blocks)]
        layers += [nn.GELU(), CausalConv2d(c_in, cfg.code_dim, kernel=(1, 1))]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Decoder(nn.Module):
    """Latent ``[batch, code_dim, n_rows, columns]`` -> ``[batch, 1, padded_bins, frames]``.

    ``trunk`` works at codemap rate (all the time context); ``head`` upsamples each column
    on its own and its last conv reaches one column back, so a stream can run the head on
    just the newest columns plus one.
    """

    def __init__(self, cfg: VQVAEConfig):
        super().__init__()
        channels = list(cfg.channels)
        trunk: list[nn.Module] = [CausalConv2d(cfg.code_dim, channels[-1], kernel=(3, cfg.time_kernel))]
        trunk += [ResBlock(channels[-1], time_kernel=cfg.time_kernel) for _ in range(cfg.n_res_blocks)]
        head: list[nn.Module] = []
        outs = channels[-2::-1] + [channels[0]]
        c_in = channels[-1]
        for c, sf, st, kf in zip(outs, cfg.freq_strides[::-1], cfg.time_strides[::-1], cfg.freq_kernels[::-1]):
            head += [nn.GELU(), UpBlock(c_in, c, stride=(sf, st), freq_kernel=min(kf, 3))]
            c_in = c
        head += [nn.GELU(), CausalConv2d(c_in, 1, kernel=(3, 3))]
        self.trunk = nn.Sequential(*trunk)
        self.head = nn.Sequential(*head)

    def forward(self, latent: torch.Tensor, last_columns: int = 0) -> torch.Tensor:
        """Decode; with ``last_columns > 0`` only the frames of the last ``last_columns``
        columns are computed (exactly as in a full decode)."""
        h = self.trunk(latent)
        if last_columns > 0:
            stride = h.shape[3]
            h = h[:, :, :, max(0, stride - last_columns - 1) :]
            out = self.head(h)
            frames_per_column = out.shape[3] // h.shape[3]
            return out[:, :, :, out.shape[3] - last_columns * frames_per_column :]
        return self.head(h)


class VQVAEOutput(NamedTuple):
    target: torch.Tensor  # [batch, n_bins, frames] normalised log magnitude of the input
    reconstruction: torch.Tensor  # [batch, n_bins, frames] normalised log magnitude decoded
    codes: torch.Tensor  # [batch, n_rows, columns]
    commitment_loss: torch.Tensor
    perplexity: torch.Tensor


class VQVAE(nn.Module):
    """The trainable model. ``forward`` works on linear magnitudes ``[batch, n_bins, frames]``
    with ``frames`` a multiple of ``cfg.time_stride``."""

    def __init__(self, cfg: VQVAEConfig):
        super().__init__()
        self.cfg = cfg
        self.normalizer = Normalizer(floor=cfg.log_floor, offset=cfg.log_offset, scale=cfg.log_scale)
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.quantizer = VectorQuantizer(
            cfg.codebook_size,
            cfg.code_dim,
            decay=cfg.ema_decay,
            commitment_weight=cfg.commitment_weight,
            restart_threshold=cfg.restart_threshold,
        )

    def check_input(self, mag: torch.Tensor) -> None:
        cfg = self.cfg
        if mag.dim() != 3 or mag.shape[1] != cfg.stft.n_bins:
            raise ParameterError(
                f"mag has shape {tuple(mag.shape)}; expected [batch, {cfg.stft.n_bins}, frames]"
            )
        if mag.shape[2] % cfg.time_stride:
            raise ParameterError(
                f"frames={mag.shape[2]} must be a multiple of time_stride={cfg.time_stride}"
            )

    def features(self, mag: torch.Tensor) -> torch.Tensor:
        """Normalised log magnitude, padded to ``padded_bins`` by repeating the top bin."""
        z = self.normalizer(mag)
        extra = self.cfg.padded_bins - self.cfg.stft.n_bins
        if extra:
            z = torch.cat([z, z[:, -1:, :].expand(-1, extra, -1)], dim=1)
        return z

    def encode_latent(self, mag: torch.Tensor) -> torch.Tensor:
        """Unquantized latent ``[batch, D, n_rows, columns]``."""
        return self.encoder(self.features(mag)[:, None])

    def decode_latent(self, latent: torch.Tensor) -> torch.Tensor:
        """Normalised log magnitude ``[batch, n_bins, frames]`` from a latent."""
        return self.decoder(latent)[:, 0, : self.cfg.stft.n_bins]

    def forward(self, mag: torch.Tensor) -> VQVAEOutput:
        self.check_input(mag)
        latent = self.encode_latent(mag)
        b, d, r, c = latent.shape
        flat = latent.permute(0, 2, 3, 1).reshape(-1, d)
        q = self.quantizer(flat)
        quantized = q.latent.reshape(b, r, c, d).permute(0, 3, 1, 2)
        reconstruction = self.decode_latent(quantized)
        target = self.normalizer(mag)
        return VQVAEOutput(target, reconstruction, q.codes.reshape(b, r, c), q.commitment_loss, q.perplexity)


def receptive_field_frames(cfg: VQVAEConfig) -> int:
    """Input frames that one codemap column depends on (ending at the column's last frame)."""
    field, jump = 1, 1
    for st in cfg.time_strides:
        field += (cfg.time_kernel - 1) * jump
        jump *= st
    field += cfg.n_res_blocks * (cfg.time_kernel - 1) * jump
    return field


def decoder_receptive_field_columns(cfg: VQVAEConfig) -> int:
    """Codemap columns that one decoded frame depends on (ending at the frame's own column)."""
    columns = 1 + (cfg.time_kernel - 1) * (1 + cfg.n_res_blocks)
    # the last 3-frame conv reaches at most one column back
    return columns + 1
