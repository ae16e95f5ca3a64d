"""What the live effect reports while it runs: a one-line terminal display and JSON stats.

``--stats-json FILE`` gets one JSON object per line, one line per second, for monitoring and tests.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from typing import Any, Callable, TextIO

import numpy as np

STATS_FIELDS = {
    "t": "wall-clock time, Unix seconds",
    "stream_s": "stream time: frames played / sr",
    "frames": "frames played",
    "monotonic": "time.monotonic() (system-wide clock) when the line was taken",
    "stream_now_s": "stream time at that instant (maps another process's monotonic time to stream time)",
    "callbacks": "audio callbacks so far",
    "underruns": "blocks played dry because the worker was late",
    "underrun_frames": "frames of those blocks",
    "xruns": "callbacks PortAudio flagged with an under/overflow",
    "xrun_flags": "per-flag counts (input_underflow, input_overflow, output_underflow, output_overflow)",
    "input_dropped": "captured frames the worker ring had no room for",
    "record_dropped": "played frames the recorder had no room for (a slow disk)",
    "resyncs": "times the worker skipped a backlog to catch up",
    "engine_load_p50": "median worker time over audio time per column in the last second",
    "engine_load_p99": "99th percentile of the same",
    "latency_ms": "input-to-output latency: engine + safety margin + device",
    "latency": "its parts: engine_frames, margin_frames (the recording is the input delayed by their sum), device_ms",
    "cpu_s_per_audio_s": "process CPU seconds per second of audio in the last second",
    "rss_mb": "resident memory, MB",
    "in_peak_dbfs": "peak input level of the last block",
    "out_peak_dbfs": "peak output level of the last block",
    "params": "current target value of every parameter",
    "param_events": "parameter changes since the last line: name, value, source (midi: a knob; ui: the "
    "browser page) and stream times received_s (the change arrived), applied_s (the engine took it), "
    "heard_s (first output frame computed with it)",
    "ui": "the browser page (--ui): url without its token, open pages, messages dropped for slow pages",
    "midi": "MIDI input state: port, connected, messages, ignored",
}


def rss_bytes() -> int:
    """Resident set size of this process in bytes (0 where /proc is unavailable)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def dbfs(peak: float) -> float:
    return round(20.0 * math.log10(max(peak, 1e-6)), 1)


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return round(float(np.percentile(np.asarray(values), q)), 4)


def _format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


class LiveReport:
    """Collects the live figures once per second and shows/writes them.

    Parameters
    ----------
    snapshot : callable () -> dict
        Returns the raw counters: everything in ``STATS_FIELDS`` but the derived ones, plus
        ``loads`` (per-column worker loads since the last call) and ``events``.
    stats_path : str or Path, optional
        Where JSON lines go (appended, flushed each line).
    terminal : TextIO, optional
        Where the one-line display goes (redrawn in place); None for no display.
    """

    def __init__(self, snapshot: Callable[[], dict], *, stats_path=None, terminal: TextIO | None = None) -> None:
        self.snapshot = snapshot
        self.stats_file = open(stats_path, "a", buffering=1) if stats_path else None
        self.terminal = terminal
        self.last_line = 0.0
        self.last_draw = 0.0
        self.last_cpu = time.process_time()
        self.last_stream = 0.0
        self.loads: list[float] = []
        self.events: list[dict] = []
        self.load_p99_max = 0.0
        self.shown_load: float | None = None
        self.lines = 0
        if self.terminal is not None:
            self.terminal.write("\x1b[?25l")  # hide the cursor while the line redraws
            self.terminal.flush()

    def tick(self, *, force: bool = False) -> dict | None:
        """Call often (every ~50 ms); writes a stats line once a second. Returns it if written."""
        now = time.monotonic()
        raw = self.snapshot()
        self.loads.extend(raw.pop("loads", ()))
        self.events.extend(raw.pop("events", ()))
        record = None
        if force or now - self.last_line >= 1.0:
            if self.last_line == 0.0 and not force:
                self.last_line = now
            else:
                self.last_line = now
                record = self._record(raw)
                if self.stats_file is not None:
                    self.stats_file.write(json.dumps(record) + "\n")
                self.lines += 1
        if self.terminal is not None and (now - self.last_draw >= 0.2 or record is not None):
            self.last_draw = now
            self._draw(raw)
        return record

    def _record(self, raw: dict) -> dict:
        cpu = time.process_time()
        stream = raw["stream_s"]
        audio = stream - self.last_stream
        record = {"t": round(time.time(), 3), **raw}
        record["engine_load_p50"] = _percentile(self.loads, 50)
        record["engine_load_p99"] = _percentile(self.loads, 99)
        if record["engine_load_p99"] is not None:
            self.load_p99_max = max(self.load_p99_max, record["engine_load_p99"])
        record["cpu_s_per_audio_s"] = round((cpu - self.last_cpu) / audio, 4) if audio > 0 else None
        record["rss_mb"] = round(rss_bytes() / 1e6, 2)
        record["param_events"] = self.events
        self.last_cpu = cpu
        self.last_stream = stream
        self.loads = []
        self.events = []
        return record

    def _draw(self, raw: dict) -> None:
        params = raw.get("params", {})
        region = f"{params.get('low_hz', 0):.0f}-{params.get('high_hz', 0):.0f} Hz"
        if params.get("period_s"):
            region += f" gate {_format_value(params['period_s'])} s x {_format_value(params.get('duty'))}"
        others = " ".join(
            f"{k} {_format_value(v)}" for k, v in params.items() if k not in ("low_hz", "high_hz", "period_s", "duty")
        )
        if self.loads:
            self.shown_load = self.loads[-1]
        load = f"{100 * self.shown_load:.0f}%" if self.shown_load is not None else "-"
        midi = raw.get("midi") or {}
        midi_state = ""
        if midi:
            midi_state = {True: " | midi ok", False: " | midi port GONE", None: " | midi virtual"}[midi.get("connected")]
        line = (
            f"region {region} {others} | in {raw['in_peak_dbfs']:.0f} out {raw['out_peak_dbfs']:.0f} dBFS"
            f" | load {load} | underruns {raw['underruns']} xruns {raw['xruns']}"
            f" | latency {raw['latency_ms']:.1f} ms{midi_state}"
        )
        width = shutil.get_terminal_size((200, 24)).columns - 1
        self.terminal.write("\r\x1b[2K" + line[:width])
        self.terminal.flush()

    def close(self) -> None:
        """Write a last line and restore the terminal (newline, cursor shown)."""
        try:
            self.tick(force=True)
        finally:
            if self.stats_file is not None:
                self.stats_file.close()
                self.stats_file = None
            if self.terminal is not None:
                self.terminal.write("\r\x1b[2K\x1b[?25h")
                self.terminal.flush()
                self.terminal = None


def terminal_for_status(enabled: bool) -> TextIO | None:
    """stderr when it is a terminal and the display is wanted, else None."""
    if enabled and sys.stderr.isatty():
        return sys.stderr
    return None
