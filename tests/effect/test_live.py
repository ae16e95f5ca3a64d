"""`spectro-fx` live on the JACK dummy server: MIDI knobs from a python-rtmidi JACK port, a
slowed worker, clean stops on signals, and the JACK server dying under it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from spectro_fx.assets import DEFAULT_MIDI_MAP, DEFAULT_MODEL, asset_path

pytestmark = pytest.mark.jack

SR = 48000

# A JACK client (through PortAudio) that plays white noise at -20 dBFS RMS until SIGINT.
NOISE_SOURCE = """
import signal, sys, threading
import numpy as np
from spectro_fx.effect.audio_io import portaudio
sd = portaudio(jack_client=sys.argv[1])
rng = np.random.default_rng(7)
def callback(outdata, frames, time_info, status):
    outdata[:] = 0.1 * rng.standard_normal(outdata.shape)
stop = threading.Event()
signal.signal(signal.SIGINT, lambda *a: stop.set())
signal.signal(signal.SIGTERM, lambda *a: stop.set())
with sd.OutputStream(samplerate=48000, blocksize=256, channels=2, dtype="float32", callback=callback):
    print("playing", flush=True)
    stop.wait(120)
"""


@pytest.fixture(scope="module")
def live_model(tiny_model_path):
    """The bundled default model when it is there, else the tiny 48 kHz test model."""
    default = asset_path(DEFAULT_MODEL)
    return str(default if default.exists() else tiny_model_path)


def spectro_fx(*args: str, env: dict | None = None, **kw) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "spectro_fx.effect.cli", *args]
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})}, **kw
    )


def wait_for(predicate, *, timeout: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"spectro-fx ended (rc {proc.returncode}) before {what}: {proc.stderr.read()}")
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def stats_lines(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def jack_ports(env=None) -> list[str]:
    out = subprocess.run(["jack_lsp"], capture_output=True, text=True, env={**os.environ, **(env or {})}).stdout
    return out.splitlines()


def test_cc_from_a_jack_midi_port_moves_the_region(jack_server, live_model, tmp_path):
    import rtmidi

    from spectro_fx.effect.ccmap import load_ccmap

    tag = f"sfxlive{os.getpid()}"
    stats, record = tmp_path / "stats.jsonl", tmp_path / "heard.wav"
    knobs = {b.cc: b for b in load_ccmap(asset_path(DEFAULT_MIDI_MAP)).bindings}
    source = subprocess.Popen([sys.executable, "-c", NOISE_SOURCE, f"{tag}-src"], stdout=subprocess.PIPE, text=True)
    midi_out = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, name=f"{tag}-cc")
    midi_out.open_virtual_port("cc_out")
    proc = spectro_fx(
        "--input", "jack", "--jack-name", tag, "--model", live_model, "--midi-in", f"{tag}-cc:cc_out",
        "--stats-json", str(stats), "--record", str(record), "--duration", "20", "--no-status",
        "--set", "low_hz=3000", "--set", "high_hz=3000",  # start with an empty band
    )
    try:
        assert source.stdout.readline().strip() == "playing"
        wait_for(lambda: f"{tag}:in_1" in jack_ports(), timeout=30, what="the effect's JACK ports", proc=proc)
        for k in range(2):
            subprocess.run(["jack_connect", f"{tag}-src:out_{k}", f"{tag}:in_{k}"], check=True)
        wait_for(lambda: len(stats_lines(stats)) >= 1, timeout=10, what="the first stats line", proc=proc)

        def send(cc, value):
            midi_out.send_message([0xB0, cc, value])
            time.sleep(0.02)

        # region A: 200 Hz .. 2 kHz, then region B: 6 .. 16 kHz (knob 1 = CC 70, knob 2 = CC 71)
        sent = []
        wait_for(lambda: stats_lines(stats)[-1]["stream_s"] >= 2.0, timeout=10, what="2 s of stream", proc=proc)
        for cc, value in ((71, 80), (70, 34)):
            send(cc, value)
            sent.append((knobs[cc].parameter, knobs[cc].value(value)))
        wait_for(lambda: stats_lines(stats)[-1]["stream_s"] >= 10.5, timeout=15, what="10.5 s of stream", proc=proc)
        for cc, value in ((71, 122), (70, 106)):
            send(cc, value)
            sent.append((knobs[cc].parameter, knobs[cc].value(value)))
        wait_for(lambda: stats_lines(stats)[-1]["stream_s"] >= 16.0, timeout=10, what="16 s of stream", proc=proc)
        midi_out.close_port()  # the controller is unplugged: audio goes on with the last values
        del midi_out
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        source.send_signal(signal.SIGINT)
        source.wait(timeout=10)
    assert proc.returncode == 0, err
    assert "Traceback" not in err

    lines = stats_lines(stats)
    events = [e for line in lines for e in line["param_events"]]
    assert [(e["name"], e["value"]) for e in events] == [(n, pytest.approx(v)) for n, v in sent]
    for e in events:
        # the worker applied each change within 50 ms of stream time of its arrival
        assert 0.0 <= e["applied_s"] - e["received_s"] <= 0.05, e
    after = [line for line in lines if line["stream_s"] > events[-1]["received_s"] + 1.0]
    assert after and after[-1]["params"]["low_hz"] == pytest.approx(sent[-1][1])
    assert after[-1]["params"]["high_hz"] == pytest.approx(sent[-2][1])
    assert lines[-1]["midi"]["connected"] is False
    assert lines[-1]["stream_s"] >= 20.0
    assert all(line["latency_ms"] > 0 and line["cpu_s_per_audio_s"] is not None for line in lines[1:])

    heard, sr = sf.read(record)
    assert sr == SR and len(heard) == pytest.approx(20 * SR, abs=SR // 10)
    assert np.isfinite(heard).all()

    def band_levels(start_s, end_s):
        from scipy.signal import welch

        f, p = welch(heard[int(start_s * SR) : int(end_s * SR), 0], fs=SR, nperseg=2048)
        level = lambda lo, hi: 10 * np.log10(p[(f >= lo) & (f < hi)].mean())
        return np.array([level(300, 1700), level(2500, 5000), level(7000, 15000)])

    region_a, region_b = band_levels(4, 10), band_levels(12.5, 16)
    change = region_b - region_a
    # the band that was regenerated in A and is dry in B changes, so does the one regenerated
    # in B only; the band regenerated in neither stays as it was
    assert abs(change[0]) > 3 * abs(change[1]) + 1.0, change
    assert abs(change[2]) > 3 * abs(change[1]) + 1.0, change
    assert abs(change[1]) < 1.0, change
