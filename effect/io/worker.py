"""The live engine worker: a thread that runs the engine on captured blocks between the audio
callback's rings, applies queued parameter changes, and chooses its scheduling (realtime below
the callback, or normal).
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from typing import Any

import numpy as np

from spectro_fx.models.errors import ParameterError

from ..core.ring import drain


class Worker(threading.Thread):
    """Runs the engine on blocks from ``bridge.to_worker`` and fills ``bridge.from_worker``.

    Parameter changes queued by the MIDI thread are applied here, between engine calls. When
    the backlog exceeds ``resync_s`` (a stall far beyond the safety margin) the worker skips
    to near the live position and resets the engine; what it skips was played dry already.
    """

    def __init__(
        self,
        engine: Any,
        bridge: Any,
        *,
        params: Any,
        delay_ms: float = 0.0,
        delay_every_s: float = 0.5,
        resync_s: float = 0.3,
        rt_priority: int = 0,
    ) -> None:
        super().__init__(name="spectro-fx-worker", daemon=True)
        self.rt_priority = int(rt_priority)
        self.scheduling = "not started"
        self.scheduled = threading.Event()  # set once the thread has chosen its scheduling
        self.engine = engine
        self.bridge = bridge
        self.params = params
        self.sr = bridge.sr
        self.delay_s = max(float(delay_ms), 0.0) / 1000.0
        self.delay_every = max(int(delay_every_s * self.sr), 1)
        self.resync_frames = max(int(resync_s * self.sr), 4 * (bridge.margin + bridge.blocksize))
        self.warm_frames = 2 * int(engine.latency_samples) + self.sr // 20
        period = float(getattr(engine, "column_period_s", 0.0) or 0.0)
        self.column_frames = max(int(round(period * self.sr)), bridge.blocksize)
        self.max_chunk = 4096
        self.stop_event = threading.Event()
        self.pos = 0  # input frames consumed (= worker output frames produced)
        self.resyncs = 0
        self.error: BaseException | None = None
        self.tap: Any = None  # a ui.ViewTap while --ui runs: the page's copy of each block
        self.loads: deque = deque(maxlen=100_000)
        self.events: deque = deque(maxlen=10_000)
        self._busy = 0.0
        self._busy_frames = 0
        self._since_stall = 0

    def run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # reported by the main thread; audio goes on dry
            self.error = exc

    def _loop(self) -> None:
        ring_in = self.bridge.to_worker
        buf = np.zeros((self.max_chunk, ring_in.channels), np.float32)
        bell = self.bridge.input_bell
        while not self.stop_event.is_set():
            if not self.scheduled.is_set() and self.bridge.callback_scheduling is not None:
                self._choose_scheduling(*self.bridge.callback_scheduling)
            self._apply_params()
            n = ring_in.readable()
            if n == 0:
                # woken by the callback's ring as a block lands (a ring since the check above is
                # kept in the pipe); the timeout only lets it see a stop or a knob with no audio
                bell.wait(IDLE_WAKE_S)
                continue
            if n > self.resync_frames and self._resync():
                continue
            n = min(n, self.max_chunk)
            if self.delay_s:
                n = min(n, self.bridge.blocksize)
            ring_in.read(buf[:n])
            started = time.perf_counter()
            out = self.engine.process(buf[:n])
            if self.delay_s:
                self._since_stall += n
                if self._since_stall >= self.delay_every:
                    self._since_stall = 0
                    time.sleep(self.delay_s)
            self._account(n, time.perf_counter() - started)
            self._write(out)
            if self.tap is not None:  # after the output is handed over; never waits
                self.tap.push(buf[:n], out)
            self.pos += n

    def _choose_scheduling(self, policy: int, priority: int) -> None:
        """Once the audio callback has run: go realtime just below it, or stay normal."""
        wanted, why = worker_priority(self.rt_priority, policy, priority)
        self.scheduling = realtime_thread(wanted) if wanted else f"normal priority ({why})"
        if wanted and why:
            self.scheduling += f" ({why})"
        self.scheduled.set()

    def _write(self, out: np.ndarray) -> None:
        ring = self.bridge.from_worker
        done = 0
        while done < out.shape[0] and not self.stop_event.is_set():
            done += ring.write(out[done:])
            if done < out.shape[0]:
                time.sleep(0.001)

    def _account(self, frames: int, busy: float) -> None:
        """Worker time over audio time, one figure per column of audio."""
        self._busy += busy
        self._busy_frames += frames
        if self._busy_frames >= self.column_frames:
            self.loads.append(self._busy / (self._busy_frames / self.sr))
            self._busy = 0.0
            self._busy_frames = 0

    def _apply_params(self) -> None:
        for name, value, received_s, source in self.params.drain():
            try:
                applied = self.engine.set(name, value)
            except ParameterError as exc:
                self.events.append(
                    {"name": name, "error": str(exc), "received_s": round(received_s, 4), "source": source}
                )
                continue
            now = self.bridge.stream_time_now()
            self.events.append(
                {
                    "name": name,
                    "value": applied,
                    "source": source,  # "midi" (a knob) or "ui" (the browser page)
                    "received_s": round(received_s, 4),  # stream time the change arrived
                    "applied_s": round(now, 4),  # stream time the engine took the value
                    # the frames processed from now on are played `margin` frames after they
                    # were captured, or, if the worker is late (those play dry), from now on
                    "heard_s": round(max((self.pos + self.bridge.margin) / self.sr, now), 4),
                }
            )

    def _resync(self) -> bool:
        """Skip the backlog; returns False when there is nothing worth skipping."""
        ring_in = self.bridge.to_worker
        ring_out = self.bridge.from_worker
        # land `warm_frames` before the callback's read position, so the engine's restart
        # transient falls on frames the callback has already played dry and will skip
        live = ring_in.write_pos
        target = live - self.bridge.margin - self.bridge.blocksize - self.warm_frames
        if target <= self.pos:
            return False
        skip = ring_in.skip(target - self.pos)
        left = skip
        while left > 0 and not self.stop_event.is_set():
            left -= ring_out.advance_write(left)
            if left > 0:
                time.sleep(0.001)
        self.pos += skip
        self.engine.reset()
        self.resyncs += 1
        return True

    def take_loads(self) -> list[float]:
        return [round(load, 4) for load in drain(self.loads)]

    def take_events(self) -> list[dict]:
        return drain(self.events)

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=5)


IDLE_WAKE_S = 0.005
"""Longest the worker waits for a block before it looks at its stop flag and queued knobs again."""


def worker_priority(requested: int, callback_policy: int, callback_priority: int) -> tuple[int, str]:
    """The ``SCHED_FIFO`` priority for the engine worker (0: stay at normal priority) and why.

    A realtime audio server (JACK started with ``-R``, as on a musician's machine) runs its
    clients' audio callbacks under FIFO priority; a worker left at normal priority then
    competes with every other process for the few milliseconds it needs, and blocks play dry.
    A worker above the callback, or realtime while the callback is not, starves the callback
    instead (measured: a FIFO worker beside a non-realtime JACK tripled the underruns). So
    the worker goes realtime only when the callback is, and strictly below it.
    """
    if requested <= 0:
        return 0, "--rt-priority 0"
    if callback_policy not in (getattr(os, "SCHED_FIFO", -1), getattr(os, "SCHED_RR", -1)):
        return 0, "the audio callback runs at normal priority, so the worker does too; a JACK server started with -R makes both realtime"
    if callback_priority <= 1:
        return 0, f"the audio callback's realtime priority {callback_priority} leaves none below it"
    if requested >= callback_priority:
        return callback_priority - 1, f"--rt-priority {requested} lowered below the audio callback's {callback_priority}"
    return requested, ""


def policy_name(scheduling: tuple[int, int] | None) -> str:
    if scheduling is None:
        return "no callback yet"
    policy, priority = scheduling
    for name in ("SCHED_FIFO", "SCHED_RR"):
        if policy == getattr(os, name, None):
            return f"{name} priority {priority}"
    names = {getattr(os, n): n for n in ("SCHED_OTHER", "SCHED_BATCH", "SCHED_IDLE") if hasattr(os, n)}
    return names.get(policy, f"policy {policy}")


def realtime_thread(priority: int) -> str:
    """Put the calling thread under ``SCHED_FIFO`` at ``priority`` >= 1; returns a description
    for the start message. The worker sleeps whenever it has nothing to do, and the kernel's
    realtime throttling keeps 5 % of each second for other tasks anyway. Needs root or an
    ``rtprio`` limit (the ``audio`` group of most Linux audio setups); otherwise the thread
    keeps normal priority and the description says why."""
    if not hasattr(os, "sched_setscheduler"):
        return "normal priority (no realtime scheduling on this system)"
    try:
        # pid 0 is the calling thread on Linux: scheduling policy is per thread
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except OSError as exc:
        return f"normal priority (realtime priority {priority} not permitted: {exc.strerror}; see --rt-priority)"
    return f"realtime (SCHED_FIFO priority {priority})"
