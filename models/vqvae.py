"""The VQ-VAE over log-magnitude spectrograms: causal 2D convolutional encoder and decoder.

Codemap rows are frequency bands by construction; columns are causal in time. Every layer also
streams: ``stream(x)`` takes new frames only and keeps its causal context in a buffer of its own
(as cached_conv does), so the exported model file is itself the streaming model.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
import torch.nn.functional as F

from .config import VQVAEConfig
from .errors import ParameterError
from .quantizer import VectorQuantizer


def _empty() -> torch.Tensor:
    return torch.zeros(0)


class CausalConv2d(nn.Module):
    """Conv2d over ``[batch, ch, freq, time]``: 'same' padding in frequency, causal in time.

    With time stride ``s`` and kernel ``k >= s`` the input is left-padded by ``k - s`` frames,
    so output column ``c`` depends on input frames ``<= (c + 1) * s - 1`` (the end of its group).

    ``forward`` runs on a whole signal; ``stream`` on its continuation: it prepends the last
    ``pad_t`` input frames it saw (zeros at the start, as the whole-signal padding) and keeps the
    new last ones in its ``cache`` buffer. Convs with few outputs (the decoder's last layer)
    stream as one 1x1 conv to ``c_out * kf * kt`` maps plus shifted sums, 10-20x faster on one
    CPU core than oneDNN's direct conv for that shape.
    """

    def __init__(self, c_in: int, c_out: int, *, kernel: tuple[int, int], stride: tuple[int, int] = (1, 1)):
        super().__init__()
        kf, kt = kernel
        sf, st = stride
        self.pad_f = ((kf - sf) // 2, kf - sf - (kf - sf) // 2)
        self.pad_t = kt - st
        self.kf, self.kt, self.sf, self.st = kf, kt, sf, st
        self.c_out = c_out
        self.shifted = c_out * kf * kt <= 16 and (sf, st) == (1, 1) and kf * kt > 1
        self.conv = nn.Conv2d(c_in, c_out, kernel_size=kernel, stride=stride)
        # [batch, c_in, freq, pad_t]: the last input frames of the stream; empty = stream start
        self.register_buffer("cache", _empty(), persistent=False)
        # the weights in the layout the stream convolves with (prepare_stream); empty = not prepared
        self.register_buffer("stream_weight", _empty(), persistent=False)

    @torch.no_grad()
    def prepare_stream(self) -> None:
        """Lay the current weights out for ``stream``: tap-major 1x1 kernels for the shifted
        form, channels-last otherwise (oneDNN reorders a plain weight at every call: 38 against
        24 us for a typical layer here). Call after the weights are final (export does)."""
        weight = self.conv.weight.detach()
        if self.shifted:
            self.stream_weight = weight.permute(2, 3, 0, 1).reshape(-1, weight.shape[1], 1, 1).contiguous()
        else:
            self.stream_weight = weight.contiguous(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (self.pad_t, 0, self.pad_f[0], self.pad_f[1]))
        return self.conv(x)

    @torch.jit.export
    def stream(self, x: torch.Tensor) -> torch.Tensor:
        """New input frames ``[B, c_in, F, t]`` -> their outputs ``[B, c_out, F', t // st]``."""
        if self.pad_t > 0:
            cache = self.cache
            if cache.dim() != 4 or cache.shape[0] != x.shape[0] or cache.shape[2] != x.shape[2]:
                cache = x.new_zeros(x.shape[0], x.shape[1], x.shape[2], self.pad_t).contiguous(
                    memory_format=torch.channels_last
                )
            x = torch.cat([cache, x], dim=3)
            self.cache = x[:, :, :, x.shape[3] - self.pad_t :]
        return self.valid(x)

    @torch.jit.export
    def valid(self, x: torch.Tensor) -> torch.Tensor:
        """Convolve frames that already start with ``pad_t`` frames of context (no state)."""
        pad = 0
        if self.pad_f[0] == self.pad_f[1]:
            pad = self.pad_f[0]  # zero padding inside the conv call: one op less
        else:
            x = F.pad(x, (0, 0, self.pad_f[0], self.pad_f[1]))
        weight = self.conv.weight
        prepared = self.stream_weight.numel() > 0
        if self.shifted:
            # [kf * kt * c_out, c_in, 1, 1], tap-major; then one shifted slice per tap
            taps = self.stream_weight if prepared else weight.permute(2, 3, 0, 1).reshape(-1, weight.shape[1], 1, 1)
            maps = F.conv2d(x, taps, padding=[pad, 0])
            h = x.shape[2] + 2 * pad - self.kf + 1
            w = x.shape[3] - self.kt + 1
            out = maps[:, 0 : self.c_out, 0:h, 0:w]
            for k in range(1, self.kf * self.kt):
                i = k // self.kt
                j = k % self.kt
                out = out + maps[:, k * self.c_out : (k + 1) * self.c_out, i : i + h, j : j + w]
            bias = self.conv.bias
            if bias is not None:
                out = out + bias.view(1, -1, 1, 1)
            return out
        return F.conv2d(
            x.contiguous(memory_format=torch.channels_last), self.stream_weight if prepared else weight, self.conv.bias,
            stride=[self.sf, self.st], padding=[pad, 0],
        )

    @torch.jit.export
    def reset_stream(self) -> None:
        self.cache = _empty()


def gelu_any_layout(x: torch.Tensor) -> torch.Tensor:
    """``F.gelu(x)``, through the contiguous view of a large 4-D tensor in channels-last memory
    (the streams' layout), which it returns in the same layout: torch's GELU runs 1.3-3x slower
    on channels-last strides than on contiguous memory for an offline block's tensors; below
    ~64k values (a live column's) the view's two permutes cost more than they save."""
    if x.numel() >= 65536 and x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return F.gelu(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    return F.gelu(x)


class GELU(nn.GELU):
    """``nn.GELU`` that also streams (it has no time context)."""

    @torch.jit.export
    def stream(self, x: torch.Tensor) -> torch.Tensor:
        return gelu_any_layout(x)

    @torch.jit.export
    def reset_stream(self) -> None:
        pass


class ResBlock(nn.Module):
    """Residual block at codemap resolution (causal in time)."""

    def __init__(self, channels: int, *, time_kernel: int):
        super().__init__()
        self.conv1 = CausalConv2d(channels, channels, kernel=(3, time_kernel))
        self.conv2 = CausalConv2d(channels, channels, kernel=(1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.gelu(self.conv1(F.gelu(x))))

    @torch.jit.export
    def stream(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2.stream(gelu_any_layout(self.conv1.stream(gelu_any_layout(x))))

    @torch.jit.export
    def reset_stream(self) -> None:
        self.conv1.reset_stream()
        self.conv2.reset_stream()


class UpBlock(nn.Module):
    """Sub-pixel upsampling by ``(sf, st)``: a causal conv makes ``sf * st`` times the channels,
    which are shuffled into frequency and time. Output frame ``c * st + j`` depends on input
    columns ``<= c`` only (its conv has no time context, so it streams as it runs)."""

    def __init__(self, c_in: int, c_out: int, *, stride: tuple[int, int], freq_kernel: int):
        super().__init__()
        self.sf, self.st = stride
        self.c_out = c_out
        self.conv = CausalConv2d(c_in, c_out * self.sf * self.st, kernel=(freq_kernel, 1))

    def _shuffle(self, y: torch.Tensor) -> torch.Tensor:
        b, f, t = y.shape[0], y.shape[2], y.shape[3]
        y = y.reshape(b, self.c_out, self.sf, self.st, f, t)
        return y.permute(0, 1, 4, 2, 5, 3).reshape(b, self.c_out, f * self.sf, t * self.st)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._shuffle(self.conv(x))

    @torch.jit.export
    def stream(self, x: torch.Tensor) -> torch.Tensor:
        """As ``forward``, with the output in channels-last memory, as the stream's convs take
        it: one copy, where shuffling the conv's channels-last output as ``forward`` does
        costs three (to contiguous, the shuffle, back to channels-last)."""
        y = self.conv.stream(x)
        b, f, t = y.shape[0], y.shape[2], y.shape[3]
        y = y.permute(0, 2, 3, 1).reshape(b, f, t, self.c_out, self.sf, self.st)  # a view for channels-last y
        y = y.permute(0, 1, 4, 2, 5, 3).reshape(b, f * self.sf, t * self.st, self.c_out)
        return y.permute(0, 3, 1, 2)

    @torch.jit.export
    def reset_stream(self) -> None:
        self.conv.reset_stream()


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
            layers += [CausalConv2d(c_in, c, kernel=(kf, cfg.time_kernel), stride=(sf, st)), GELU()]
            c_in = c
        layers += [ResBlock(c_in, time_kernel=cfg.time_kernel) for _ in range(cfg.n_res_blocks)]
        layers += [GELU(), CausalConv2d(c_in, cfg.code_dim, kernel=(1, 1))]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    @torch.jit.export
    def stream(self, x: torch.Tensor) -> torch.Tensor:
        """The frames of new whole columns -> their latent columns (state kept in the layers)."""
        for layer in self.net:
            x = layer.stream(x)
        return x

    @torch.jit.export
    def reset_stream(self) -> None:
        for layer in self.net:
            layer.reset_stream()


class Decoder(nn.Module):
    """Latent ``[batch, code_dim, n_rows, columns]`` -> ``[batch, 1, padded_bins, frames]``.

    ``trunk`` works at codemap rate (all the time context); ``head`` upsamples each column on
    its own (``local``) and then its ``tail`` (a GELU and a 3x3 conv at frame rate) reaches
    ``tail_frames`` frames back. So a stream can run the head on just the cells it needs: the
    rows of the region plus ``row_reach`` on each side, from the first column that holds one.

    The stream fuses the head's last stage (``prepare_stream``): GELU and the tail's projection
    onto its ``kf * kt`` taps act on each value on its own, so they commute with the last
    upsampling's shuffle; the stream projects before the shuffle and moves 9 tap maps instead of
    that layer's channels (the head and tail of an offline block: 1.3x faster in bfloat16, 2x in
    float32).
    """

    def __init__(self, cfg: VQVAEConfig):
        super().__init__()
        channels = list(cfg.channels)
        trunk: list[nn.Module] = [CausalConv2d(cfg.code_dim, channels[-1], kernel=(3, cfg.time_kernel))]
        trunk += [ResBlock(channels[-1], time_kernel=cfg.time_kernel) for _ in range(cfg.n_res_blocks)]
        head: list[nn.Module] = []
        outs = channels[-2::-1] + [channels[0]]
        c_in = channels[-1]
        reach_bins = 0  # how far, in bins, the head carries a row's influence up or down
        for c, sf, st, kf in zip(outs, cfg.freq_strides[::-1], cfg.time_strides[::-1], cfg.freq_kernels[::-1]):
            up = UpBlock(c_in, c, stride=(sf, st), freq_kernel=min(kf, 3))
            head += [GELU(), up]
            c_in = c
            reach_bins = (reach_bins + max(up.conv.pad_f)) * sf
        tail = CausalConv2d(c_in, 1, kernel=(3, 3))
        head += [GELU(), tail]
        self.trunk = nn.Sequential(*trunk)
        self.head = nn.Sequential(*head)
        self.time_stride = cfg.time_stride
        self.freq_stride = cfg.freq_stride
        self.n_local = len(head) - 2  # the head's layers before the tail's GELU
        self.tail_frames = tail.pad_t
        # trunk columns whose head output the tail reaches back into
        self.context_columns = -(-self.tail_frames // self.time_stride)
        self.row_reach = -(-(reach_bins + max(tail.pad_f)) // self.freq_stride)
        self.register_buffer("trunk_cache", _empty(), persistent=False)  # [B, C, rows, <= context_columns]
        # [B, taps, bins of tail_rows, tail_frames]: the tail's tap maps of its last input frames
        self.register_buffer("tail_cache", _empty(), persistent=False)
        self.tail_rows = [0, 0]
        # the fused last stage (prepare_stream); empty = not prepared
        self.up_pad = list(up.conv.pad_f)
        self.up_stride = [up.sf, up.st]
        self.up_channels = up.c_out
        self.tail_pad = list(tail.pad_f)
        self.tail_kernel = [tail.kf, tail.kt]
        self.register_buffer("up_weight", _empty(), persistent=False)  # subpixel-major channels
        self.register_buffer("up_bias", _empty(), persistent=False)
        self.register_buffer("tail_taps", _empty(), persistent=False)  # [kf * kt, c], tap-major

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

    @torch.jit.export
    def stream(self, latent: torch.Tensor, low_row: int, high_row: int, first_column: int) -> torch.Tensor:
        """Latent of new columns ``[B, D, n_rows, k]`` -> ``[B, 1, bins, frames]`` of the rows
        ``low_row - row_reach .. high_row + row_reach`` (clipped; ``bins`` = their rows x
        freq_stride) and of the columns from ``first_column`` on. The trunk always advances;
        the head (most of the cost) runs only on those cells. Returns an empty tensor when
        the rows or columns are empty."""
        h = latent
        for layer in self.trunk:
            h = layer.stream(h)
        k = h.shape[3]
        earlier = self.trunk_cache
        if earlier.dim() != 4 or earlier.shape[0] != h.shape[0]:
            earlier = h[:, :, :, 0:0]
        columns = torch.cat([earlier, h], dim=3)
        self.trunk_cache = columns[:, :, :, max(columns.shape[3] - self.context_columns, 0) :]
        if low_row >= high_row or first_column >= k:
            self.tail_rows = [0, 0]
            return h.new_zeros(0)
        n_rows = h.shape[2]
        r0 = max(low_row - self.row_reach, 0)
        r1 = min(high_row + self.row_reach, n_rows)
        fs = self.freq_stride
        maps = self._tap_maps(h[:, :, r0:r1, first_column:])
        b, taps, bins, frames = maps.shape[0], maps.shape[1], maps.shape[2] * maps.shape[3], maps.shape[4] * maps.shape[5]
        # one zeroed canvas holds the 'same' zero rows, the context frames and the new maps, so
        # the tail reads each tap as one strided view (no pad, no cat of the maps)
        pad0, context_frames = self.tail_pad[0], self.tail_frames
        canvas = maps.new_zeros(b, taps, bins + self.tail_pad[0] + self.tail_pad[1], context_frames + frames)
        rows = canvas.narrow(2, pad0, bins)
        rows.narrow(3, context_frames, frames).view(maps.shape).copy_(maps)
        if context_frames > 0:
            stored = self.tail_rows
            if first_column == 0 and stored[0] <= r0 and r1 <= stored[1] and stored[1] > stored[0]:
                rows.narrow(3, 0, context_frames).copy_(self.tail_cache.narrow(2, (r0 - stored[0]) * fs, bins))
            else:
                # the frames just before first_column, from the trunk columns before it
                # (zeros before the stream start, as the whole-signal padding: their maps are zero)
                at = earlier.shape[3] + first_column
                before = columns[:, :, r0:r1, max(at - self.context_columns, 0) : at]
                if before.shape[3] > 0:
                    computed = self._tap_maps(before)
                    m = computed.shape[4] * computed.shape[5]
                    n = min(m, context_frames)
                    computed = computed.reshape(b, taps, bins, m)
                    rows.narrow(3, context_frames - n, n).copy_(computed.narrow(3, m - n, n))
            self.tail_cache = rows.narrow(3, frames, context_frames)
            self.tail_rows = [r0, r1]
        return self._tail_sum(canvas)

    @torch.no_grad()
    def prepare_stream(self) -> None:
        """Lay out the fused last stage for ``stream``: the last upsampling's conv with its output
        channels subpixel-major (channel ``s * c + j`` is channel ``j`` of subpixel ``s``), so
        that its channels-last output is ``[B, f, t, subpixels, c]`` in memory, and the tail's
        weight as a ``[kf * kt, c]`` matrix. Call after the weights are final (export does)."""
        up = self.head[self.n_local - 1].conv.conv
        c = self.up_channels
        subpixels = self.up_stride[0] * self.up_stride[1]
        w = up.weight.detach()
        self.up_weight = (
            w.reshape(c, subpixels, *w.shape[1:]).transpose(0, 1).reshape(w.shape)
            .contiguous(memory_format=torch.channels_last)
        )
        self.up_bias = up.bias.detach().reshape(c, subpixels).t().reshape(-1).contiguous()
        tail = self.head[-1].conv.weight.detach()  # [1, c, kf, kt]
        self.tail_taps = tail[0].permute(1, 2, 0).reshape(-1, c).contiguous()

    def _tap_maps(self, h: torch.Tensor) -> torch.Tensor:
        """Trunk columns ``[B, C, rows, k]`` -> the tail's tap maps as a view
        ``[B, kf * kt, f, sf, t, st]`` (bin ``f * sf + i``, frame ``t * st + j``; map ``i * kt + j``
        is tap ``(i, j)`` applied to each frame): the head but its last upsampling, then that
        upsampling's conv, GELU and the projection onto the taps per subpixel; the caller's copy
        does the shuffle."""
        if self.up_weight.numel() == 0:
            raise RuntimeError("Decoder.stream needs prepare_stream() first")
        for i, layer in enumerate(self.head):
            if i < self.n_local - 1:
                h = layer.stream(h)
        pad = self.up_pad
        if pad[0] != pad[1]:
            h = F.pad(h, (0, 0, pad[0], pad[1]))
        u = F.conv2d(
            h.contiguous(memory_format=torch.channels_last), self.up_weight, self.up_bias,
            padding=[pad[0] if pad[0] == pad[1] else 0, 0],
        )
        b, f, t = u.shape[0], u.shape[2], u.shape[3]
        sf, st = self.up_stride[0], self.up_stride[1]
        taps = self.tail_taps.shape[0]
        # [B, f, t, subpixels * c]: a view of channels-last u; GELU runs fast on contiguous memory
        v = F.gelu(u.permute(0, 2, 3, 1))
        # taps x values, not values x taps: the product is tap-major as the canvas wants it, and
        # MKL runs this shape (taps << values) 3-4x faster than the transposed one
        maps = torch.mm(self.tail_taps, v.reshape(-1, self.up_channels).t())
        return maps.view(taps, b, f, t, sf, st).permute(1, 0, 2, 4, 3, 5)

    def _tail_sum(self, canvas: torch.Tensor) -> torch.Tensor:
        """Tap maps with their 'same' zero rows and, first, ``kt - 1`` context frames
        ``[B, kf * kt, bins + kf - 1, kt - 1 + frames]`` (contiguous) -> the tail's output
        ``[B, 1, bins, frames]``: one strided view per tap (a slice would cost three ops), the bias."""
        kf, kt = self.tail_kernel[0], self.tail_kernel[1]
        b, rows, width = canvas.shape[0], canvas.shape[2], canvas.shape[3]
        h = rows - kf + 1
        w = width - kt + 1
        size = [b, 1, h, w]
        stride = [canvas.stride(0), canvas.stride(1), width, 1]
        plane = rows * width
        out = canvas.as_strided(size, stride, 0)
        for k in range(1, kf * kt):
            out = out + canvas.as_strided(size, stride, k * plane + (k // kt) * width + k % kt)
        bias = self.head[-1].conv.bias
        if bias is not None:
            out = out + bias.view(1, -1, 1, 1)
        return out

    @torch.jit.export
    def reset_stream(self) -> None:
        for layer in self.trunk:
            layer.reset_stream()
        for layer in self.head:
            layer.reset_stream()
        self.trunk_cache = _empty()
        self.tail_cache = _empty()
        self.tail_rows = [0, 0]


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
