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

from ..jack import NOISE_PLAYER, JackServer

pytestmark = pytest.mark.jack

SR = 48000

@pytest.fixture(scope="module")
def live_model(tiny_model_path):
    """The tiny 48 kHz test model: these tests check the live plumbing (JACK, MIDI, signals, the
    page, the second source), which must not hang on whether this machine's core keeps up with
    the default model (its stereo engine has needed 0.7 to 1.1 CPU s per audio s on the project's
    VM from one day to the next; CI then failed on underruns, not on the plumbing). The bundled
    models play live in test_latency.py and the benchmarks."""
    return str(tiny_model_path)


def spectro_fx(*args: str, env: dict | None = None, **kw) -> subprocess.Popen:
    """``spectro-fx *args`` started; a native crash (a segfault in an audio or MIDI library) prints
    every thread's Python stack on its stderr, which the failing assertion shows."""
    cmd = [sys.executable, "-m", "spectro_fx.effect.io.cli", *args]
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONFAULTHANDLER": "1", **(env or {})}, **kw
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
    # jack_lsp was seen to hang now and then on a busy server: never let it stall the suite
    try:
        out = subprocess.run(
            ["jack_lsp"], capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=5
        ).stdout
    except subprocess.TimeoutExpired:
        return []
    return out.splitlines()


@pytest.mark.slow
def test_cc_from_a_jack_midi_port_moves_the_region(jack_server, live_model, tmp_path):
    import rtmidi

    from spectro_fx.effect.io.ccmap import load_ccmap

    tag = f"sfxlive{os.getpid()}"
    stats, record = tmp_path / "stats.jsonl", tmp_path / "heard.wav"
    knobs = {b.cc: b for b in load_ccmap(asset_path(DEFAULT_MIDI_MAP)).bindings}
    source = subprocess.Popen([sys.executable, "-c", NOISE_PLAYER, f"{tag}-src", "120"], stdout=subprocess.PIPE, text=True)
    midi_out = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, name=f"{tag}-cc")
    midi_out.open_virtual_port("cc_out")
    proc = spectro_fx(
        "--input", "jack", "--jack-name", tag, "--model", live_model, "--midi-in", f"{tag}-cc:cc_out",
        "--stats-json", str(stats), "--record", str(record), "--duration", "20", "--no-status",
        "--set", "low_hz=3000", "--set", "high_hz=3000",  # start with an empty band
        # random codes in the region: whatever the model, the region sounds unlike the input
        "--chain", "noise", "--set", "noise.amount=1",
    )
    try:
        assert source.stdout.readline().strip() == "playing"
        wait_for(lambda: f"{tag}:in_1" in jack_ports(), timeout=30, what="the effect's JACK ports", proc=proc)
        for k in range(2):
            subprocess.run(["jack_connect", f"{tag}-src:out_{k}", f"{tag}:in_{k}"], check=True, timeout=10)
        wait_for(lambda: len(stats_lines(stats)) >= 1, timeout=10, what="the first stats line", proc=proc)

        def send(cc, value):
            # twice: a JACK cycle lost to an xrun on a busy machine drops its MIDI events
            for _ in range(2):
                midi_out.send_message([0xB0, cc, value])
                time.sleep(0.01)

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
    for name, value in sent:
        assert any(e["name"] == name and e["value"] == pytest.approx(value) for e in events), (name, value, events)
    assert all((e["name"], pytest.approx(e["value"])) in sent for e in events), events
    for e in events:
        # taken after it arrived and heard after it was taken (how soon: tests/bench/bench_live.py)
        assert e["applied_s"] >= e["received_s"], e
        assert e["heard_s"] >= e["applied_s"]
    # values are taken in the order they arrived
    received = [e["received_s"] for e in events]
    assert received == sorted(received)
    assert [e["applied_s"] for e in events] == sorted(e["applied_s"] for e in events)
    after = [line for line in lines if line["stream_s"] > events[-1]["received_s"] + 1.0]
    assert after and after[-1]["params"]["low_hz"] == pytest.approx(sent[-1][1])
    assert after[-1]["params"]["high_hz"] == pytest.approx(sent[-2][1])
    assert lines[-1]["midi"]["connected"] is False
    # the test server runs without realtime, so the callback and the worker stay at normal priority
    assert lines[-1]["audio_callback_scheduling"] == "SCHED_OTHER"
    assert lines[-1]["worker_scheduling"].startswith("normal priority (the audio callback runs at normal priority")
    assert lines[-1]["stream_s"] >= 20.0
    assert all(line["latency_ms"] > 0 for line in lines)
    # CPU per audio second is measured whenever audio went by since the line before (the closing line can come
    # right after the last periodic one, with no new audio: it says None rather than dividing by zero)
    for before, line in zip(lines, lines[1:]):
        assert (line["cpu_s_per_audio_s"] is not None) == (line["stream_s"] > before["stream_s"]), (before, line)

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
    dry_share = lines[-1]["underrun_frames"] / lines[-1]["frames"]  # blocks the late worker left dry
    change = np.append(change, dry_share)
    # the band that was regenerated in A and is dry in B changes, so does the one regenerated
    # in B only; the band regenerated in neither stays as it was
    assert abs(change[0]) > 3 * abs(change[1]) + 3.0, change
    assert abs(change[2]) > 3 * abs(change[1]) + 3.0, change
    assert abs(change[1]) < 1.0, change


