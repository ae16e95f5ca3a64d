"""Recording what is heard live: a thread drains the bridge's record ring into a temporary file
beside the target and renames it into place when the show ends (nothing half-written).
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from spectro_fx.models.errors import ParameterError

from ..core.ring import FloatRing

RECORD_FORMATS = {".wav": ("WAV", "FLOAT"), ".flac": ("FLAC", "PCM_24"), ".ogg": ("OGG", "VORBIS")}


class Recorder(threading.Thread):
    """Writes what is heard (``bridge.record_ring``) to a temporary file next to ``path``;
    :meth:`finish` drains the ring, closes the file and renames it into place."""

    def __init__(self, path: str | os.PathLike, ring: FloatRing, *, sr: int) -> None:
        super().__init__(name="spectro-fx-recorder", daemon=True)
        import soundfile as sf

        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in RECORD_FORMATS:
            raise ParameterError(f"--record {path}: the name must end in {', '.join(RECORD_FORMATS)}")
        fmt, subtype = RECORD_FORMATS[suffix]
        if not self.path.parent.is_dir():
            raise ParameterError(f"--record {path}: folder {self.path.parent} does not exist")
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".part", dir=self.path.parent)
        os.close(fd)
        self.tmp = Path(tmp)
        self.file = sf.SoundFile(tmp, "w", samplerate=sr, channels=ring.channels, format=fmt, subtype=subtype)
        self.ring = ring
        self.buf = np.zeros((16384, ring.channels), np.float32)
        self.frames = 0
        self.stop_event = threading.Event()
        self.finished = False

    def _drain(self) -> None:
        while True:
            n = self.ring.read(self.buf)
            if n == 0:
                return
            self.file.write(self.buf[:n])
            self.frames += n

    def run(self) -> None:
        last_flush = time.monotonic()
        while not self.stop_event.wait(0.05):
            self._drain()
            if time.monotonic() - last_flush > 1.0:
                self.file.flush()
                last_flush = time.monotonic()

    def finish(self) -> Path:
        """Stop, write the rest, and move the file into place (atomic rename)."""
        if self.finished:
            return self.path
        self.stop_event.set()
        if self.is_alive():
            self.join(timeout=5)
        self._drain()
        self.file.close()
        os.replace(self.tmp, self.path)
        self.finished = True
        return self.path
