"""The paper's other codemap transformations as effects: `dropout` (Fig. 7) and `cross` (Fig. 8).

`dropout` silences latent channels inside the region; `cross` (cross-synthesis) takes codes or latents from a second source.
"""

from __future__ import annotations

import warnings
from typing import Any, Optional

import numpy as np
import torch

from spectro_fx.models.errors import ParameterError

from .effects import CodemapContext, Effect, Parameter


class Dropout(Effect):
    """Keep only the first ``channels`` of the latent's ``code_dim`` channels inside the region
    and zero the others (the paper's Figure 7 keeps one). ``channels >= code_dim`` is a no-op."""

    name = "dropout"
    description = "keep only the first `channels` latent channels inside the region (paper Fig. 7)"
    parameters = (
        Parameter("channels", 0, 64, 1, unit="channels", kind="int",
                  help="latent channels kept inside the region (the model has code_dim of them)"),
    )

    def process_latent(self, latent: torch.Tensor, region: torch.Tensor, ctx: CodemapContext) -> torch.Tensor:
        keep = int(self.values["channels"])
        if keep >= latent.shape[1] or not bool(region.any()):
            return latent
        drop = torch.zeros(latent.shape[1], dtype=torch.bool, device=latent.device)
        drop[keep:] = True
        # [code_dim, 1, 1] x [n_rows, n_new] -> [code_dim, n_rows, n_new]
        zero = drop[:, None, None] & region[None].to(latent.device)
        return latent.masked_fill(zero[None], 0.0)


class Cross(Effect):
    """Cross-synthesis: a second source's codes inside the region (the paper's Figure 8).

    ``mode=codes``: each code inside the region is replaced by the second source's code at the
    same cell with probability ``amount``. ``mode=latent``: latents inside the region are
    interpolated, ``(1 - amount) * latent + amount * aux_latent`` (the embedding of ``aux_codes``).

    The engine provides the second source in ``CodemapContext.aux_codes`` (a looped file with
    ``--cross-with``, or the second input channel live); without one the effect warns once and
    passes the codes through. When channel counts differ, the source's first channel serves all.
    (Formerly ``mix``; that name is accepted with a warning until the next release.)
    """

    name = "cross"
    description = "cross-synthesis: take the region's codes from a second source with probability `amount`, or blend latents (paper Fig. 8)"
    needs_aux = True
    parameters = (
        Parameter("amount", 0.0, 1.0, 0.5, unit="probability", smoothing_s=0.05,
                  help="codes: chance that a code comes from the second source; latent: blend weight"),
        Parameter("mode", 0, 1, "codes", kind="choice", choices=("codes", "latent"),
                  help="codes: swap codes at random; latent: interpolate the latents"),
    )

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        self._warned = False

    def _missing(self) -> None:
        if not self._warned:
            warnings.warn("cross: no second source (aux codes) was given; passing the codes through", stacklevel=3)
            self._warned = True

    def process_codes(self, codes: torch.Tensor, region: torch.Tensor, ctx: CodemapContext) -> torch.Tensor:
        if self.values["mode"] != "codes":
            return codes
        amount = float(self.values["amount"])
        if amount <= 0.0 or not bool(region.any()):
            return codes
        if ctx.aux_codes is None:
            self._missing()
            return codes
        aux = ctx.aux_codes.to(codes.device)
        if aux.shape[0] != codes.shape[0]:
            aux = aux[:1]  # channel counts differ: the source's first channel serves all
        aux = aux.expand_as(codes)
        hit = torch.from_numpy(ctx.rng.random(tuple(codes.shape)) < amount).to(codes.device) & region[None]
        return torch.where(hit, aux, codes)

    def process_latent(self, latent: torch.Tensor, region: torch.Tensor, ctx: CodemapContext) -> torch.Tensor:
        if self.values["mode"] != "latent":
            return latent
        amount = float(self.values["amount"])
        if amount <= 0.0 or not bool(region.any()):
            return latent
        if ctx.aux_codes is None:
            self._missing()
            return latent
        aux = ctx.model.embed(ctx.aux_codes).to(latent.device, latent.dtype)
        if aux.shape[0] != latent.shape[0]:
            aux = aux[:1]
        aux = aux.expand_as(latent)
        blended = latent + amount * (aux - latent)
        return torch.where(region[None, None].to(latent.device), blended, latent)


