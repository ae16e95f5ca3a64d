"""Latency measured by signal: a click through the streaming engine arrives exactly
``latency_samples`` later; the low-delay analysis-synthesis pair keeps the null and streaming tests."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from spectro_fx.assets import DEFAULT_MODEL, asset_path
from spectro_fx.effect.core.engine import Engine

from ..jack import JackServer

BLOCKS = [1, 64, 65, 256, 8193]


def _wet_name(engine) -> str:
    """The region's wet/dry parameter (``mix``, renamed ``wet`` by issue 16)."""
    return "wet" if "wet" in engine.parameters() else "mix"


def _full_band(engine) -> None:
    engine.set("low_hz", 20.0)
    engine.set("high_hz", engine.model_sr / 2)
    engine.set(_wet_name(engine), 1.0)


def _stream(engine, x, block):
    return np.concatenate([engine.process(x[i : i + block]) for i in range(0, len(x), block)])


def test_low_delay_latency_is_set_by_the_synthesis_window(lowdelay_model, tiny_model):
    low = Engine(lowdelay_model, sr=48000, channels=1)
    # (synthesis 256 - hop 128) + a 2-frame column (2 x 128 - 1), not the 1024-point analysis window
    assert low.latency_samples == (256 - 128) + 2 * 128 - 1 == 383
    assert low.latency_s < 0.008
    classic = Engine(tiny_model, sr=48000, channels=1)
    assert classic.latency_samples == (512 - 128) + 4 * 128 - 1


@pytest.mark.parametrize("model_name", ["tiny_model", "lowdelay_model", "odd_model"])
@pytest.mark.parametrize("sr", [48000, 44100])
@pytest.mark.parametrize("block", [64, 257])
def test_a_click_arrives_exactly_latency_samples_later(request, model_name, sr, block):
    """Full-band region, wet = 1: the output is the model's resynthesis with the click's own
    phase, whose frames all peak where the click is; the peak is found by signal and must sit
    at ``latency_samples`` after the click (for any click position within a hop)."""
    model = request.getfixturevalue(model_name)
    for click_at in (4800, 4801, 4863, 4927):
        engine = Engine(model, sr=sr, channels=1, chain="none")
        _full_band(engine)
        x = np.zeros((click_at + engine.latency_samples + 3000, 1), np.float32)
        x[click_at] = 0.5
        heard = np.abs(_stream(engine, x, block)[:, 0])
        before = heard[: click_at + engine.latency_samples - 2048]  # the model's sound of silence
        assert heard.max() > 10 * before.max()  # the wet path carries the click
        assert int(np.argmax(heard)) - click_at == engine.latency_samples, f"click at {click_at}"
        assert engine.late_samples == 0


@pytest.mark.parametrize("name", ["default", "low-delay"])
@pytest.mark.parametrize("block", [64, 128, 257])
def test_the_bundled_low_delay_models_are_heard_under_10_ms_by_signal(name, block):
    """The default model and `--model low-delay`: a click through the whole band comes out 479 samples (9.98 ms) later at 48 kHz."""
    from spectro_fx.effect.io.render import resolve_model

    engine = Engine(resolve_model(name), sr=48000, channels=1, chain="none")
    _full_band(engine)
    assert engine.latency_samples == (384 - 96) + (2 * 96 - 1) <= 480
    for click_at in (4800, 4801, 4850):
        engine.reset()
        x = np.zeros((click_at + engine.latency_samples + 3000, 1), np.float32)
        x[click_at] = 0.5
        heard = np.abs(_stream(engine, x, block)[:, 0])
        assert int(np.argmax(heard)) - click_at == engine.latency_samples, f"click at {click_at}"


@pytest.mark.parametrize("block", BLOCKS)
@pytest.mark.parametrize("sr", [44100, 48000])
@pytest.mark.parametrize("setting", ["wet=0", "empty band"])
def test_low_delay_null_output_is_the_input_delayed_bit_exactly(lowdelay_model, rng, block, sr, setting):
    frames = 2500 if block == 1 else sr // 5
    x = (0.5 * rng.standard_normal((frames, 2))).astype(np.float32)
    engine = Engine(lowdelay_model, sr=sr, channels=2, chain="noise")
    if setting == "wet=0":
        engine.set(_wet_name(engine), 0.0)
    else:
        engine.set("low_hz", 3000.0)
        engine.set("high_hz", 1000.0)
    latency = engine.latency_samples
    out = _stream(engine, np.concatenate([x, np.zeros((latency, 2), np.float32)]), block)[latency:]
    np.testing.assert_array_equal(out, x)


@pytest.mark.parametrize("chain", ["none", "inpaint"])
def test_low_delay_streaming_equals_one_pass(lowdelay_model, rng, chain):
    x = (0.1 * rng.standard_normal((24000, 2))).astype(np.float32)
    outputs = {}
    for block in (len(x), 64, 65, 1000):
        engine = Engine(lowdelay_model, sr=48000, channels=2, chain=chain, seed=3)
        engine.set("low_hz", 300.0)
        engine.set("high_hz", 9000.0)
        outputs[block] = _stream(engine, x, block)
    whole = outputs.pop(len(x))
    assert np.max(np.abs(whole[engine.latency_samples :] - x[: -engine.latency_samples])) > 0.01
    for block, out in outputs.items():
        np.testing.assert_allclose(out, whole, atol=1e-5, err_msg=f"block {block}")


