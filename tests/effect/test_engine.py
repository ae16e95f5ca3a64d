"""The streaming engine: null tests, agreement with the offline whole-file computation,
streaming == one pass, locality of the region, the gate, parameters and state."""

import sys
import threading
import time
import warnings

import numpy as np
import pytest
import scipy.signal
import soxr
import torch

from spectro_fx.effect.core.engine import Engine
from spectro_fx.effect.core.stream import REGION_INDEX
from spectro_fx.effect.core.region import EDGE_BINS, band_mask
from spectro_fx.models.errors import ParameterError
from spectro_fx.models.spectral import istft, stft

BLOCKS = [1, 64, 65, 256, 8193]


def _run(engine, x, block):
    """Feed ``x`` [frames, channels] plus the latency in zeros; return the aligned output."""
    latency = engine.latency_samples
    padded = np.concatenate([x, np.zeros((latency, x.shape[1]), np.float32)])
    out = [engine.process(padded[i : i + block]) for i in range(0, len(padded), block)]
    return np.concatenate(out)[latency:]


def _noise(rng, frames, channels, scale=0.1):
    return (scale * rng.standard_normal((frames, channels))).astype(np.float32)


@pytest.mark.parametrize("block", BLOCKS)
@pytest.mark.parametrize("sr", [44100, 48000])
@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("setting", ["wet=0", "empty band"])
def test_null_output_is_delayed_input(tiny_model, rng, block, sr, channels, setting):
    values = {"wet": 0.0} if setting == "wet=0" else {"low_hz": 3000.0, "high_hz": 1000.0, "wet": 1.0}
    frames = 2500 if block == 1 else sr // 5
    x = _noise(rng, frames, channels, scale=0.5)
    engine = Engine(tiny_model, sr=sr, channels=channels, chain="noise", values=values)
    out = _run(engine, x, block)
    assert out.dtype == np.float32 and out.shape == x.shape
    assert np.max(np.abs(out - x)) <= 1e-6
    assert engine.late_samples == 0


def test_latency_within_budget_at_48k(tiny_model):
    engine = Engine(tiny_model, sr=48000, channels=1)
    # analysis window 512 + completing a 4-frame column (3 x 128) - 1: the newest sample waits
    assert engine.latency_samples == 512 + 3 * 128 - 1
    assert engine.latency_s <= 0.025
    assert engine.column_period_s == pytest.approx(4 * 128 / 48000)


def test_matches_offline_whole_file_computation(tiny_model, rng):
    """Output = input + iSTFT(M * (decoded - |X|) * phase), computed here with the whole-signal
    STFT of models.spectral and one decode of the whole codemap."""
    cfg = tiny_model.config.stft
    x = _noise(rng, 24000, 1)
    engine = Engine(tiny_model, sr=48000, channels=1, values={"low_hz": 1000.0, "high_hz": 4000.0})
    out = _run(engine, x, 256)[:, 0].astype(np.float64)
    spec = stft(x[:, 0].astype(np.float64), cfg)
    n = spec.shape[1] // 4 * 4
    spec = spec[:, :n]
    with torch.no_grad():
        mag = torch.from_numpy(np.abs(spec)).float()[None]
        decoded = tiny_model.module.decode(tiny_model.module.encode(mag))[0].double().numpy()
    edges = torch.full((n,), 1000.0, dtype=torch.float64), torch.full((n,), 4000.0, dtype=torch.float64)
    mask = band_mask(*edges, 48000, cfg.n_fft, EDGE_BINS).numpy().T
    expected = x[: n * cfg.hop_length, 0] + istft(mask * (decoded - np.abs(spec)) * np.exp(1j * np.angle(spec)), cfg)
    final = n * cfg.hop_length - cfg.win_length  # the offline iSTFT's last samples lack frames
    assert np.max(np.abs(expected[:final] - x[:final, 0])) > 0.01  # the region does change the sound
    np.testing.assert_allclose(out[:final], expected[:final], atol=1e-5)


