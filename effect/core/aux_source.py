"""The engine's second input (for `cross`): a second stream encoded into codemap columns in lockstep
with the main input, so column ``c`` of both describes the same moment.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from spectro_fx.models.errors import ParameterError


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