Mix = Cross  # the old class name: entry points of installs made before the rename load it


class AuxSource:
    """The engine's second input (for `cross`), encoded in lockstep with the main input.

    The engine feeds it the same number of samples as its input at every block (before its own
    analysis), so it completes the same STFT frames and codemap columns at the same time; the
    encoder sees the same receptive field as the engine's, so column ``c`` of the second source
    lines up with column ``c`` of the input.

    Parameters
    ----------
    module : torch.jit.ScriptModule
        The model file's module.
    channels : int > 0
        Channels of the second source (1 is shared by all input channels).
    sr : int
        Sample rate of the samples pushed, in Hz; resampled to the model's rate with the same
        soxr settings as the engine's input when they differ.
    resample_quality : str
        soxr quality, as the engine's.
    """

    KEEP_COLUMNS = 64

    def __init__(self, module, *, channels: int, sr: int, resample_quality: str = "HQ"):
        from spectro_fx.models.config import STFTConfig

        self.module = module
        self.channels = int(channels)
        self.sr = int(sr)
        self.resample_quality = resample_quality
        self.stft_config = STFTConfig(
            sr=int(module.sample_rate), n_fft=int(module.n_fft), hop_length=int(module.hop_length),
            win_length=int(module.win_length), window=str(module.window),
            synthesis_length=int(getattr(module, "synthesis_length", 0)),
        )
        self.time_stride = int(module.time_stride)
        rf = int(module.receptive_field_frames)
        self._window_frames = -(-rf // self.time_stride) * self.time_stride
        self.reset()

    def reset(self) -> None:
        import soxr

        from .stft import StreamingSTFT

        self._stft = StreamingSTFT(self.stft_config, channels=self.channels)
        self._resampler = None
        if self.sr != self.stft_config.sr:
            self._resampler = soxr.ResampleStream(
                self.sr, self.stft_config.sr, self.channels, dtype="float64", quality=self.resample_quality
            )
        self._mag = np.zeros((self.channels, self.stft_config.n_bins, 0), dtype=np.float32)
        self._mag_start = 0
        self._frames = 0
        self._columns_done = 0
        self._codes = torch.zeros(self.channels, int(self.module.n_rows), 0, dtype=torch.long)
        self._codes_start = 0

    def push(self, block: np.ndarray) -> None:
        """Feed ``block`` ``[frames, channels]`` (I/O rate) and encode the columns it completes."""
        x = np.asarray(block, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.channels:
            raise ParameterError(f"second source block has shape {x.shape}; expected [frames, {self.channels}]")
        x = np.where(np.isfinite(x), x, 0.0)
        if self._resampler is not None:
            x = self._resampler.resample_chunk(x)
        spec = self._stft.push(x.T)
        if spec.shape[2] == 0:
            return
        self._frames += spec.shape[2]
        self._mag = np.concatenate([self._mag, np.abs(spec).astype(np.float32)], axis=2)
        n_new = self._frames // self.time_stride - self._columns_done
        if n_new <= 0:
            return
        ts = self.time_stride
        c0 = self._columns_done
        end = (c0 + n_new) * ts
        start = max(0, (c0 + 1) * ts - self._window_frames)
        window = self._mag[:, :, start - self._mag_start : end - self._mag_start]
        with torch.no_grad():
            codes = self.module.encode(torch.from_numpy(np.ascontiguousarray(window)))[:, :, -n_new:]
        self._columns_done += n_new
        keep_from = max(0, (self._columns_done + 1) * ts - self._window_frames)
        self._mag = self._mag[:, :, keep_from - self._mag_start :]
        self._mag_start = keep_from
        self._codes = torch.cat([self._codes, codes], dim=2)
        drop = max(self._codes.shape[2] - self.KEEP_COLUMNS, 0)
        self._codes = self._codes[:, :, drop:]
        self._codes_start += drop

    def column(self, index: int) -> Optional[torch.Tensor]:
        """Codes ``[channels, n_rows, 1]`` of column ``index``, or None when not encoded (yet)."""
        at = index - self._codes_start
        if at < 0 or at >= self._codes.shape[2]:
            return None
        return self._codes[:, :, at : at + 1]