def _test_signal(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    left = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.1 * np.sin(2 * np.pi * 1500 * t)
    right = 0.3 * np.sin(2 * np.pi * 330 * t) + 0.1 * np.sin(2 * np.pi * 2500 * t)
    return np.stack([left, right], axis=1).astype(np.float32)


@pytest.mark.slow
@pytest.mark.parametrize("wet", ["0", "1"])
def test_a_slowed_worker_falls_back_to_continuous_dry_sound(jack_server, tiny_model_path, tmp_path, wet):
    # the tiny model, not the default: the crossfades need wet stretches between the stalls, and
    # the default's stereo engine has needed 0.7-1.1 CPU s per audio s on this VM, day to day
    src = _test_signal(1.5)
    sf.write(tmp_path / "src.wav", src, SR, subtype="FLOAT")
    stats, record = tmp_path / "stats.jsonl", tmp_path / "heard.wav"
    proc = spectro_fx(
        "--input", str(tmp_path / "src.wav"), "--loop", "--model", str(tiny_model_path), "--set", f"wet={wet}",
        # the region holds the 1.5 and 2.5 kHz partials, the 220/330 Hz ones stay dry
        "--set", "low_hz=1000", "--set", "high_hz=4000",
        "--debug-worker-delay-ms", "40", "--safety-ms", "5", "--duration", "4", "--record", str(record),
        "--stats-json", str(stats), "--no-status", "--jack-name", f"sfxslow{os.getpid()}",
    )
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    last = stats_lines(stats)[-1]
    # a 40 ms stall every 0.5 s of audio is far beyond the safety margin
    assert last["underruns"] >= 7, last
    heard, _ = sf.read(record, dtype="float32")
    assert np.isfinite(heard).all()
    delay = last["latency"]["engine_frames"] + last["latency"]["margin_frames"]
    looped = np.tile(src, (4, 1))[: len(heard) - delay]
    assert not heard[:delay].any()
    if wet == "0":
        # outside any region the engine is an exact delay, so every block, wet or dry, is the
        # source delayed by the same amount: no gap, no jump, no click at the switches
        np.testing.assert_allclose(heard[delay:], looped, atol=1e-6)
    else:
        body = heard[delay:]
        windows = body[: len(body) // 256 * 256].reshape(-1, 256, 2)
        rms = np.sqrt((windows**2).mean(axis=1))
        # no silence gap: the dry partials alone have 0.21 RMS per channel
        assert rms.min() > 0.15, rms.min()
        # click-free: where the output passes between wet and dry (the 2 ms crossfades), its
        # sample-to-sample steps stay within what the wet and the dry signals do on their own
        # (a hard switch jumps by the wet/dry difference, up to 0.2 here)
        steps = np.abs(np.diff(body, axis=0)).max(axis=1)
        dry = np.abs(body - looped).max(axis=1) < 1e-6
        near_dry = np.convolve(dry.astype(float), np.ones(2 * 160 + 1), mode="same") > 0
        transition = (~dry & near_dry)[1:] | (~dry & near_dry)[:-1]
        interior_wet = (~near_dry)[1:] & (~near_dry)[:-1]
        both_dry = dry[1:] & dry[:-1]
        assert transition.any() and interior_wet.any() and both_dry.any()
        own = max(steps[interior_wet].max(), steps[both_dry].max())
        assert steps[transition].max() <= 1.25 * own, (steps[transition].max(), own)


def _run_until_signal(args, *, sig, stats, wait_s=1.5):
    proc = spectro_fx(*args, "--stats-json", str(stats), "--no-status")
    wait_for(lambda: len(stats_lines(stats)) >= 1, timeout=40, what="the first stats line", proc=proc)
    time.sleep(wait_s)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    return proc.returncode, err


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signals_stop_cleanly_with_a_complete_recording(jack_server, live_model, tmp_path, sig):
    import rtmidi

    tag = f"sfxsig{os.getpid()}{int(sig)}"
    src = _test_signal(1.0)
    sf.write(tmp_path / "src.wav", src, SR, subtype="FLOAT")
    stats, record, knobs = tmp_path / "stats.jsonl", tmp_path / "heard.flac", tmp_path / "knobs.toml"
    args = [
        "--input", str(tmp_path / "src.wav"), "--loop", "--model", live_model, "--set", "wet=0",
        "--record", str(record), "--jack-name", tag,
        # learn mode on a virtual port: the knob moved below gets bound to duty
        "--midi-virtual", "knobs", "--learn", "duty", "--midi-map", str(knobs),
    ]
    proc = spectro_fx(*args, "--stats-json", str(stats), "--no-status")
    midi_out = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, name=f"{tag}-ctl")
    try:
        wait_for(lambda: len(stats_lines(stats)) >= 1, timeout=40, what="the first stats line", proc=proc)
        port = wait_for(
            lambda: next((i + 1 for i, p in enumerate(midi_out.get_ports()) if f"{tag}-midi:knobs" in p), 0),
            timeout=10, what="the virtual MIDI port",
        )
        midi_out.open_port(port - 1)
        time.sleep(0.2)
        midi_out.send_message([0xB4, 41, 100])  # channel 5, CC 41
        wait_for(knobs.exists, timeout=5, what="the learnt map")
        for _ in range(2):  # twice: a JACK cycle lost to an xrun drops its MIDI events
            midi_out.send_message([0xB4, 41, 127])
            time.sleep(0.01)
        time.sleep(1.0)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        midi_out.close_port()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert "bound CC 41 on channel 5 to duty" in err
    last = stats_lines(stats)[-1]
    assert last["params"]["duty"] == 1.0
    heard, sr = sf.read(record, dtype="float32")
    # every frame played up to the stop is in the file: the last stats line is written after
    # the stream stopped
    assert len(heard) == last["frames"]
    delay = last["latency"]["engine_frames"] + last["latency"]["margin_frames"]
    looped = np.tile(src, (-(-len(heard) // len(src)), 1))[: len(heard) - delay]
    np.testing.assert_allclose(heard[delay:], looped, atol=2e-5)  # FLAC is 24-bit
    assert [f for f in os.listdir(tmp_path) if f.startswith(".")] == []  # no temp file left


@pytest.mark.slow
def test_killing_jackd_ends_with_one_clear_line_and_an_intact_recording(live_model, tmp_path):
    if shutil.which("jackd") is None:
        pytest.fail("jackd is not installed: apt-get install jackd2")
    # a fixed name: jackd keeps at most 8 servers in its shared registry and only reclaims the
    # entry of a killed one when a server of the same name starts again
    server = "spectro-fx-test-dying"
    env = {"JACK_DEFAULT_SERVER": server}

    jackd = JackServer(server)
    try:
        src = _test_signal(1.0)
        sf.write(tmp_path / "src.wav", src, SR, subtype="FLOAT")
        stats, record = tmp_path / "stats.jsonl", tmp_path / "heard.wav"
        proc = spectro_fx(
            "--input", "jack", "--model", live_model, "--record", str(record), "--stats-json", str(stats),
            "--no-status", "--midi-virtual", env=env,
        )
        wait_for(lambda: len(stats_lines(stats)) >= 2, timeout=40, what="two stats lines", proc=proc)
        jackd.kill()
        _, err = proc.communicate(timeout=30)
    finally:
        jackd.kill()
        jackd.stop()
        # start and stop it cleanly once more: that frees its registry entry
        JackServer(server).stop()
    assert proc.returncode == 1
    assert "Traceback" not in err
    ours = [line for line in err.splitlines() if line.startswith("spectro-fx: error")]
    assert len(ours) == 1 and "the JACK server went away; recording saved to" in ours[0], err
    start_lines = ("spectro-fx live:", "latency ", "MIDI:", "recording to", "engine worker:")
    assert [line for line in err.splitlines()[:-1] if line.strip() and not line.startswith(start_lines)] == [], err
    heard, sr = sf.read(record)
    last = stats_lines(stats)[-1]
    assert sr == SR and len(heard) >= last["frames"] and len(heard) > SR


class _DelayEngine:
    """Input delayed by `latency_samples`: what the worker does is then checkable exactly."""

    latency_samples = 300
    column_period_s = 512 / SR

    def __init__(self):
        self.reset()
        self.set_calls = []

    def reset(self):
        self.line = np.zeros((self.latency_samples, 1), np.float32)

    def process(self, block):
        line = np.concatenate([self.line, block])
        self.line = line[len(block):]
        return line[: len(block)].copy()

    def set(self, name, value):
        self.set_calls.append((name, value))
        return value


@pytest.mark.slow
def test_worker_resyncs_after_a_long_stall_and_the_output_stays_aligned():
    from spectro_fx.effect.io.audio_io import StreamBridge
    from spectro_fx.effect.io.worker import Worker
    from spectro_fx.effect.io.midi import ParameterQueue

    block = 256
    engine = _DelayEngine()
    bridge = StreamBridge(
        sr=SR, channels=1, out_channels=1, blocksize=block, engine_latency=engine.latency_samples,
        margin=block + 96 + 256, fade=96,
    )
    params = ParameterQueue()
    worker = Worker(engine, bridge, params=params, delay_ms=450, delay_every_s=0.6, resync_s=0.3)
    x = np.sin(2 * np.pi * 440 * np.arange(SR * 2) / SR).astype(np.float32)[:, None]
    y = np.zeros_like(x)
    worker.start()
    try:
        params.put("wet", 0.5, 0.0)
        start = time.monotonic()
        for k in range(len(x) // block):
            # callbacks at real-time pace, as PortAudio would call them
            while time.monotonic() < start + k * block / SR:
                time.sleep(0.0005)
            bridge.duplex_callback(x[k * block : (k + 1) * block], y[k * block : (k + 1) * block], block, None, None)
    finally:
        worker.stop()
    assert worker.error is None
    assert worker.resyncs >= 1 and bridge.underruns > 0
    assert engine.set_calls == [("wet", 0.5)]
    delay = engine.latency_samples + bridge.margin
    n = len(x) // block * block
    np.testing.assert_allclose(y[delay:n], x[: n - delay], atol=2e-7)
    # between stalls it caught up and its output was played
    assert bridge.underruns < 0.7 * bridge.callbacks
    assert worker.take_loads()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--input", "no/such/take.wav"], "--input no/such/take.wav: no such file"),
        (["--input", "jack", "--learn", "wet"], "--learn needs a MIDI input"),
        (["--input", "jack", "--midi-virtual", "--learn", "lowhz"], "--learn: unknown parameter 'lowhz'; valid: low_hz"),
        (["--input", "jack", "--midi-virtual", "--midi-map", "{bad}"], r"bad.toml: not valid TOML: .*line 3"),
        (["--input", "jack", "--midi-virtual", "--midi-map", "{unknown}"], "unknown parameter 'wobble'; valid: low_hz"),
        (["--input", "jack", "--safety-ms", "-1"], "--safety-ms=-1"),
        (["--input", "jack", "--rt-priority", "100"], r"--rt-priority=100 must be 0 \(normal priority\) or a SCHED_FIFO priority 1-99"),
        (["--input", "mic", "--automation", "knobs.mid"], "--automation is for rendering a file"),
    ],
)
def test_live_command_line_errors_are_one_line(tmp_path, capsys, argv, message):
    from spectro_fx.effect.io.cli import main

    bad, unknown = tmp_path / "bad.toml", tmp_path / "unknown.toml"
    bad.write_text('[[binding]]\nparameter = "wet"\ncc = = 1\n')
    unknown.write_text('[[binding]]\nparameter = "wobble"\ncc = 1\n')
    argv = [a.format(bad=bad, unknown=unknown) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("spectro-fx: error: ") and len(err.strip().splitlines()) == 1, err
    import re

    assert re.search(message, err), err


def test_worker_realtime_priority_applies_to_its_own_thread_only():
    """The worker's SCHED_FIFO request changes the worker thread's policy (or says why not),
    never the rest of the process."""
    import threading

    from spectro_fx.effect.io.worker import realtime_thread

    seen = []

    def probe():
        said = realtime_thread(3)
        seen.append((said, os.sched_getscheduler(0), os.sched_getparam(0).sched_priority))

    thread = threading.Thread(target=probe)
    thread.start()
    thread.join()
    said, policy, level = seen[0]
    if said.startswith("realtime"):
        assert said == "realtime (SCHED_FIFO priority 3)" and (policy, level) == (os.SCHED_FIFO, 3)
    else:  # no permission here: it says so and the thread keeps its policy
        assert "realtime priority 3 not permitted" in said and policy == os.SCHED_OTHER
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # this (main) thread is untouched


@pytest.mark.slow
def test_on_a_realtime_jack_server_the_worker_runs_realtime_below_the_callback(live_model, tmp_path):
    """jackd -R gives the audio callback FIFO priority; the worker follows it, one step below
    at most (as root or with an rtprio limit; without either, both stay at normal priority)."""
    server = "spectro-fx-test-realtime"  # fixed: see the dying-server test on jackd's registry
    env = {"JACK_DEFAULT_SERVER": server}
    jackd = JackServer(server, realtime=True)
    try:
        stats = tmp_path / "stats.jsonl"
        proc = spectro_fx("--input", "jack", "--model", live_model, "--stats-json", str(stats), "--no-status",
                          "--duration", "2", "--jack-name", f"sfxrt{os.getpid()}", env=env)
        _, err = proc.communicate(timeout=120)
    finally:
        jackd.stop()
    assert proc.returncode == 0, err
    last = stats_lines(stats)[-1]
    callback, worker = last["audio_callback_scheduling"], last["worker_scheduling"]
    assert f"engine worker: {worker}" in err
    if callback.startswith("SCHED_FIFO"):
        assert int(callback.split()[-1]) > 1 and worker == "realtime (SCHED_FIFO priority 1)", (callback, worker)
    else:  # jackd could not go realtime here
        assert callback == "SCHED_OTHER" and worker.startswith("normal priority (the audio callback"), (callback, worker)


@pytest.mark.parametrize(
    "requested, policy, priority, wanted, why",
    [
        (1, "SCHED_FIFO", 5, 1, ""),
        (4, "SCHED_RR", 5, 4, ""),
        (10, "SCHED_FIFO", 5, 4, "lowered below the audio callback's 5"),
        (1, "SCHED_FIFO", 1, 0, "leaves none below it"),
        (1, "SCHED_OTHER", 0, 0, "audio callback runs at normal priority"),
        (1, "SCHED_BATCH", 0, 0, "audio callback runs at normal priority"),
        (0, "SCHED_FIFO", 50, 0, "--rt-priority 0"),
    ],
)
def test_worker_goes_realtime_only_below_a_realtime_callback(requested, policy, priority, wanted, why):
    from spectro_fx.effect.io.worker import worker_priority

    got, reason = worker_priority(requested, getattr(os, policy), priority)
    assert got == wanted and why in reason


def test_listings(jack_server, capsys):
    from spectro_fx.effect.io.cli import main

    assert main(["--list-devices"]) == 0
    assert "JACK Audio Connection Kit" in capsys.readouterr().out
    assert main(["--list-midi", "--midi-api", "jack"]) == 0
    assert "(Jack)" in capsys.readouterr().out  # rtmidi names the API "Jack"


@pytest.mark.slow
def test_live_cross_takes_its_second_source_from_input_channel_2(jack_server, tmp_path):
    """Live `cross` processes channel 1 with channel 2 as the second source and plays the result
    on both outputs; it matches the offline engine fed the same two signals."""
    from spectro_fx.effect.core.engine import Engine
    from spectro_fx.models.export import load_model

    # a trained model (the tiny one's codes hardly depend on the source, so a swap is not
    # heard), the lightest bundled one: where the core cannot keep up, blocks play dry
    live_model = str(asset_path("low_delay_model.pt"))

    t = np.arange(int(1.5 * SR)) / SR
    main = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.1 * np.sin(2 * np.pi * 1500 * t)
    other = 0.2 * np.sign(np.sin(2 * np.pi * 97 * t)) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    src = np.stack([main, other], axis=1).astype(np.float32)
    sf.write(tmp_path / "src.wav", src, SR, subtype="FLOAT")
    stats, record = tmp_path / "stats.jsonl", tmp_path / "heard.wav"
    settings = {"low_hz": "300", "high_hz": "6000", "cross.amount": "1"}
    proc = spectro_fx(
        "--input", str(tmp_path / "src.wav"), "--loop", "--model", live_model, "--chain", "cross",
        *[a for k, v in settings.items() for a in ("--set", f"{k}={v}")],
        "--duration", "4", "--record", str(record), "--stats-json", str(stats), "--no-status",
        "--jack-name", f"sfxmix{os.getpid()}",
    )
    _, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, err
    last = stats_lines(stats)[-1]
    heard, _ = sf.read(record, dtype="float32")
    delay = last["latency"]["engine_frames"] + last["latency"]["margin_frames"]
    body = heard[delay:]
    np.testing.assert_array_equal(body[:, 0], body[:, 1])  # one processed channel, played on both

    looped = np.tile(src, (4, 1))[: len(body)]
    model = load_model(live_model)

    def offline(aux):
        engine = Engine(model, sr=SR, channels=1, chain="cross", seed=0, values=settings, aux_channels=1)
        return np.concatenate([
            engine.process(looped[i : i + 4096, :1], aux[i : i + 4096]) for i in range(0, len(looped), 4096)
        ] + [engine.process(np.zeros((engine.latency_samples, 1), np.float32),
                            np.zeros((engine.latency_samples, 1), np.float32))])[engine.latency_samples :]

    mixed = offline(looped[:, 1:2])
    itself = offline(looped[:, :1])  # its own codes swapped in: plain resynthesis
    # blocks played dry after an underrun differ from both, and so does the 2 ms fade back in
    # after each; the rest is the offline cross-synthesis
    close = np.abs(body[:, 0] - mixed[:, 0]) < 1e-4
    dry = (last["underrun_frames"] + last["underruns"] * round(0.002 * SR)) / len(body)
    assert close.mean() > 0.9 - dry, (close.mean(), last["underruns"])
    assert np.abs(mixed - itself).max() > 0.05  # the second source is heard
    assert not np.allclose(body[:, 0], looped[:, 0], atol=1e-3)  # and it is not the dry input


def test_live_cross_without_a_second_channel_is_a_clear_error(jack_server, tmp_path, capsys):
    from spectro_fx.effect.io.cli import main

    sf.write(tmp_path / "mono.wav", np.zeros((4800, 1), np.float32), SR)
    assert main(["--input", str(tmp_path / "mono.wav"), "--chain", "cross", "--duration", "1"]) == 2
    err = capsys.readouterr().err
    assert "needs exactly 2 input channels (this input gives 1" in err and "--cross-with FILE" in err, err


def test_aux_engine_loops_the_second_source_file_in_step_with_the_stream(tmp_path):
    """`--cross-with FILE` live: every block gets the file's next frames, looped, whatever the
    block sizes; the result equals the engine fed the looped file in one go."""
    from spectro_fx.effect.core.engine import Engine
    from spectro_fx.effect.io.sources import AuxEngine, LoopedSource
    from spectro_fx.models.export import load_model

    model = load_model(asset_path(DEFAULT_MODEL))
    rng = np.random.default_rng(5)
    x = (0.1 * rng.standard_normal((SR // 2, 2))).astype(np.float32)
    other = (0.3 * np.sign(np.sin(2 * np.pi * 97 * np.arange(7000) / SR)))[:, None].astype(np.float32)
    settings = {"low_hz": 300.0, "high_hz": 6000.0, "cross.amount": 1.0}

    def engine():
        return Engine(model, sr=SR, channels=2, chain="cross", seed=0, values=settings, aux_channels=1)

    live = AuxEngine(engine(), looped=LoopedSource(other))
    sizes = [256, 1000, 37, 4096]
    blocks, pos, k = [], 0, 0
    while pos < len(x):
        n = sizes[k % len(sizes)]
        blocks.append(live.process(x[pos : pos + n]))
        pos, k = pos + n, k + 1
    offline = engine().process(x, np.resize(other, (len(x), 1)))
    np.testing.assert_allclose(np.concatenate(blocks), offline, atol=1e-5)
    # the file is heard (so a block fed the wrong frames of it would show above)
    silent_source = engine().process(x, np.zeros((len(x), 1), np.float32))
    assert np.abs(offline - silent_source).max() > 0.01
    assert live.latency_samples == live.engine.latency_samples  # the rest is the engine's
