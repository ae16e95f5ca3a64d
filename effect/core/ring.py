"""Preallocated single-producer/single-consumer rings of float32 audio frames, the doorbell
that wakes the ring's reader, and the drain of the deques that carry events between threads.

The live effect passes audio between the PortAudio callback and the worker thread through these.
"""

from __future__ import annotations

import os
import select
import time
import weakref
from collections import deque
from typing import Any

import numpy as np

from spectro_fx.models.errors import positive_int


class FloatRing:
    """A lock-free ring of ``capacity`` frames of ``channels`` float32 samples.

    One thread writes (``write``), one other thread reads (``read``, ``peek``, ``skip``).
    Positions are absolute frame counts held in plain Python ints: the producer alone moves
    ``write_pos`` and the consumer alone moves ``read_pos``, and each publishes its index only
    after its copy is done, so under the GIL neither side ever sees a half-written frame.
    Nothing is allocated after construction: copies go through ``np.copyto`` into the
    preallocated buffer (numpy views of it are the only objects created).

    Parameters
    ----------
    capacity : int > 0
        Frames the ring holds (4096 frames = 85 ms at sr=48000).
    channels : int > 0
        Samples per frame.
    """

    def __init__(self, capacity: int, channels: int) -> None:
        self.capacity = positive_int("capacity", capacity, unit="frames")
        self.channels = positive_int("channels", channels)
        self.buffer = np.zeros((self.capacity, self.channels), dtype=np.float32)
        self.write_pos = 0
        self.read_pos = 0

    def readable(self) -> int:
        """Frames written and not yet consumed."""
        return self.write_pos - self.read_pos

    def writable(self) -> int:
        """Frames that can be written without overwriting unread ones."""
        return self.capacity - (self.write_pos - self.read_pos)

    def write(self, block: np.ndarray) -> int:
        """Append up to ``len(block)`` frames (producer side).

        Parameters
        ----------
        block : np.ndarray [frames, channels]
            Frames to append; converted to float32 on copy.

        Returns
        -------
        int
            Frames written: fewer than ``len(block)`` when the ring is full (the rest is dropped).
        """
        n = min(block.shape[0], self.capacity - (self.write_pos - self.read_pos))
        if n <= 0:
            return 0
        start = self.write_pos % self.capacity
        first = min(n, self.capacity - start)
        np.copyto(self.buffer[start : start + first], block[:first])
        if n > first:
            np.copyto(self.buffer[: n - first], block[first:n])
        self.write_pos += n
        return n

    def advance_write(self, frames: int) -> int:
        """Publish up to ``frames`` frames without writing them (producer side); their content is
        stale. Only for positions the consumer is known to skip. Returns the frames advanced."""
        n = min(frames, self.capacity - (self.write_pos - self.read_pos))
        if n <= 0:
            return 0
        self.write_pos += n
        return n

    def peek(self, out: np.ndarray, *, offset: int = 0) -> int:
        """Copy up to ``len(out)`` frames starting ``offset`` frames after ``read_pos`` into
        ``out`` without consuming them (consumer side). Returns the frames copied."""
        avail = self.write_pos - self.read_pos - offset
        n = min(out.shape[0], avail)
        if n <= 0:
            return 0
        start = (self.read_pos + offset) % self.capacity
        first = min(n, self.capacity - start)
        np.copyto(out[:first], self.buffer[start : start + first])
        if n > first:
            np.copyto(out[first:n], self.buffer[: n - first])
        return n

    def read(self, out: np.ndarray) -> int:
        """Move up to ``len(out)`` frames into ``out`` (consumer side); returns the frames read."""
        n = self.peek(out)
        self.read_pos += n
        return n

    def skip(self, frames: int) -> int:
        """Discard up to ``frames`` unread frames (consumer side); returns the frames discarded."""
        n = min(frames, self.write_pos - self.read_pos)
        if n <= 0:
            return 0
        self.read_pos += n
        return n


def drain(items: deque) -> list[Any]:
    """Everything in ``items``, oldest first, taken without a lock: ``popleft`` is atomic in
    CPython, so a producer thread may keep appending while this runs."""
    out = []
    while True:
        try:
            out.append(items.popleft())
        except IndexError:
            return out


class Doorbell:
    """Wakes one waiting thread from another without a lock: ``ring`` writes a byte to a
    non-blocking pipe (never waits, allocates nothing, so the audio callback may call it) and
    ``wait`` blocks in ``select`` on the pipe's other end until a byte is there or ``timeout_s``
    passes. A ring before the wait is not lost (the byte stays in the pipe); rings that pile
    up while the reader is busy are swallowed by its next wait. The pipe closes with the object.
    """

    def __init__(self) -> None:
        self._read_fd, self._write_fd = os.pipe()
        for fd in (self._read_fd, self._write_fd):
            os.set_blocking(fd, False)
        self._closer = weakref.finalize(self, _close_fds, self._read_fd, self._write_fd)

    def ring(self) -> None:
        if not self._closer.alive:  # closed: its descriptor numbers may belong to another file now
            return
        try:
            os.write(self._write_fd, b"\0")
        except OSError:  # BlockingIOError: full, a wake-up is already waiting
            pass

    def wait(self, timeout_s: float) -> bool:
        """Block until rung or ``timeout_s`` passes; True when rung (False at once when closed)."""
        if not self._closer.alive:
            return False
        try:
            ready, _, _ = select.select([self._read_fd], [], [], timeout_s)
        except (OSError, ValueError):  # closed by another thread meanwhile: wait anyway, never spin
            time.sleep(timeout_s)
            return False
        if not ready:
            return False
        try:
            while os.read(self._read_fd, 4096):
                pass
        except (BlockingIOError, OSError):
            pass
        return True

    def close(self) -> None:
        self._closer()


def _close_fds(*fds: int) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
