"""Frozen, validated configuration shared by training, export and the engine.

``STFTConfig`` fixes the spectral analysis; ``VQVAEConfig`` the network and quantizer.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

from .errors import ParameterError, non_negative_int, non_negative_number, positive_int, positive_number

WINDOWS = ("hann", "hamming", "blackman")


def _int_tuple(name: str, value: Any, *, minimum: int = 1) -> tuple[int, ...]:
    try:
        out = tuple(int(v) for v in value)
    except TypeError:
        raise ParameterError(f"{name}={value!r} must be a list of integers") from None
    if not out or any(v < minimum for v in out) or any(float(v) != float(w) for v, w in zip(out, value)):
        raise ParameterError(f"{name}={value!r} must be a non-empty list of integers >= {minimum}")
    return out


@dataclass(frozen=True)
class STFTConfig:
    """Spectral analysis of the model.

    Parameters
    ----------
    sr : int > 0
        Sample rate in Hz the model runs at.
    n_fft : int > 0
        FFT size; ``n_fft // 2 + 1`` frequency bins (512 at 48 kHz: 93.75 Hz per bin).
    hop_length : int, 0 < hop_length <= win_length
        Samples between frames (128 = 2.7 ms at 48 kHz).
    win_length : int, hop_length <= win_length <= n_fft
        Analysis window length in samples; sets most of the latency (512 = 10.7 ms at 48 kHz).
    window : {"hann", "hamming", "blackman"}
        Periodic window shape. With ``synthesis_length=0`` it is the analysis and the synthesis
        window; otherwise it shapes the low-delay pair (see below).
    synthesis_length : int, 0 or even with 2 * hop_length <= synthesis_length <= win_length
        0 (the default, as in files made before it existed): the synthesis window is the analysis
        window, and the wet path lags ``win_length - hop_length`` samples behind the analysis.
        Otherwise a low-delay pair (Mauler and Martin, EUSIPCO 2007): the analysis window rises
        over ``win_length - synthesis_length / 2`` samples and falls over the last
        ``synthesis_length / 2``, and the synthesis window covers only the frame's last
        ``synthesis_length`` samples, chosen so that their product is ``window`` of
        ``synthesis_length`` points. Resolution comes from ``win_length`` (1024 at 48 kHz:
        46.9 Hz bins), delay from ``synthesis_length``: the lag is ``synthesis_length -
        hop_length`` (256 - 128 = 2.7 ms at 48 kHz).

    Frames are causal: frame ``t`` covers samples ``[(t + 1) * hop - win, (t + 1) * hop)``
    of the signal (zeros before its start), so a frame is complete as soon as its last hop arrived.
    """

    sr: int = 48000
    n_fft: int = 512
    hop_length: int = 128
    win_length: int = 512
    window: str = "hann"
    synthesis_length: int = 0

    def __post_init__(self) -> None:
        for name in ("sr", "n_fft", "hop_length", "win_length"):  # numpy integers become ints: the config goes to JSON
            object.__setattr__(self, name, positive_int(name, getattr(self, name)))
        if self.n_fft < 16 or self.n_fft % 2:
            raise ParameterError(f"n_fft={self.n_fft} must be an even integer >= 16")
        if not self.hop_length <= self.win_length <= self.n_fft:
            raise ParameterError(
                f"hop_length={self.hop_length}, win_length={self.win_length}, n_fft={self.n_fft} "
                "must satisfy hop_length <= win_length <= n_fft"
            )
        if self.window not in WINDOWS:
            raise ParameterError(f"window={self.window!r} must be one of {', '.join(WINDOWS)}")
        synth = self.synthesis_length
        if not isinstance(synth, int) or isinstance(synth, bool) or synth < 0:
            raise ParameterError(f"synthesis_length={synth!r} must be 0 or a positive even integer")
        if synth and (synth % 2 or not 2 * self.hop_length <= synth <= self.win_length):
            raise ParameterError(
                f"synthesis_length={synth} must be 0 (the analysis window) or even with "
                f"2 * hop_length={2 * self.hop_length} <= synthesis_length <= win_length={self.win_length}"
            )

    @property
    def n_bins(self) -> int:
        return self.n_fft // 2 + 1

    @property
    def synthesis_span(self) -> int:
        """Samples at the end of each frame that synthesis writes: ``synthesis_length``, or
        ``win_length`` for the classic pair. The wet path lags ``synthesis_span - hop_length``."""
        return self.synthesis_length or self.win_length

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "STFTConfig":
        return _from_dict(cls, data)


@dataclass(frozen=True)
class VQVAEConfig:
    """VQ-VAE over log-magnitude spectrograms, causal in time.

    The encoder is a stack of 2D convolutions over (frequency, time); layer ``i`` has
    ``channels[i]`` output channels, kernel ``(freq_kernels[i], time_kernel)`` and stride
    ``(freq_strides[i], time_strides[i])``. The codemap has ``n_rows`` rows, each a band of
    ``freq_stride`` bins by construction (frequency is padded up to ``n_rows * freq_stride``),
    and one column every ``time_stride`` frames. The decoder mirrors it with sub-pixel
    upsampling, so decoded frame ``f`` depends only on codemap columns ``<= f // time_stride``.

    Parameters
    ----------
    channels : list of int
        Encoder channels per layer; the decoder uses them in reverse.
    freq_strides, time_strides : list of int
        Per-layer strides; their products are ``freq_stride`` and ``time_stride``.
    freq_kernels : list of int
        Per-layer kernel size in frequency (>= the layer's stride).
    time_kernel : int
        Kernel size in time of the encoder and codemap-rate decoder convolutions (>= time strides).
    n_res_blocks : int >= 0
        Residual blocks at codemap resolution in encoder and decoder.
    code_dim : int
        Latent channels D of each codemap cell.
    codebook_size : int
        Number of codewords K.
    ema_decay : float in (0, 1)
        Gamma of the EMA codebook update (paper: 0.95).
    commitment_weight : float >= 0
        Beta of the commitment loss.
    restart_threshold : float >= 0
        A code whose EMA usage (expected assignments per batch) falls below this is restarted
        from a random batch vector.
    log_floor : float > 0
        Magnitude floor of the log compression ``log(mag + log_floor)``.
    log_offset, log_scale : float
        Normalisation ``(log(mag + floor) - log_offset) / log_scale`` inside the model.
    """

    stft: STFTConfig = field(default_factory=STFTConfig)
    channels: tuple[int, ...] = (16, 32, 64)
    freq_strides: tuple[int, ...] = (4, 2, 1)
    time_strides: tuple[int, ...] = (1, 2, 2)
    freq_kernels: tuple[int, ...] = (8, 4, 3)
    time_kernel: int = 3
    n_res_blocks: int = 1
    code_dim: int = 32
    codebook_size: int = 256
    ema_decay: float = 0.95
    commitment_weight: float = 0.25
    restart_threshold: float = 0.03
    log_floor: float = 1e-5
    log_offset: float = -4.0
    log_scale: float = 4.0

    def __post_init__(self) -> None:
        if not isinstance(self.stft, STFTConfig):
            raise ParameterError(f"stft={self.stft!r} must be an STFTConfig")
        for name in ("channels", "freq_strides", "time_strides", "freq_kernels"):
            object.__setattr__(self, name, _int_tuple(name, getattr(self, name)))
        n = len(self.channels)
        for name in ("freq_strides", "time_strides", "freq_kernels"):
            if len(getattr(self, name)) != n:
                raise ParameterError(
                    f"{name}={list(getattr(self, name))} must have one entry per layer "
                    f"(channels has {n})"
                )
        for i, (k, s) in enumerate(zip(self.freq_kernels, self.freq_strides)):
            if k < s:
                raise ParameterError(f"freq_kernels[{i}]={k} must be >= freq_strides[{i}]={s}")
        object.__setattr__(self, "time_kernel", positive_int("time_kernel", self.time_kernel))
        if self.time_kernel < max(self.time_strides):
            raise ParameterError(
                f"time_kernel={self.time_kernel} must be >= the largest time stride {max(self.time_strides)}"
            )
        object.__setattr__(self, "n_res_blocks", non_negative_int("n_res_blocks", self.n_res_blocks))
        for name in ("code_dim", "codebook_size"):
            object.__setattr__(self, name, positive_int(name, getattr(self, name)))
        if self.codebook_size < 2:
            raise ParameterError(f"codebook_size={self.codebook_size} must be >= 2")
        if not 0.0 < self.ema_decay < 1.0:
            raise ParameterError(f"ema_decay={self.ema_decay} must be in (0, 1)")
        non_negative_number("commitment_weight", self.commitment_weight)
        non_negative_number("restart_threshold", self.restart_threshold)
        positive_number("log_floor", self.log_floor)
        positive_number("log_scale", self.log_scale)

    @property
    def freq_stride(self) -> int:
        return math.prod(self.freq_strides)

    @property
    def time_stride(self) -> int:
        return math.prod(self.time_strides)

    @property
    def n_rows(self) -> int:
        return -(-self.stft.n_bins // self.freq_stride)

    @property
    def padded_bins(self) -> int:
        return self.n_rows * self.freq_stride

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for key, value in data.items():
            if isinstance(value, tuple):
                data[key] = list(value)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "VQVAEConfig":
        data = dict(data)
        stft = data.pop("stft", {})
        return _from_dict(cls, {**data, "stft": stft if isinstance(stft, STFTConfig) else STFTConfig.from_dict(stft)})


def _from_dict(cls, data: dict[str, Any]):
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ParameterError(
            f"unknown {cls.__name__} keys {unknown}; valid keys are {', '.join(sorted(names))}"
        )
    return cls(**data)
