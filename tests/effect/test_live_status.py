"""The live status: one JSON line per second with derived figures, and the terminal line."""

import io
import json

from spectro_fx.effect.io.status import STATS_FIELDS, LiveReport, dbfs, rss_bytes


def test_stats_lines_and_terminal_line(tmp_path):
    state = {"frames": 0}

    def snapshot():
        state["frames"] += 4800
        return {
            "stream_s": state["frames"] / 48000, "frames": state["frames"], "callbacks": 1, "underruns": 2,
            "underrun_frames": 512, "xruns": 0, "latency_ms": 31.5, "in_peak_dbfs": -12.0, "out_peak_dbfs": -13.0,
            "params": {"low_hz": 500.0, "high_hz": 4000.0, "period_s": 0.0, "duty": 0.5, "wet": 1.0},
            "midi": {"connected": True}, "loads": [0.1, 0.2, 0.3, 0.9], "events": [{"name": "wet", "value": 1.0}],
        }

    terminal = io.StringIO()
    path = tmp_path / "stats.jsonl"
    report = LiveReport(snapshot, stats_path=path, terminal=terminal)
    assert report.tick() is None  # the first call starts the clock
    report.last_line -= 1.0
    record = report.tick()
    assert record is not None
    assert record["engine_load_p50"] == 0.25 and 0.88 < record["engine_load_p99"] <= 0.9
    assert record["cpu_s_per_audio_s"] >= 0 and record["rss_mb"] > 1
    assert record["param_events"] == [{"name": "wet", "value": 1.0}] * 2
    report.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == 2 and lines[1]["param_events"] == [{"name": "wet", "value": 1.0}]
    assert set(lines[0]) - {"monotonic", "stream_now_s", "latency"} <= set(STATS_FIELDS) | {"xrun_flags"}
    shown = terminal.getvalue()
    assert "region 500-4000 Hz" in shown and "underruns 2" in shown and "midi ok" in shown
    assert shown.startswith("\x1b[?25l") and shown.endswith("\x1b[?25h")  # the cursor comes back


def test_helpers():
    assert dbfs(1.0) == 0.0 and dbfs(0.0) == -120.0
    assert rss_bytes() > 10_000_000
