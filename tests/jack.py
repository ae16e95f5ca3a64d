"""JACK dummy servers and a noise-playing JACK client, for the live tests and the live benchmarks.

One way to start, wait for and stop jackd: SIGINT stops it promptly, SIGTERM was seen to leave it running.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile

SR = 48000
"""The dummy driver's rate, as the live tests and benchmarks play."""

NOISE_PLAYER = """
import signal, sys, threading
import numpy as np
from spectro_fx.effect.io.audio_io import portaudio
sd = portaudio(jack_client=sys.argv[1])
rng = np.random.default_rng(7)
def callback(outdata, frames, time_info, status):
    outdata[:] = 0.1 * rng.standard_normal(outdata.shape)
stop = threading.Event()
signal.signal(signal.SIGINT, lambda *a: stop.set())
signal.signal(signal.SIGTERM, lambda *a: stop.set())
with sd.OutputStream(samplerate=48000, blocksize=256, channels=2, dtype="float32", callback=callback):
    print("playing", flush=True)
    stop.wait(float(sys.argv[2]))
"""
"""A JACK client (through PortAudio) that plays white noise at -20 dBFS RMS until SIGINT or for
at most ``argv[2]`` seconds: ``python -c NOISE_PLAYER CLIENT_NAME SECONDS``; it prints
``playing`` once its port exists."""


class JackServer:
    """``jackd`` with the dummy driver, answering (``jack_wait``) when the constructor returns.

    Parameters
    ----------
    name : str or None
        The server name (``jackd -n``); None: the default server. Clients of a named server
        find it through ``JACK_DEFAULT_SERVER``, set in :attr:`env`.
    period : int > 0
        Frames per JACK period (256 = 5.3 ms at 48 kHz).
    realtime : bool
        ``-R``: the audio thread at FIFO priority (where the user may have it).

    Raises RuntimeError, with jackd's last words, when it does not answer within 10 s.
    """

    def __init__(self, name: str | None = None, *, period: int = 256, realtime: bool = False) -> None:
        self.name = name
        self.env = {**os.environ, **({"JACK_DEFAULT_SERVER": name} if name else {})}
        self._log = tempfile.TemporaryFile()  # a file, not a pipe: a full pipe would stall jackd
        self.proc = subprocess.Popen(
            ["jackd", *(["-n", name] if name else []), "-R" if realtime else "--no-realtime",
             "-d", "dummy", "-r", str(SR), "-p", str(period)],
            stdout=subprocess.DEVNULL, stderr=self._log, env=self.env,
        )
        try:
            ready = subprocess.run(["jack_wait", "-w", "-t", "10"], capture_output=True, env=self.env, timeout=30)
            started = ready.returncode == 0
        except subprocess.TimeoutExpired:
            started = False
        if not started:
            self.kill()
            self._log.seek(0)
            said = self._log.read().decode(errors="replace")[-500:]
            raise RuntimeError(f"jackd {'-n ' + name if name else '(default server)'} -p {period} did not start: {said}")

    def stop(self) -> None:
        """SIGINT, then a kill if it is still there after 10 s."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()

    def kill(self) -> None:
        """SIGKILL: the server dies under its clients (as a crash would)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def __enter__(self) -> "JackServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