@pytest.mark.parametrize("sr,channels,chain", [(48000, 1, "noise"), (44100, 2, "none"), (48000, 2, "inpaint")])
def test_streaming_equals_one_pass(tiny_model, rng, sr, channels, chain):
    x = _noise(rng, sr // 2, channels)
    values = {
        "noise": {"low_hz": 800.0, "high_hz": 5000.0, "noise.amount": 0.5},
        "none": {"low_hz": 800.0},
        # stereo, sampled (temperature 1), the whole band (edge rows too), gated so that some columns hold no region cell
        "inpaint": {"low_hz": 20.0, "high_hz": 24000.0, "period_s": 0.1, "duty": 0.5, "inpaint.temperature": 1.0},
    }[chain]
    outputs = {}
    for block in (len(x) + 10000, 64, 65, 1000):
        engine = Engine(tiny_model, sr=sr, channels=channels, chain=chain, seed=3, values=values)
        outputs[block] = _run(engine, x, block)
    # as a file render's engine: TorchScript's optimiser off
    plain = Engine(tiny_model, sr=sr, channels=channels, chain=chain, seed=3, values=values, jit_optimize=False)
    outputs["jit_optimize=False, 16384"] = _run(plain, x, 16384)
    whole = outputs.pop(len(x) + 10000)
    assert np.max(np.abs(whole - x)) > 0.01
    for block, out in outputs.items():
        np.testing.assert_allclose(out, whole, atol=1e-5, err_msg=f"block {block}")


def test_resampled_path_is_aligned_with_the_model_rate_path(tiny_model, rng):
    """At 44.1 kHz the change to the input equals the 48 kHz engine's change on the resampled
    input, resampled back: the soxr delays are compensated exactly."""
    values = {"low_hz": 2000.0, "high_hz": 5000.0}
    x44 = _noise(rng, 22050, 1)
    d44 = (_run(Engine(tiny_model, sr=44100, channels=1, values=values), x44, 512) - x44)[:, 0]
    x48 = soxr.resample(x44.astype(np.float64), 44100, 48000, quality="HQ").astype(np.float32)
    d48 = (_run(Engine(tiny_model, sr=48000, channels=1, values=values), x48, 512) - x48)[:, 0]
    back = soxr.resample(d48.astype(np.float64), 48000, 44100, quality="HQ")
    n = min(len(d44), len(back)) - 2000
    assert np.max(np.abs(back[2000:n])) > 0.01
    np.testing.assert_allclose(d44[2000:n], back[2000:n], atol=1e-5 * np.max(np.abs(back)))


def test_locality_of_a_band_region(tiny_model, rng):
    sr = 48000
    x = _noise(rng, sr, 1)
    engine = Engine(tiny_model, sr=sr, channels=1, values={"low_hz": 3000.0, "high_hz": 6000.0, "wet": 1.0})
    change = (_run(engine, x, 512) - x)[:, 0].astype(np.float64)
    f, p_in = scipy.signal.welch(x[:, 0], fs=sr, nperseg=4096, detrend=False)
    _, p_change = scipy.signal.welch(change, fs=sr, nperseg=4096, detrend=False)
    ratio_db = 10 * np.log10(p_change / p_in)
    # beyond the 3-bin soft edge (281 Hz) and the synthesis window's leakage
    outside = (f < 3000 - 1200) | (f > 6000 + 1200)
    inside = (f > 3200) & (f < 5800)
    assert ratio_db[outside].max() < -60
    assert ratio_db[inside].mean() > -20


def test_time_gate_limits_the_change_to_on_periods(tiny_model, rng):
    sr = 48000
    x = _noise(rng, sr, 1)
    engine = Engine(tiny_model, sr=sr, channels=1, values={"period_s": 0.2, "duty": 0.5, "low_hz": 500.0})
    change = np.abs(_run(engine, x, 333) - x)[:, 0]
    t = np.arange(len(change)) / sr
    phase = np.mod(t, 0.2)
    window_s = 512 / sr  # a frame reaches back one analysis window
    off = (phase > 0.1 + window_s + 4 * 128 / sr) & (phase < 0.2 - window_s)
    on = (phase > 0.02) & (phase < 0.08)
    assert change[off].max() == 0.0
    assert change[on].max() > 0.01


def test_parameters_names_clamping_and_values(tiny_model):
    engine = Engine(tiny_model, sr=48000, channels=1, chain="noise")
    params = engine.parameters()
    assert {"low_hz", "high_hz", "period_s", "duty", "wet", "noise.amount"} <= set(params)
    assert params["low_hz"].scale == "log" and params["low_hz"].unit == "Hz"
    with pytest.raises(ParameterError, match=r"unknown parameter 'gain'.*low_hz.*noise.amount"):
        engine.set("gain", 1.0)
    with pytest.raises(ParameterError, match="wet="):
        engine.set("wet", "loud")
    with pytest.warns(UserWarning, match=r"wet=3 is outside \[0, 1\].*clamped to 1"):
        assert engine.set("wet", 3) == 1.0
    engine.set("amount", 0.25)  # bare effect parameter name, unique in the chain
    assert engine.values()["noise.amount"] == 0.25
    assert engine.chain[0].values["amount"] == 0.25
    with pytest.raises(ParameterError, match=r"unknown effect 'reverb'; available: .*noise.*none"):
        Engine(tiny_model, sr=48000, channels=1, chain="noise,reverb")


def test_set_from_another_thread_applies_at_next_block(tiny_model, rng):
    engine = Engine(tiny_model, sr=48000, channels=1, values={"wet": 0.0})
    x = _noise(rng, 256, 1)
    engine.process(x)
    worker = threading.Thread(target=engine.set, args=("wet", 1.0))
    worker.start()
    worker.join()
    assert engine.values()["wet"] == 1.0
    wet = REGION_INDEX["wet"]
    assert engine._core.region.target[wet] == 0.0  # queued, not yet applied
    engine.process(x)
    assert engine._core.region.target[wet] == 1.0


def test_smoothing_ramps_without_jumps(tiny_model, rng):
    """wet 0 -> 1 mid-stream ramps over its smoothing time, per hop, landing exactly."""
    engine = Engine(tiny_model, sr=48000, channels=1, values={"wet": 0.0})
    engine.process(_noise(rng, 2048, 1))
    engine.set("wet", 1.0)
    region = engine._core.region
    wet, low = REGION_INDEX["wet"], REGION_INDEX["low_hz"]
    engine._apply_pending()
    steps = region.steps[wet]
    ramp = region.advance(wet, steps + 2).numpy()
    assert np.all(np.diff(ramp) >= 0) and np.max(np.diff(ramp)) <= 1.0 / steps + 1e-12
    assert ramp[-1] == 1.0 and steps >= 5
    region.set_value(low, 4000.0, False)
    values = region.advance(low, region.steps[low]).numpy()
    ratios = values[1:] / values[:-1]
    np.testing.assert_allclose(ratios, ratios[0], rtol=1e-9)  # log-scale: equal ratios per hop
    assert values[-1] == 4000.0


def test_effect_parameters_ramp_over_their_declared_smoothing(tiny_model):
    """An effect parameter declared with smoothing_s ramps, one value per column, landing exactly;
    one without it jumps."""
    from spectro_fx.effect import Effect, Parameter

    class Probe(Effect):
        name = "probe"
        parameters = (Parameter("level", 0.0, 1.0, 0.0, smoothing_s=0.05), Parameter("step", 0.0, 1.0, 0.0))

        def __init__(self):
            super().__init__()
            self.seen = []

        def process_codes(self, codes, region, ctx):
            self.seen.append((self.values["level"], self.values["step"]))
            return codes

    probe = Probe()
    engine = Engine(tiny_model, sr=48000, channels=1, chain=[probe], values={"probe.level": 0.5})
    silence = np.zeros((1024, 1), np.float32)
    engine.process(silence)
    assert probe.seen and all(seen == (0.5, 0.0) for seen in probe.seen)  # initial values: no ramp
    probe.seen.clear()
    engine.set("probe.level", 1.0)
    engine.set("probe.step", 1.0)
    for _ in range(20):
        engine.process(silence)
    levels = [level for level, _ in probe.seen]
    assert all(step == 1.0 for _, step in probe.seen)
    column_s = engine.column_period_s
    ramping = [v for v in levels if v < 1.0]
    assert np.all(np.diff(levels) >= 0) and levels[-1] == 1.0 and 0.5 < ramping[0]
    assert len(ramping) == pytest.approx(0.05 / column_s, abs=1.5)


def test_the_chain_runs_code_effects_before_latent_effects_and_says_so(tiny_model, rng):
    x = _noise(rng, 9600, 1)
    with pytest.warns(UserWarning, match=r"chain dropout,noise runs as noise,dropout: code effects \(noise\)"):
        reordered = Engine(tiny_model, sr=48000, channels=1, chain="dropout,noise", seed=3)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        as_run = Engine(tiny_model, sr=48000, channels=1, chain="noise,dropout", seed=3)
    np.testing.assert_array_equal(_run(reordered, x, 512), _run(as_run, x, 512))


def test_reset_repeats_the_output_and_keeps_parameters(tiny_model, rng):
    x = _noise(rng, 9000, 2)
    engine = Engine(tiny_model, sr=48000, channels=2, chain="noise", seed=7, values={"noise.amount": 0.7})
    first = _run(engine, x, 500)
    engine.reset()
    second = _run(engine, x, 500)
    np.testing.assert_array_equal(first, second)
    assert engine.values()["noise.amount"] == 0.7
    assert len(engine.column_times) > 0 and min(engine.column_times) > 0


def test_non_finite_input_is_replaced_and_counted(tiny_model, rng):
    engine = Engine(tiny_model, sr=48000, channels=1)
    x = _noise(rng, 4000, 1)
    x[100] = np.nan
    x[200] = np.inf
    with pytest.warns(UserWarning, match="non-finite samples"):
        out = _run(engine, x, 1000)
    assert np.isfinite(out).all()
    assert engine.nonfinite_samples == 2


def test_sanitized_input_is_said_once_per_stream(tiny_model, rng):
    engine = Engine(tiny_model, sr=48000, channels=2)
    x = _noise(rng, 6000, 2)
    x[100:3000:7, 0] = np.nan
    x[50:60, 1] = -np.inf
    x[4000:4100] = np.float32(1e-40)  # subnormal
    with pytest.warns(UserWarning) as caught:
        out = _run(engine, x, 64)
    messages = [str(w.message) for w in caught]
    assert sum("non-finite samples" in m for m in messages) == 1
    assert sum("subnormal samples" in m for m in messages) == 1
    assert engine.subnormal_samples == 200 and engine.nonfinite_samples == len(range(100, 3000, 7)) + 10
    assert np.isfinite(out).all()
    tiny = np.abs(out)
    assert not ((tiny > 0) & (tiny < np.finfo(np.float32).tiny)).any()
    engine.reset()  # a new stream says it again
    with pytest.warns(UserWarning, match="non-finite samples"):
        engine.process(x[:200])


def test_far_beyond_full_scale_leaves_the_model_loud_not_lost(tiny_model, rng):
    """A 1e6 burst reaches the encoder no louder than a full-scale signal can be (Parseval),
    while input within +-1 is untouched: the engine gives the same output as before for it."""
    engine = Engine(tiny_model, sr=48000, channels=1, values={"low_hz": 20.0, "high_hz": 24000.0})
    x = _noise(rng, 2048, 1, scale=1.0).clip(-1, 1)
    core = engine._core
    magnitude = core.analysis(torch.from_numpy(x.T.astype(np.float64))).abs()
    np.testing.assert_array_equal(core.encoder_input(magnitude).numpy(), magnitude.float().numpy())
    loud = core.encoder_input(magnitude * 1e6)
    energy = (loud.double() ** 2).sum(dim=1)
    assert energy.max() <= core.energy_ceiling * (1 + 1e-5)


def test_regenerated_band_is_never_far_louder_than_the_input():
    """Inpainting next to a full-scale tone (the region open over everything) may decode loud
    codes in many rows at once: a frame of output stays within +6 dB of its input frame, and
    nothing above the I/O rate's Nyquist is regenerated (at 22.05 kHz the default model
    peaked at +13 to +16 dBFS for a full-scale sweep before)."""
    from spectro_fx.effect.io.render import resolve_model
    from spectro_fx.effect.io.validate import sweep as full_scale_sweep

    sr = 22050
    engine = Engine(resolve_model(None), sr=sr, channels=1, chain="inpaint", values={"low_hz": 20.0, "high_hz": 24000.0})
    sweep = full_scale_sweep(sr, 1416, 1)[:, 0]  # 64 ms, 40 Hz to 9.9 kHz
    x = np.concatenate([sweep, np.zeros(sr // 10)]).astype(np.float32)[:, None]
    out = _run(engine, x, 256)
    assert np.abs(out).max() <= 4.0
    # digital silence in, silence out: nothing regenerated from the loud columns before it
    assert np.abs(out[-sr // 20 :]).max() < 1e-6
    assert engine._core.band_top_hz == sr / 2


def test_a_burst_far_beyond_full_scale_ends_when_it_ends(lowdelay_model, rng):
    """Frames louder than any input within +-1 play dry: with the low-delay pair's long analysis
    window the burst's change otherwise leaked into the output for 20 ms after it (26.6 ms
    against the 13.3 ms of latency plus a column)."""
    x = _noise(rng, 16000, 1, scale=0.1)
    x[5000:5100] *= 1e6
    engine = Engine(lowdelay_model, sr=48000, channels=1, values={"low_hz": 150.0, "high_hz": 5000.0})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = np.concatenate([engine.process(x[i : i + 256]) for i in range(0, len(x), 256)])
    after = out[5100 + engine.latency_samples :]
    assert np.isfinite(out).all()
    assert np.abs(after).max() <= 4.0 * np.abs(x[5100:]).max()


def test_set_many_is_whole_for_a_block(tiny_model):
    """A pair queued with set_many is taken by the next block all at once, whatever the thread."""
    engine = Engine(tiny_model, sr=48000, channels=1)
    # past the first analysis frame: before it, set_many applies from the caller's thread at once
    # and leaves nothing pending (64 samples here let a loaded CI machine take no pair in 10 s)
    engine.process(np.zeros((4096, 1), np.float32))
    assert engine._core.analysis.frames_done > 0
    bank = engine._bank
    stop = threading.Event()

    def setter():
        while not stop.is_set():
            engine.set_many({"low_hz": 100.0, "high_hz": 300.0})
            engine.set_many({"low_hz": 6000.0, "high_hz": 12000.0})

    thread = threading.Thread(target=setter)
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # the threads interleave at almost any bytecode
    thread.start()
    torn = taken = 0
    deadline = time.monotonic() + 10.0
    try:
        while taken < 300 and time.monotonic() < deadline:
            pending = bank.take_pending()
            taken += bool(pending)
            torn += len(pending) == 1
    finally:
        stop.set()
        thread.join()
        sys.setswitchinterval(switch)
    assert taken > 0 and torn == 0
    with pytest.raises(ParameterError, match="unknown parameter 'lowest_hz'"):
        engine.set_many({"high_hz": 900.0, "lowest_hz": 1.0})
    assert engine.values()["high_hz"] != 900.0  # nothing set when one of them is bad


def test_bad_arguments(tiny_model):
    with pytest.raises(ParameterError, match="sr=0"):
        Engine(tiny_model, sr=0, channels=1)
    with pytest.raises(ParameterError, match="channels=0"):
        Engine(tiny_model, sr=48000, channels=0)
    with pytest.raises(ParameterError, match="seed=-1 must be an integer >= 0"):
        Engine(tiny_model, sr=48000, channels=1, seed=-1)
    with pytest.raises(ParameterError, match="resample_quality='best'"):
        Engine(tiny_model, sr=44100, channels=1, resample_quality="best")
    with pytest.raises(ParameterError, match="precision='float16' must be one of float32, bfloat16"):
        Engine(tiny_model, sr=48000, channels=1, precision="float16")
    engine = Engine(tiny_model, sr=48000, channels=2)
    with pytest.raises(ParameterError, match=r"expected \[frames, 2\]"):
        engine.process(np.zeros((10, 1), np.float32))
    assert engine.process(np.zeros((0, 2), np.float32)).shape == (0, 2)


@pytest.mark.parametrize("sr", [16000, 44100])
def test_odd_model_shapes(odd_model, rng, sr):
    """Hop not dividing n_fft, a window shorter than n_fft, time stride 2, asymmetric padding,
    and (at 44.1 kHz) resampling by 2.76: null, streaming == one pass at odd blocks."""
    x = _noise(rng, sr // 2, 2)
    null = _run(Engine(odd_model, sr=sr, channels=2, values={"wet": 0.0}), x, 65)
    assert np.max(np.abs(null - x)) <= 1e-6
    values = {"low_hz": 1000.0, "high_hz": 5000.0}
    whole = _run(Engine(odd_model, sr=sr, channels=2, values=values), x, len(x) + 10000)
    assert np.max(np.abs(whole - x)) > 1e-3
    for block in (65, 256):
        out = _run(Engine(odd_model, sr=sr, channels=2, values=values), x, block)
        np.testing.assert_allclose(out, whole, atol=1e-5, err_msg=f"block {block}")


def test_the_engine_leaves_torch_threads_to_the_command(tiny_model, rng, tmp_path):
    """No process-wide setting from a library: the engine keeps torch's thread count; the
    spectro-fx command sets one thread for its run and gives the count back."""
    import soundfile as sf

    from spectro_fx.effect.io.cli import main

    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        Engine(tiny_model, sr=48000, channels=1, chain="noise").process(_noise(rng, 4096, 1))
        assert torch.get_num_threads() == 2
        sf.write(tmp_path / "in.wav", _noise(rng, 4800, 1), 48000, subtype="FLOAT")
        assert main(["--input", str(tmp_path / "in.wav"), "--output", str(tmp_path / "out.wav"), "--quiet"]) == 0
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)


def test_a_bfloat16_network_changes_the_sound_little(tiny_model, rng):
    """The same render with the network in bfloat16: the wet change (output - delayed input)
    stays within a few per cent of float32's, streaming still equals one pass, and outside
    the region the output is still exactly the delayed input."""
    x = _noise(rng, 24000, 1)
    values = {"low_hz": 1000.0, "high_hz": 4000.0}
    full = _run(Engine(tiny_model, sr=48000, channels=1, values=values), x, 256)
    engine = Engine(tiny_model, sr=48000, channels=1, values=values, precision="bfloat16")
    assert engine.precision == "bfloat16"
    half = _run(engine, x, 256)
    change, change_full = half - x, full - x
    assert np.sqrt(np.mean(change_full**2)) > 0.005  # the region does change the sound
    error = np.sqrt(np.mean((change - change_full) ** 2)) / np.sqrt(np.mean(change_full**2))
    assert 0 < error < 0.15, error
    engine.reset()
    np.testing.assert_allclose(_run(engine, x, 8193), half, atol=1e-5)  # as test_streaming_equals_one_pass
    closed = Engine(tiny_model, sr=48000, channels=1, values={"wet": 0.0}, precision="bfloat16")
    np.testing.assert_array_equal(_run(closed, x, 256), x)
