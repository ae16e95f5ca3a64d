"""The scripted effect module: equal to the engine, bit-exact when transparent, independent of
blocking, batch and reset; parameters as typed attributes; repeatable random draws."""

import warnings

import numpy as np
import pytest
import torch

from spectro_fx.effect.core.engine import Engine
from spectro_fx.effect.export.scripted import ATTRIBUTES, ScriptedEffect
from spectro_fx.models.errors import ParameterError


@pytest.fixture(scope="module")
def default_model():
    """The bundled default model: tiny random models give one code everywhere, so a second
    source would change nothing."""
    from spectro_fx.assets import DEFAULT_MODEL, asset_path
    from spectro_fx.models.export import load_model

    return load_model(asset_path(DEFAULT_MODEL))


def _script(model, chain="none", values=None, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.script(ScriptedEffect(model, chain=chain.split(","), values=values or {}, **kwargs))


def _module_run(module, x, block):
    """``x`` [frames, channels] through the module in blocks -> [frames, channels]."""
    xt = torch.from_numpy(np.ascontiguousarray(x.T))[None]
    with torch.no_grad():
        out = [module(xt[:, :, i : i + block]) for i in range(0, xt.shape[2], block)]
    return torch.cat(out, dim=2)[0].numpy().T


def _signal(rng, frames, channels):
    t = np.arange(frames) / 48000
    tone = 0.3 * np.sin(2 * np.pi * (300 * t + 900 * t**2))
    return (tone[:, None] + 0.05 * rng.standard_normal((frames, channels))).astype(np.float32)


CASES = {
    "none, full band": ("none", {"low_hz": 20.0, "high_hz": 24000.0}),
    "dropout, gated, smoothed move": ("dropout", {"period_s": 0.05, "duty": 0.5, "dropout.channels": 2}),
    "spatial both": ("inpaint", {"inpaint.temperature": 0.0, "low_hz": 300.0, "high_hz": 9000.0}),
    "spatial time radius 3": ("inpaint", {"inpaint.temperature": 0.0, "inpaint.axis": "time", "inpaint.radius": 3}),
    "spatial freq": ("inpaint", {"inpaint.temperature": 0.0, "inpaint.axis": "freq"}),
    "learned": ("inpaint,dropout", {"inpaint.method": "learned", "inpaint.temperature": 0.0, "low_hz": 100.0}),
}


def test_the_exported_module_carries_the_prior_tables_once(prior_model):
    """The default model's prior is 25 MB: the file must not hold it two or three times (the
    core's copy of the model file, a float64 copy for the sums); the learned path's equality
    with the engine is test_equals_the_engine's "learned" case."""
    table = prior_model.module.prior_feature_log_prob
    module = _script(prior_model, "inpaint", {"inpaint.method": "learned"})
    large = [(name, b) for name, b in module.named_buffers() if b.numel() >= table.numel()]
    assert [(name, b.dtype) for name, b in large] == [("step.prior_value_log_prob", torch.float32)]
    assert prior_model.module.prior_feature_log_prob.numel() == table.numel()  # the caller's file is untouched


@pytest.mark.parametrize("case", sorted(CASES))
def test_equals_the_engine(prior_model, rng, case):
    chain, values = CASES[case]
    x = _signal(rng, 24000, 2)
    engine = Engine(prior_model, sr=48000, channels=2, chain=chain, values=values)
    module = _script(prior_model, chain, values, channels=2)
    assert int(module.latency_samples) == engine.latency_samples
    expected, got = [], []
    for i, block in enumerate(range(0, len(x), 256)):
        if i == 40:  # a knob moves mid-stream: both ramp it the same way
            engine.set("high_hz", 2000.0)
            module.set_high_hz(2000.0)
        expected.append(engine.process(x[block : block + 256]))
        got.append(_module_run(module, x[block : block + 256], 256))
    expected, got = np.concatenate(expected), np.concatenate(got)
    delayed = np.concatenate([np.zeros((engine.latency_samples, 2), np.float32), x])[: len(x)]
    assert np.max(np.abs(expected - delayed)) > 1e-3  # the region does change the sound
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("chain", ["none", "inpaint,dropout"])
def test_equals_the_engine_on_the_low_delay_pair(lowdelay_model, rng, chain):
    """Long analysis window, short synthesis window: the same lag and output as the engine,
    also through a burst far beyond full scale (the encoder sees it scaled down, as the engine's)."""
    x = _signal(rng, 16000, 1)
    x[5000:5100] *= 1e6
    values = {"low_hz": 150.0, "high_hz": 5000.0, **({"inpaint.temperature": 0.0} if "inpaint" in chain else {})}
    engine = Engine(lowdelay_model, sr=48000, channels=1, chain=chain, values=values)
    module = _script(lowdelay_model, chain, values)
    assert int(module.latency_samples) == engine.latency_samples == 256 - 128 + 2 * 128 - 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = np.concatenate([engine.process(x[i : i + 300]) for i in range(0, len(x), 300)])
    got = _module_run(module, x, 300)
    np.testing.assert_allclose(got, expected, atol=1e-5 * float(np.abs(expected).max()))


@pytest.mark.parametrize("mode, amount", [("latent", 0.7), ("codes", 1.0)])
def test_cross_takes_its_second_source_from_the_last_input_channel_as_the_engine(default_model, rng, mode, amount):
    """``cross`` in the module: one more input channel, the second source, encoded in lockstep
    as the engine's StreamCore; latents blended (or every region code swapped, amount 1) as the
    engine's Cross, also while the amount moves."""
    x = _signal(rng, 24000, 2)
    t = np.arange(len(x)) / 48000
    aux = (0.3 * np.sign(np.sin(2 * np.pi * 110 * t)))[:, None].astype(np.float32)
    values = {"cross.mode": mode, "cross.amount": amount, "low_hz": 300.0, "high_hz": 6000.0}
    engine = Engine(default_model, sr=48000, channels=2, chain="cross", values=values, aux_channels=1)
    plain = Engine(default_model, sr=48000, channels=2, chain="none", values={"low_hz": 300.0, "high_hz": 6000.0})
    module = _script(default_model, "cross", values, channels=2)
    assert module.forward_params.tolist() == [3, 1, 2, 1]
    expected, got, without = [], [], []
    for i, block in enumerate(range(0, len(x), 256)):
        if i == 40 and mode == "latent":
            engine.set("cross.amount", 0.2)
            module.set_cross_amount(0.2)
        expected.append(engine.process(x[block : block + 256], aux=aux[block : block + 256]))
        without.append(plain.process(x[block : block + 256]))
        got.append(_module_run(module, np.concatenate([x[block : block + 256], aux[block : block + 256]], axis=1), 256))
    expected, got, without = np.concatenate(expected), np.concatenate(got), np.concatenate(without)
    assert got.shape == x.shape
    assert np.max(np.abs(expected - without)) > 1e-2  # the second source is heard
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_cross_gives_each_batch_row_its_own_second_source(default_model, rng):
    x = _signal(rng, 9000, 1)
    aux = rng.standard_normal((2, 9000)).astype(np.float32) * np.array([[0.3], [0.05]], np.float32)
    values = {"cross.mode": "latent", "cross.amount": 1.0, "low_hz": 100.0, "high_hz": 9000.0}
    module = _script(default_model, "cross", values)
    batch = torch.from_numpy(np.stack([np.stack([x[:, 0], a]) for a in aux]))
    with torch.no_grad():
        both = torch.cat([module(batch[:, :, i : i + 500]) for i in range(0, 9000, 500)], dim=2)
    for row in range(2):
        module.reset()
        alone = _module_run(module, np.stack([x[:, 0], aux[row]], axis=1), 500)
        np.testing.assert_allclose(both[row].numpy().T, alone, atol=1e-6)
    assert float(torch.max(torch.abs(both[0] - both[1]))) > 1e-3


def test_equals_the_engine_through_silence_after_a_loud_tone(prior_model, rng):
    """The loudness guard (no output frame over +6 dB of its input frame) as the engine's:
    digital silence after a full-scale passage stays silent in both."""
    x = np.concatenate([3.0 * _signal(rng, 12000, 1), np.zeros((8000, 1), np.float32)])
    values = {"low_hz": 20.0, "high_hz": 24000.0, "inpaint.temperature": 0.0}
    engine = Engine(prior_model, sr=48000, channels=1, chain="inpaint", values=values)
    module = _script(prior_model, "inpaint", values)
    expected = np.concatenate([engine.process(x[i : i + 256]) for i in range(0, len(x), 256)])
    got = _module_run(module, x, 256)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert not expected[12000 + engine.latency_samples + 1024 :].any()


@pytest.mark.parametrize("values", [{"wet": 0.0}, {"low_hz": 3000.0, "high_hz": 1000.0}])
def test_transparent_settings_are_the_delayed_input_bit_exact(tiny_model, rng, values):
    x = _signal(rng, 9000, 1)
    module = _script(tiny_model, "inpaint", values)
    out = _module_run(module, x, 65)
    latency = int(module.latency_samples)
    assert np.array_equal(out[latency:], x[: len(x) - latency]) and not out[:latency].any()


def test_any_blocking_gives_the_same_output(prior_model, rng):
    """Sampled inpainting and noise included: draws are keyed by cell, not by call."""
    x = _signal(rng, 20000, 1)
    values = {"inpaint.temperature": 1.0, "noise.amount": 0.3, "low_hz": 200.0, "high_hz": 8000.0}
    outputs = {block: _module_run(_script(prior_model, "noise,inpaint", values), x, block) for block in (1, 64, 65, 4096, 8193)}
    whole = _module_run(_script(prior_model, "noise,inpaint", values), x, len(x))
    for block, out in outputs.items():
        np.testing.assert_allclose(out, whole, atol=1e-6, err_msg=f"block {block}")


def test_seed_repeats_and_changes_the_draws(prior_model, rng):
    x = _signal(rng, 12000, 1)
    values = {"noise.amount": 0.5}
    a = _module_run(_script(prior_model, "noise", values, seed=1), x, 512)
    b = _module_run(_script(prior_model, "noise", values, seed=1), x, 512)
    c = _module_run(_script(prior_model, "noise", values, seed=2), x, 512)
    assert np.array_equal(a, b)
    # other codes (the tiny decoder is nearly flat: its changes are small, far above rounding)
    assert np.max(np.abs(a - c)) > 1e-5


def test_batch_rows_and_reset_are_independent_streams(prior_model, rng):
    x = _signal(rng, 8192 * 2, 4)
    module = _script(prior_model, "inpaint", {"inpaint.temperature": 0.0})
    batch = torch.from_numpy(np.ascontiguousarray(x.T))[:, None]  # [4, 1, frames]
    with torch.no_grad():
        together = torch.cat([module(batch[:, :, i : i + 8192]) for i in (0, 8192)], dim=2)
        module.reset()
        again = torch.cat([module(batch[:, :, i : i + 4096]) for i in range(0, 8192 * 2, 4096)], dim=2)
    for row in range(4):
        alone = _module_run(_script(prior_model, "inpaint", {"inpaint.temperature": 0.0}), x[:, row : row + 1], 8192)
        np.testing.assert_allclose(together[row, 0].numpy(), alone[:, 0], atol=1e-6)
    np.testing.assert_allclose(again.numpy(), together.numpy(), atol=1e-6)


def test_non_finite_input_is_treated_as_zero(tiny_model, rng):
    x = _signal(rng, 6000, 1)
    bad = x.copy()
    bad[100], bad[2000], bad[3000] = np.nan, np.inf, -np.inf
    zeroed = x.copy()
    zeroed[[100, 2000, 3000]] = 0.0
    out = _module_run(_script(tiny_model, "none"), bad, 256)
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out, _module_run(_script(tiny_model, "none"), zeroed, 256))


