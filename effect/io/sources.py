"""Audio files as streams, and the engine's second source: read a file, fit its channels, bring
it to the stream's rate, loop it; a looped file or the second input channel feeds ``cross``.

One reader for every file the effect plays (offline input, live input, ``--cross-with``).
"""

from __future__ import annotations

import os
import struct
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from spectro_fx.models.errors import ParameterError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aif", ".aiff", ".au")


def read_audio(path: str | os.PathLike, *, option: str | None = None) -> tuple[np.ndarray, int]:
    """Read an audio file as float32 ``[frames, channels]`` and its rate; ParameterError when
    it is missing, unreadable or has no frames (naming ``option``, e.g. ``--cross-with``)."""
    import soundfile as sf

    path = Path(path)
    label = f"{option} {path}" if option else str(path)
    if not path.is_file():
        raise ParameterError(f"{option or 'input file'} {path} does not exist")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise ParameterError(f"{label} is not a readable audio file: {exc}") from None
    if data.shape[0] == 0 or data.shape[1] == 0:
        raise ParameterError(f"{label} has no audio frames")
    promised = wav_header_frames(path)
    if promised is not None and promised > data.shape[0]:
        # libsndfile reads what is there without a word; a copy cut short would play a fraction
        warnings.warn(
            f"{label} is cut short: its header promises {promised} frames ({promised / sr:.2f} s), "
            f"the file holds {data.shape[0]} ({data.shape[0] / sr:.2f} s); using those",
            stacklevel=2,
        )
    return data, int(sr)


def wav_header_frames(path: str | os.PathLike) -> int | None:
    """The frame count a RIFF/WAVE file's header promises (its ``data`` chunk size over the
    ``fmt`` chunk's block align), or None for any other file or a header that does not say
    (RF64, a streamed WAV's placeholder size)."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            block_align = None
            while True:
                chunk = f.read(8)
                if len(chunk) < 8:
                    return None
                name, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
                if name == b"fmt ":
                    fmt = f.read(size + (size & 1))
                    if len(fmt) < 14:
                        return None
                    block_align = struct.unpack("<H", fmt[12:14])[0]
                elif name == b"data":
                    if not block_align or size in (0, 0xFFFFFFFF):
                        return None
                    return size // block_align
                else:
                    f.seek(size + (size & 1), os.SEEK_CUR)
    except OSError:
        return None


def fit_channels(data: np.ndarray, channels: int | None) -> np.ndarray:
    """``data`` ``[frames, c]`` with ``channels`` channels (None: the file's, at most 2): mixed
    down to mono, the first ones kept, or repeated; contiguous."""
    want = channels or min(data.shape[1], 2)
    if data.shape[1] > want:
        data = data.mean(axis=1, keepdims=True) if want == 1 else data[:, :want]
    elif data.shape[1] < want:
        data = np.tile(data, (1, -(-want // data.shape[1])))[:, :want]
    return np.ascontiguousarray(data)


def at_rate(data: np.ndarray, sr: int, target_sr: int) -> np.ndarray:
    """``data`` ``[frames, channels]`` at ``sr`` Hz resampled (soxr) to ``target_sr`` Hz, float32."""
    if sr == target_sr:
        return data
    import soxr

    return soxr.resample(data, sr, target_sr).astype(np.float32)


class LoopedSource:
    """A file played in a loop: :meth:`next` gives the following ``n`` frames, wrapping around,
    whatever the block sizes (offline: the whole length at once; live: block by block).

    Parameters
    ----------
    data : np.ndarray [frames > 0, channels], float32
        The samples at the stream's rate.
    """

    def __init__(self, data: np.ndarray) -> None:
        data = np.asarray(data, dtype=np.float32)
        if data.ndim != 2 or data.shape[0] == 0:
            raise ParameterError(f"a looped source needs [frames > 0, channels] samples, got shape {data.shape}")
        self.data = data
        self.pos = 0

    @classmethod
    def from_file(cls, path: str | os.PathLike, *, sr: int, option: str = "--cross-with") -> "LoopedSource":
        """The file at ``sr`` Hz, its own channels (at most 2), non-finite samples as 0."""
        data, file_sr = read_audio(path, option=option)
        data = fit_channels(data, None)
        data = np.where(np.isfinite(data), data, np.float32(0.0))
        return cls(at_rate(data, file_sr, sr))

    @property
    def channels(self) -> int:
        return self.data.shape[1]

    def next(self, n: int) -> np.ndarray:
        """The next ``n`` frames ``[n, channels]``."""
        total = self.data.shape[0]
        index = (self.pos + np.arange(n)) % total
        self.pos = (self.pos + n) % total
        return self.data[index]


def chain_needs_aux(chain: str | None) -> bool:
    """True when an effect of ``--chain`` takes a second source (``cross``)."""
    from ..core.effects import RENAMED_EFFECTS, available_effects

    registry = available_effects()
    names = [RENAMED_EFFECTS.get(n.strip(), n.strip()) for n in (chain or "none").split(",") if n.strip()]
    return any(getattr(registry.get(name), "needs_aux", False) for name in names)


class AuxEngine:
    """The engine as the live worker sees it when ``cross`` takes a second source.

    ``split`` (the second source on input channel 2): the worker hands over ``[frames, 2]``;
    channel 1 is processed with channel 2 as ``aux`` and the result is played on both.
    ``looped`` (``--cross-with FILE``): every captured channel is processed, the file's next
    frames are the ``aux``. Anything else (``set``, ``reset``, ``latency_samples`` ...) is the
    engine's.
    """

    def __init__(self, engine: Any, *, split: bool = False, looped: LoopedSource | None = None) -> None:
        if split == (looped is not None):
            raise ParameterError("AuxEngine takes its second source from one place: split=True or looped=")
        self.engine = engine
        self.split = split
        self.looped = looped

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    def process(self, block: np.ndarray) -> np.ndarray:
        if self.split:
            out = self.engine.process(block[:, :1], block[:, 1:2])
            return np.repeat(out, block.shape[1], axis=1)
        return self.engine.process(block, self.looped.next(block.shape[0]))
