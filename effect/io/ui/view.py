"""What the page draws: log-frequency spectrogram columns of the input and the output.

The engine's worker copies its blocks into a :class:`ViewTap` (never waiting); the UI thread
turns them into 8-bit columns with :class:`SpectrogramView`.
"""

from __future__ import annotations

import struct

import numpy as np

from spectro_fx.models.errors import ParameterError, positive_int

from ...core.ring import FloatRing

COLUMN_MESSAGE = 1
"""First byte of a binary WebSocket message of spectrogram columns (see :func:`pack_columns`)."""

HEADER = struct.Struct("<BBHHd")  # kind, reserved, n_columns, n_rows, stream time of column 0 (s)


class ViewTap:
    """Input and output blocks from the engine's worker to the UI thread, first channel only.

    The worker calls :meth:`push` after each engine call; it copies into a preallocated ring
    and drops what does not fit (counted in ``dropped``), so a stalled UI thread never makes
    the worker wait. Nothing is copied while ``active`` is False (no page open).

    Parameters
    ----------
    sr : int > 0
        Stream rate, Hz.
    seconds : float > 0
        Ring length (2 s = 96,000 frames at sr=48000).
    """

    def __init__(self, *, sr: int, seconds: float = 2.0) -> None:
        self.sr = positive_int("sr", sr, unit="Hz")
        self.ring = FloatRing(max(int(seconds * sr), 1024), 2)
        self.active = False
        self.dropped = 0
        self.pushed = 0  # frames offered since the start, dropped ones included
        self._pair = np.zeros((4096, 2), np.float32)

    def push(self, block_in: np.ndarray, block_out: np.ndarray) -> None:
        """Offer the worker's input block and its output ``[frames, channels]`` (worker thread)."""
        n = block_in.shape[0]
        if not self.active:
            self.pushed += n
            return
        done = 0
        while done < n:
            k = min(n - done, self._pair.shape[0])
            self._pair[:k, 0] = block_in[done : done + k, 0]
            self._pair[:k, 1] = block_out[done : done + k, 0]
            written = self.ring.write(self._pair[:k])
            self.dropped += k - written
            done += k
        self.pushed += n