def test_low_delay_engine_matches_the_whole_signal_computation(lowdelay_model, rng):
    """Output = input + iSTFT(M * (decoded - |X|) * phase) with the whole-signal low-delay pair
    of models.spectral and one decode of the whole codemap."""
    import torch

    from spectro_fx.effect.core.region import EDGE_BINS, band_mask
    from spectro_fx.models.spectral import istft, stft

    cfg = lowdelay_model.config.stft
    x = (0.1 * rng.standard_normal((24000, 1))).astype(np.float32)
    engine = Engine(lowdelay_model, sr=48000, channels=1, values={"low_hz": 1000.0, "high_hz": 4000.0})
    latency = engine.latency_samples
    out = _stream(engine, np.concatenate([x, np.zeros((latency, 1), np.float32)]), 256)[latency:, 0]
    spec = stft(x[:, 0].astype(np.float64), cfg)
    n = spec.shape[1] // 2 * 2
    spec = spec[:, :n]
    with torch.no_grad():
        mag = torch.from_numpy(np.abs(spec)).float()[None]
        decoded = lowdelay_model.module.decode(lowdelay_model.module.encode(mag))[0].double().numpy()
    edges = torch.full((n,), 1000.0, dtype=torch.float64), torch.full((n,), 4000.0, dtype=torch.float64)
    mask = band_mask(*edges, 48000, cfg.n_fft, EDGE_BINS).numpy().T
    expected = x[: n * cfg.hop_length, 0] + istft(mask * (decoded - np.abs(spec)) * np.exp(1j * np.angle(spec)), cfg)
    final = n * cfg.hop_length - cfg.synthesis_length
    assert np.max(np.abs(expected[:final] - x[:final, 0])) > 0.01
    np.testing.assert_allclose(out[:final], expected[:final], atol=1e-5)


@pytest.mark.slow
@pytest.mark.jack
@pytest.mark.parametrize("period", [64, 128, 256])
def test_live_round_trip_is_engine_plus_safety_margin_by_signal(period, tiny_model_path, tmp_path):
    """Clicks read by the input callback are heard in the output callback's recording exactly
    engine + safety margin frames later (the start line's split; the device adds its own
    latency after that), at 64, 128 and 256 frames per JACK period; played dry or wet, a late
    block is delayed by the same amount."""
    default = asset_path(DEFAULT_MODEL)
    model = str(default if default.exists() else tiny_model_path)
    with JackServer(f"sfxlat{os.getpid()}p{period}", period=period) as server:
        clicks = np.zeros((48000, 1), np.float32)
        clicks[6000::12000] = 0.5  # every 0.25 s
        sf.write(tmp_path / "clicks.wav", clicks, 48000, subtype="FLOAT")
        stats, record = tmp_path / "stats.jsonl", tmp_path / "heard.wav"
        proc = subprocess.run(
            [sys.executable, "-m", "spectro_fx.effect.io.cli", "--input", str(tmp_path / "clicks.wav"), "--loop",
             "--model", model, "--blocksize", str(period), "--set", "low_hz=20", "--set", "high_hz=24000",
             "--record", str(record), "--stats-json", str(stats), "--duration", "3", "--no-status",
             "--jack-name", f"sfxlat{period}"],
            capture_output=True, text=True, env=server.env, timeout=120,
        )
    assert proc.returncode == 0, proc.stderr
    last = [json.loads(line) for line in stats.read_text().splitlines() if line.strip()][-1]
    split = last["latency"]
    start_line = next(line for line in proc.stdout.splitlines() + proc.stderr.splitlines() if "safety margin" in line)
    assert f"engine {1000 * split['engine_frames'] / 48000:.2f} + safety margin {1000 * split['margin_frames'] / 48000:.2f}" in start_line
    heard = np.abs(sf.read(record, dtype="float32", always_2d=True)[0][:, 0])
    lags = [int(np.argmax(heard[start : start + 12000])) for start in range(6000, len(heard) - 12000, 12000)]
    assert len(lags) >= 8
    # on a machine short of CPU a JACK cycle can be dropped (an xrun) and shift a click or two
    expected = split["engine_frames"] + split["margin_frames"]
    assert sum(lag == expected for lag in lags) >= 0.75 * len(lags), (lags, split, last["xruns"])
    assert split["margin_frames"] >= period and split["device_ms"] >= 0


def test_safety_margin_is_the_measured_call_time_plus_the_worker_wake_up(lowdelay_model):
    from spectro_fx.effect.io.live import _warm_up, auto_safety_s

    engine = Engine(lowdelay_model, sr=48000, channels=1)
    engine.set("high_hz", 5000.0)
    call_s, wake_s = _warm_up(engine, 128, 1, 48000)
    assert len(call_s) == len(wake_s) >= 100 and (call_s > 0).all() and (wake_s >= 0).all()
    assert engine.values()["high_hz"] == 5000.0  # the warm-up's whole band is put back
    safety = auto_safety_s(call_s, wake_s)
    assert safety == pytest.approx(min(max(np.percentile(call_s, 99) + np.percentile(wake_s, 99), 0.001), 0.1))
    # a steady engine and an idle machine: the margin shrinks to what they need, not a fixed guess
    assert auto_safety_s(np.full(100, 0.0004), np.zeros(100)) == pytest.approx(0.001)
    assert auto_safety_s(np.full(100, 0.003), np.full(100, 0.001)) == pytest.approx(0.004)
    assert auto_safety_s(np.full(100, 0.5), np.zeros(100)) == 0.1