def test_parameters_are_typed_attributes(prior_model):
    module = _script(prior_model, "inpaint", {"low_hz": 300.0, "inpaint.method": "learned"})
    assert list(module.get_attributes()) == ATTRIBUTES
    assert module.get_methods() == ["forward"]
    assert module.forward_params.tolist() == [1, 1, 1, 1]
    for name in ATTRIBUTES:
        getter, setter = getattr(module, f"get_{name}"), getattr(module, f"set_{name}")
        assert setter(getter()) == 0
        assert module.get_parameter(name) == getter()
    assert module.get_low_hz() == 300.0 and module.get_inpaint_method() == 1
    module.set_low_hz(1e9)
    assert module.get_low_hz() == 24000.0  # clamped into the declared range
    module.set_inpaint_axis(7)
    assert module.get_inpaint_axis() == 2
    assert module.set_wet(float("nan")) == 1 and module.get_wet() == 1.0


def test_what_it_cannot_carry_is_refused(tiny_model):
    with pytest.raises(ParameterError, match="effect 'reverb' cannot be exported"):
        ScriptedEffect(tiny_model, chain=["reverb"], values={})
    with pytest.raises(ParameterError, match="inpaint.context='output' cannot be exported"):
        ScriptedEffect(tiny_model, chain=["inpaint"], values={"inpaint.context": "output"})
    with pytest.raises(ParameterError, match="low_hz='low'"):
        ScriptedEffect(tiny_model, chain=["none"], values={"low_hz": "low"})
    with pytest.raises(ParameterError, match="channels=0"):
        ScriptedEffect(tiny_model, chain=["none"], values={}, channels=0)
