"""The model's encoder and decoder run as cached convolutions: each call computes only new frames.

Same weights and math as the model file; layer kernels picked for speed on one CPU core.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from spectro_fx.models.export import ModelFile
from spectro_fx.models.vqvae import VQVAE, CausalConv2d, ResBlock, UpBlock


class UnsupportedLayer(TypeError):
    """A layer the streaming runner does not know; the engine then recomputes windows instead."""


class _Conv:
    """Streaming :class:`CausalConv2d`: keeps the last ``kernel_t - stride_t`` input frames
    (zeros at the start, as the whole-signal left padding) and convolves them with new frames.

    Convs with few outputs (the decoder's last layer, 1 output channel) run as one 1x1 conv to
    ``c_out * kf * kt`` maps plus shifted sums, 10-20x faster than oneDNN's direct conv there;
    the others run in channels-last layout (several times faster for these shapes).
    """

    def __init__(self, layer: CausalConv2d):
        conv = layer.conv
        self.weight = conv.weight.detach()
        self.bias = conv.bias.detach() if conv.bias is not None else None
        self.c_out, self.c_in, self.kf, self.kt = self.weight.shape
        self.sf, self.st = conv.stride
        self.pad_f = tuple(layer.pad_f)
        self.pad_t = int(layer.pad_t)
        self.shifted = self.c_out * self.kf * self.kt <= 16 and (self.sf, self.st) == (1, 1) and self.kf * self.kt > 1
        if self.shifted:
            # [kf * kt * c_out, c_in, 1, 1], tap-major
            self.taps = self.weight.permute(2, 3, 0, 1).reshape(-1, self.c_in, 1, 1).contiguous()
        else:
            self.weight_cl = self.weight.contiguous(memory_format=torch.channels_last)
        self.state: torch.Tensor | None = None

    def reset(self) -> None:
        self.state = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad_t:
            if self.state is None:
                self.state = x.new_zeros(x.shape[0], x.shape[1], x.shape[2], self.pad_t)
            x = torch.cat([self.state, x], dim=3)
            self.state = x[:, :, :, x.shape[3] - self.pad_t :]
        if self.pad_f != (0, 0):
            x = F.pad(x, (0, 0, self.pad_f[0], self.pad_f[1]))
        if self.shifted:
            maps = F.conv2d(x, self.taps)
            h = x.shape[2] - self.kf + 1
            w = x.shape[3] - self.kt + 1
            out = None
            for i in range(self.kf):
                for j in range(self.kt):
                    k = (i * self.kt + j) * self.c_out
                    tap = maps[:, k : k + self.c_out, i : i + h, j : j + w]
                    out = tap if out is None else out + tap
            return out + self.bias.view(1, -1, 1, 1) if self.bias is not None else out
        out = F.conv2d(x.contiguous(memory_format=torch.channels_last), self.weight_cl, self.bias, stride=(self.sf, self.st))
        return out


class _Gelu:
    def __init__(self, layer: nn.GELU):
        self.approximate = layer.approximate

    def reset(self) -> None:
        pass

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x, approximate=self.approximate)


class _Res:
    def __init__(self, layer: ResBlock):
        self.conv1 = _Conv(layer.conv1)
        self.conv2 = _Conv(layer.conv2)

    def reset(self) -> None:
        self.conv1.reset()
        self.conv2.reset()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.gelu(self.conv1(F.gelu(x))))


class _Up:
    def __init__(self, layer: UpBlock):
        self.sf, self.st, self.c_out = layer.sf, layer.st, layer.c_out
        self.conv = _Conv(layer.conv)

    def reset(self) -> None:
        self.conv.reset()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        b, _, f, t = x.shape
        y = self.conv(x).reshape(b, self.c_out, self.sf, self.st, f, t)
        return y.permute(0, 1, 4, 2, 5, 3).reshape(b, self.c_out, f * self.sf, t * self.st)


def _streams(sequential: nn.Sequential) -> list:
    out = []
    for layer in sequential:
        if isinstance(layer, CausalConv2d):
            out.append(_Conv(layer))
        elif isinstance(layer, nn.GELU):
            out.append(_Gelu(layer))
        elif isinstance(layer, ResBlock):
            out.append(_Res(layer))
        elif isinstance(layer, UpBlock):
            out.append(_Up(layer))
        else:
            raise UnsupportedLayer(f"no streaming version of {type(layer).__name__}")
    return out


class StreamingModel:
    """Encoder and decoder of a model file as cached convolutions.

    ``encode`` takes the frames of whole new columns and returns their codes; ``decode`` takes
    the (processed) latents of new columns and returns their frames. Both keep the causal state
    of every layer, so a stream fed column by column gives what one pass over the whole signal
    gives, at the cost of the new columns only.

    Raises UnsupportedLayer when the model holds a layer it cannot stream.
    """

    def __init__(self, model: ModelFile):
        module = model.module
        net = VQVAE(model.config)
        state = module.state_dict()
        for name in ("encoder", "decoder"):
            part = {k[len(name) + 1 :]: v for k, v in state.items() if k.startswith(name + ".")}
            try:
                getattr(net, name).load_state_dict(part)
            except RuntimeError as exc:
                raise UnsupportedLayer(f"the {name} weights do not fit models.vqvae: {exc}") from None
        net.eval()
        self.net = net
        self.codebook = module.codebook.detach()
        self._codebook_sq = self.codebook.pow(2).sum(1).unsqueeze(0)
        self.n_bins = int(module.n_bins)
        self.encoder = _streams(net.encoder.net)
        self.trunk = _streams(net.decoder.trunk)
        self.head = _streams(net.decoder.head)

    def reset(self) -> None:
        for layer in self.encoder + self.trunk + self.head:
            layer.reset()

    @torch.no_grad()
    def encode_latent(self, mag: torch.Tensor) -> torch.Tensor:
        """``mag`` [B, n_bins, frames of new columns] linear -> latent [B, D, n_rows, new columns]."""
        x = self.net.features(mag.float())[:, None]
        for layer in self.encoder:
            x = layer(x)
        return x

    @torch.no_grad()
    def quantize(self, latent: torch.Tensor) -> torch.Tensor:
        """Nearest codewords, with the model file's distance formula (same ties)."""
        b, d, r, c = latent.shape
        flat = latent.permute(0, 2, 3, 1).reshape(-1, d)
        dist_sq = flat.pow(2).sum(1, keepdim=True) - 2.0 * flat @ self.codebook.t() + self._codebook_sq
        return dist_sq.argmin(dim=1).reshape(b, r, c)

    def encode(self, mag: torch.Tensor) -> torch.Tensor:
        return self.quantize(self.encode_latent(mag))

    @torch.no_grad()
    def decode_latent(self, latent: torch.Tensor) -> torch.Tensor:
        """Latent of new columns [B, D, n_rows, k] -> linear magnitude [B, n_bins, k * time_stride]."""
        x = latent.float()
        for layer in self.trunk + self.head:
            x = layer(x)
        return self.net.normalizer.inverse(x[:, 0, : self.n_bins])