class SpectrogramView:
    """Short-time spectra of tapped audio, resampled onto log-spaced frequency rows, as bytes.

    Parameters
    ----------
    sr : int > 0
        Stream rate, Hz.
    n_fft : int > 0
        FFT size (2048 = 43 ms and 23 Hz bins at sr=48000: enough for low notes on a log axis).
    hop : int > 0
        Frames between columns (512 = 10.7 ms at sr=48000, 94 columns/s).
    n_rows : int > 1
        Rows of the picture, log-spaced from ``fmin_hz`` to Nyquist.
    fmin_hz : float > 0
        Lowest frequency shown.
    floor_db : float < 0
        Level drawn as 0; 0 dBFS (a full-scale sine) is drawn as 255.
    """

    def __init__(
        self, *, sr: int, n_fft: int = 2048, hop: int = 512, n_rows: int = 160,
        fmin_hz: float = 30.0, floor_db: float = -100.0,
    ) -> None:
        for name, value in (("sr", sr), ("n_fft", n_fft), ("hop", hop)):
            positive_int(name, value)
        if n_rows < 2:
            raise ParameterError(f"n_rows={n_rows!r} must be at least 2")
        if not 0 < fmin_hz < sr / 2:
            raise ParameterError(f"fmin_hz={fmin_hz!r} must be in (0, {sr / 2:g}) Hz")
        self.sr, self.n_fft, self.hop, self.n_rows = int(sr), int(n_fft), int(hop), int(n_rows)
        self.fmin_hz, self.fmax_hz = float(fmin_hz), sr / 2.0
        self.floor_db = float(floor_db)
        window = np.hanning(self.n_fft).astype(np.float32)
        # a full-scale sine gives |X| = sum(window) / 2 at its bin: that is 0 dBFS
        self.window = window / (window.sum() / 2.0)
        self.row_hz = np.geomspace(self.fmin_hz, self.fmax_hz, self.n_rows)
        # low rows are closer together than FFT bins: they read between two bins (linear
        # interpolation in dB, smooth); high rows span many bins: they take the loudest one
        # (a single bin there would pick noise and draw the treble as stripes)
        position = self.row_hz * self.n_fft / self.sr
        self._row_bin = np.minimum(np.floor(position).astype(np.int64), self.n_fft // 2 - 1)
        self._row_frac = (position - self._row_bin)[None, :, None]
        edges = np.sqrt(position[1:] * position[:-1])  # geometric midpoints between rows
        lo = np.concatenate([[position[0]], edges])
        hi = np.concatenate([edges, [self.n_fft / 2]])
        first, last = np.ceil(lo).astype(np.int64), np.minimum(np.floor(hi).astype(np.int64), self.n_fft // 2)
        self._wide = np.flatnonzero(last - first >= 1)  # rows holding two bins or more
        self._wide_start = first[self._wide]
        self._wide_stop = last[self._wide] + 1
        self._pending = np.zeros((0, 2), np.float32)
        self._buf = np.zeros((16384, 2), np.float32)
        self.columns_done = 0  # columns made since the start; column k starts at k * hop / sr

    def columns(self, ring: FloatRing) -> tuple[np.ndarray, np.ndarray]:
        """Read what ``ring`` holds and return the new columns of input and output as uint8
        ``[n_columns, n_rows]`` each (row 0 is the lowest frequency)."""
        while True:
            n = ring.read(self._buf)
            if n == 0:
                break
            self._pending = np.concatenate([self._pending, self._buf[:n]])
        count = max((self._pending.shape[0] - self.n_fft) // self.hop + 1, 0)
        if count == 0:
            empty = np.zeros((0, self.n_rows), np.uint8)
            return empty, empty
        starts = np.arange(count) * self.hop
        frames = self._pending[starts[:, None] + np.arange(self.n_fft)[None, :]]  # [count, n_fft, 2]
        self._pending = self._pending[count * self.hop :]
        self.columns_done += count
        spectrum = np.abs(np.fft.rfft(frames * self.window[None, :, None], axis=1))  # [count, bins, 2]
        db = 20.0 * np.log10(np.maximum(spectrum, 1e-10))
        rows = db[:, self._row_bin] * (1.0 - self._row_frac) + db[:, self._row_bin + 1] * self._row_frac
        if self._wide.size:  # the loudest bin of each wide row, [start, stop) pairs in one call
            padded = np.concatenate([db, np.full((count, 1, 2), -np.inf)], axis=1)
            pairs = np.stack([self._wide_start, self._wide_stop], axis=1).ravel()
            rows[:, self._wide] = np.maximum.reduceat(padded, pairs, axis=1)[:, ::2]
        scaled = np.clip((rows - self.floor_db) * (255.0 / -self.floor_db), 0, 255).astype(np.uint8)
        return scaled[:, :, 0], scaled[:, :, 1]

    def skip_backlog(self, ring: FloatRing) -> None:
        """Forget what the ring holds (a page opened late wants the present, not the past)."""
        ring.skip(ring.readable())
        self._pending = np.zeros((0, 2), np.float32)

    def pack(self, columns_in: np.ndarray, columns_out: np.ndarray, *, first_column: int) -> bytes:
        """One binary message: :data:`HEADER` then input rows, then output rows (uint8,
        column after column, lowest frequency first)."""
        n = columns_in.shape[0]
        start_s = first_column * self.hop / self.sr
        return HEADER.pack(COLUMN_MESSAGE, 0, n, self.n_rows, start_s) + columns_in.tobytes() + columns_out.tobytes()

    def describe(self) -> dict:
        """The geometry the page needs to draw the columns (JSON-ready)."""
        return {
            "n_rows": self.n_rows, "fmin_hz": self.fmin_hz, "fmax_hz": self.fmax_hz,
            "column_s": self.hop / self.sr, "floor_db": self.floor_db,
        }


def unpack_columns(message: bytes) -> tuple[float, np.ndarray, np.ndarray]:
    """Inverse of :meth:`SpectrogramView.pack`: ``(start_s, in [n, rows], out [n, rows])``."""
    kind, _, n, rows, start_s = HEADER.unpack_from(message)
    if kind != COLUMN_MESSAGE:
        raise ParameterError(f"message kind {kind} is not a column message ({COLUMN_MESSAGE})")
    body = np.frombuffer(message, np.uint8, offset=HEADER.size)
    if body.size != 2 * n * rows:
        raise ParameterError(f"column message holds {body.size} bytes; expected {2 * n * rows}")
    return start_s, body[: n * rows].reshape(n, rows), body[n * rows :].reshape(n, rows)
