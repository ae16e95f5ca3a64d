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

    def __call__(self, x: torch.Tensor, *, stateless: bool = False) -> torch.Tensor:
        """``stateless``: ``x`` already starts with the ``pad_t`` frames of context; the
        output is ``pad_t`` frames shorter and the state is left alone."""
        if self.pad_t and not stateless:
            if self.state is None:
                self.state = x.new_zeros(x.shape[0], x.shape[1], x.shape[2], self.pad_t)
            x = torch.cat([self.state, x], dim=3)
            self.state = x[:, :, :, x.shape[3] - self.pad_t :]
        pad = 0
        if self.pad_f[0] == self.pad_f[1]:
            pad = self.pad_f[0]  # zero padding inside the conv call: one op less per layer
        else:
            x = F.pad(x, (0, 0, self.pad_f[0], self.pad_f[1]))
        if self.shifted:
            maps = F.conv2d(x, self.taps, padding=(pad, 0))
            h = x.shape[2] + 2 * pad - self.kf + 1
            w = x.shape[3] - self.kt + 1
            out = None
            for i in range(self.kf):
                for j in range(self.kt):
                    k = (i * self.kt + j) * self.c_out
                    tap = maps[:, k : k + self.c_out, i : i + h, j : j + w]
                    out = tap if out is None else out + tap
            return out + self.bias.view(1, -1, 1, 1) if self.bias is not None else out
        out = F.conv2d(
            x.contiguous(memory_format=torch.channels_last), self.weight_cl, self.bias,
            stride=(self.sf, self.st), padding=(pad, 0),
        )
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
        self.time_stride = int(module.time_stride)
        self.freq_stride = int(module.freq_stride)
        self.n_rows = int(module.n_rows)
        self.row_reach = self._split_head()
        self.reset()

    def _split_head(self) -> int | None:
        """Split the decoder head into its column-local part (no time context: each column's
        frames from that column alone) and its frame-rate tail (convs reaching back at most one
        column), and measure how many codemap rows the head reaches in frequency. Returns the
        reach, or None when the head does not have this shape (then it always runs whole)."""
        ups = [i for i, layer in enumerate(self.head) if isinstance(layer, _Up)]
        if not ups:
            return None
        local, tail = self.head[: ups[-1] + 1], self.head[ups[-1] + 1 :]
        for layer in local:
            if isinstance(layer, _Res) or getattr(getattr(layer, "conv", layer), "pad_t", 0):
                return None
        if any(isinstance(layer, (_Res, _Up)) for layer in tail):
            return None
        self.tail_frames = sum(layer.pad_t for layer in tail if isinstance(layer, _Conv))
        if self.tail_frames > self.time_stride:
            return None
        self.head_local, self.head_tail = local, tail
        # perturb one row in the middle of a random trunk output and see which bins move
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            h = self.net.decoder.trunk(torch.randn(1, self.codebook.shape[1], self.n_rows, 2, generator=generator))
        bumped = h.clone()
        row = self.n_rows // 2
        bumped[:, :, row] += 1.0
        with torch.no_grad():
            moved = (self._head_stateless(bumped, context=None) - self._head_stateless(h, context=None)).abs()
        bins = torch.nonzero(moved[0, 0].amax(dim=1) > 0).flatten()
        if bins.numel() == 0:
            return None
        below = row * self.freq_stride - int(bins.min())
        above = int(bins.max()) - ((row + 1) * self.freq_stride - 1)
        return max(-(-below // self.freq_stride), -(-above // self.freq_stride), 0) + 1

    def _head_stateless(self, trunk_out: torch.Tensor, *, context: torch.Tensor | None) -> torch.Tensor:
        """Head on trunk output columns ``[B, C, rows, k]``; ``context``: the tail's input for
        the ``tail_frames`` frames before them (None: zeros, the stream start)."""
        x = trunk_out
        for layer in self.head_local:
            x = layer(x)
        return self._tail(x, context)

    def _tail(self, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        if self.tail_frames:
            if context is None:
                context = x.new_zeros(x.shape[0], x.shape[1], x.shape[2], self.tail_frames)
            x = torch.cat([context, x], dim=3)
        for layer in self.head_tail:
            x = layer(x, stateless=True) if isinstance(layer, _Conv) else layer(x)
        return x

    def reset(self) -> None:
        for layer in self.encoder + self.trunk + self.head:
            layer.reset()
        self._prev_trunk: torch.Tensor | None = None  # trunk output of the last column
        self._tail_context: torch.Tensor | None = None  # tail input, last frames of the last column
        self._tail_rows: tuple[int, int] | None = None  # the row slice that context covers

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
    def decode_latent(
        self, latent: torch.Tensor, *, rows: torch.Tensor | None = None, columns: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Latent of new columns ``[B, D, n_rows, k]`` -> linear magnitude ``[B, n_bins, k * time_stride]``.

        ``rows`` (bool ``[n_rows]``) and ``columns`` (bool ``[k]``) say which cells are wanted
        (None: all). The decoder's time state always advances; its head (most of the cost)
        runs only from the first wanted column on and on the wanted rows plus the head's reach
        in frequency. Bins of unwanted rows and frames of skipped columns are 0.
        """
        x = latent.float()
        for layer in self.trunk:
            x = layer(x)
        k = x.shape[3]
        if self.row_reach is None:
            for layer in self.head:
                x = layer(x)
            return self.net.normalizer.inverse(x[:, 0, : self.n_bins])
        ts, fs = self.time_stride, self.freq_stride
        out = x.new_zeros(x.shape[0], self.n_bins, k * ts)
        wanted_rows = torch.ones(self.n_rows, dtype=torch.bool) if rows is None else rows.to(torch.bool)
        wanted_cols = torch.ones(k, dtype=torch.bool) if columns is None else columns.to(torch.bool)
        previous, self._prev_trunk = self._prev_trunk, x[:, :, :, k - 1 :]
        if not bool(wanted_rows.any()) or not bool(wanted_cols.any()):
            self._tail_context, self._tail_rows = None, None
            return out
        lo = int(torch.nonzero(wanted_rows).min())
        hi = int(torch.nonzero(wanted_rows).max()) + 1
        r0, r1 = max(lo - self.row_reach, 0), min(hi + self.row_reach, self.n_rows)
        j0 = int(torch.nonzero(wanted_cols).min())
        # the tail's frames before column j0, for this row slice
        context = None
        if self.tail_frames:
            stored = self._tail_rows
            if j0 == 0 and stored is not None and stored[0] <= r0 and r1 <= stored[1]:
                b0 = (r0 - stored[0]) * fs
                context = self._tail_context[:, :, b0 : b0 + (r1 - r0) * fs]
            else:
                before = x[:, :, r0:r1, j0 - 1 : j0] if j0 > 0 else (None if previous is None else previous[:, :, r0:r1])
                if before is not None:
                    h = before
                    for layer in self.head_local:
                        h = layer(h)
                    context = h[:, :, :, h.shape[3] - self.tail_frames :]
        h = x[:, :, r0:r1, j0:]
        for layer in self.head_local:
            h = layer(h)
        if self.tail_frames:
            self._tail_context, self._tail_rows = h[:, :, :, h.shape[3] - self.tail_frames :], (r0, r1)
        y = self.net.normalizer.inverse(self._tail(h, context)[:, 0])
        top = min(hi * fs, self.n_bins)
        out[:, lo * fs : top, j0 * ts :] = y[:, (lo - r0) * fs : (lo - r0) * fs + (top - lo * fs)]
        return out
