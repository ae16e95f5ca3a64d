"""The column step: one parameter table, the built-in effects fused, the engine and the exported
module running the same step (same output, random draws included), and the split step equal to it."""

import warnings

import numpy as np
import pytest
import torch

from spectro_fx.effect.core.effects import Effect, available_effects
from spectro_fx.effect.core.engine import Engine
from spectro_fx.effect.core.step import INDEX, STEP_FIXED, STEP_PARAMETERS, is_builtin, parameter_table
from spectro_fx.effect.export.scripted import ATTRIBUTES, ScriptedEffect

SR = 48000


def _signal(rng, frames, channels):
    t = np.arange(frames) / SR
    tone = 0.3 * np.sin(2 * np.pi * (300 * t + 900 * t**2))
    return (tone[:, None] + 0.05 * rng.standard_normal((frames, channels))).astype(np.float32)


def _engine_run(engine, x, block, aux=None):
    return np.concatenate([
        engine.process(x[i : i + block], aux=None if aux is None else aux[i : i + block]) for i in range(0, len(x), block)
    ])


def _module_run(module, x, block):
    xt = torch.from_numpy(np.ascontiguousarray(x.T))[None]
    with torch.no_grad():
        out = [module(xt[:, :, i : i + block]) for i in range(0, xt.shape[2], block)]
    return torch.cat(out, dim=2)[0].numpy().T


def test_the_parameter_table_is_the_built_in_effects_declarations():
    table = parameter_table()
    registry = available_effects()
    declared = {f"{name}.{p.name}": p for name in ("noise", "inpaint", "dropout", "cross") for p in registry[name].parameters}
    assert [engine_name for _, engine_name, _ in table][5:] == list(STEP_PARAMETERS)
    assert set(declared) == set(STEP_PARAMETERS) | set(STEP_FIXED)
    for attribute, engine_name, p in table[5:]:
        assert p is declared[engine_name] and attribute == engine_name.replace(".", "_")
        assert INDEX[engine_name] == table.index((attribute, engine_name, p))
    assert ATTRIBUTES == [attribute for attribute, _, _ in table]


CHAINS = {
    "noise": ("noise", {"noise.amount": 0.4}),
    "inpaint spatial, sampled": ("inpaint", {"inpaint.temperature": 1.0}),
    "inpaint spatial time, greedy": ("inpaint", {"inpaint.temperature": 0.0, "inpaint.axis": "time", "inpaint.radius": 3}),
    "inpaint learned, sampled": ("inpaint", {"inpaint.method": "learned", "inpaint.temperature": 1.0}),
    "inpaint learned, hot, alpha": ("inpaint", {"inpaint.method": "learned", "inpaint.temperature": 2.0, "inpaint.alpha": 5.0}),
    "noise, inpaint, dropout": ("noise,inpaint,dropout", {"noise.amount": 0.2, "inpaint.temperature": 1.0, "dropout.channels": 2}),
    "dropout": ("dropout", {"dropout.channels": 1}),
}


@pytest.fixture(scope="module")
def default_model_file():
    """The bundled default model: a tiny random model gives one code everywhere, so a second
    source would change nothing."""
    from spectro_fx.assets import DEFAULT_MODEL, asset_path
    from spectro_fx.models.export import load_model

    return load_model(asset_path(DEFAULT_MODEL))


@pytest.mark.parametrize("case", sorted(CHAINS))
def test_every_built_in_chain_plays_the_same_in_the_engine_and_the_exported_module(prior_model, rng, case):
    """Same seed, same output, sampled draws included; knobs move mid-stream in both."""
    chain, values = CHAINS[case]
    values = {"low_hz": 200.0, "high_hz": 9000.0, **values}
    x = _signal(rng, 20000, 2)
    engine = Engine(prior_model, sr=SR, channels=2, chain=chain, values=values, seed=11)
    assert engine.fused
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.script(ScriptedEffect(prior_model, chain=chain.split(","), values=values, channels=2, seed=11))
    expected, got = [], []
    for i, start in enumerate(range(0, len(x), 256)):
        if i == 30:
            engine.set("high_hz", 3000.0)
            module.set_high_hz(3000.0)
        if i == 40 and "inpaint" in chain:  # a smoothed effect parameter ramps alike
            engine.set("inpaint.temperature", 0.5)
            module.set_inpaint_temperature(0.5)
        expected.append(engine.process(x[start : start + 256]))
        got.append(_module_run(module, x[start : start + 256], 256))
    expected, got = np.concatenate(expected), np.concatenate(got)
    delayed = np.concatenate([np.zeros((engine.latency_samples, 2), np.float32), x])[: len(x)]
    assert np.max(np.abs(expected - delayed)) > 1e-3  # the effect is heard
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("model, chain, values", [
    ("prior_model", "noise", {"noise.amount": 0.5}),
    ("prior_model", "dropout", {"dropout.channels": 1}),
    ("default_model_file", "inpaint", {"inpaint.temperature": 0.0}),  # tiny models copy one code everywhere
    ("default_model_file", "inpaint", {"inpaint.temperature": 0.0, "inpaint.axis": "freq", "inpaint.radius": 1}),
    ("prior_model", "inpaint", {"inpaint.temperature": 0.0, "inpaint.method": "learned"}),
    ("prior_model", "noise,dropout", {"noise.amount": 0.3, "dropout.channels": 2}),
])
def test_the_split_step_plays_as_the_fused_step(request, rng, model, chain, values):
    """The built-in plugins between the step's halves (as a chain with a third-party effect runs)
    give the fused step's output: noise's keyed draws alike, inpainting at temperature 0 through
    the numpy naive Bayes (the reference) alike."""
    prior_model = request.getfixturevalue(model)
    values = {"low_hz": 150.0, "high_hz": 12000.0, **values}
    x = _signal(rng, 16000, 1)
    fused = Engine(prior_model, sr=SR, channels=1, chain=chain, values=values, seed=3)
    split = Engine(prior_model, sr=SR, channels=1, chain=chain, values=values, seed=3, fuse=False)
    assert fused.fused and not split.fused
    out = _engine_run(fused, x, 300)
    np.testing.assert_allclose(_engine_run(split, x, 300), out, atol=1e-5)
    plain = _engine_run(Engine(prior_model, sr=SR, channels=1, values={"low_hz": 150.0, "high_hz": 12000.0}), x, 300)
    assert np.max(np.abs(out - plain)) > 1e-4  # well above the tolerance: the effect is heard


def test_cross_plays_alike_fused_and_split(default_model_file, rng):
    x = _signal(rng, 12000, 1)
    t = np.arange(len(x)) / SR
    aux = (0.3 * np.sign(np.sin(2 * np.pi * 110 * t)))[:, None].astype(np.float32)
    values = {"cross.amount": 0.5, "low_hz": 300.0, "high_hz": 6000.0}
    fused = Engine(default_model_file, sr=SR, channels=1, chain="cross", values=values, aux_channels=1, seed=4)
    split = Engine(default_model_file, sr=SR, channels=1, chain="cross", values=values, aux_channels=1, seed=4, fuse=False)
    np.testing.assert_allclose(_engine_run(split, x, 512, aux), _engine_run(fused, x, 512, aux), atol=1e-5)


class _Tap(Effect):
    """A third-party effect that changes nothing and notes the histories it is shown."""

    name = "tap"

    def __init__(self):
        super().__init__()
        self.seen = []

    def process_codes(self, codes, region, ctx):
        self.seen.append((ctx.first_column, ctx.history[..., -1:].clone()))
        return codes


def test_a_third_party_effect_splits_the_step_and_the_built_ins_draw_as_fused(prior_model, rng):
    from spectro_fx.effect.plugins.codemap_effects import Noise

    x = _signal(rng, 12000, 1)
    values = {"low_hz": 100.0, "high_hz": 10000.0, "noise.amount": 0.5}
    tap = _Tap()
    mixed = Engine(prior_model, sr=SR, channels=1, chain=[tap, Noise()], values=values, seed=9)
    assert not mixed.fused and not is_builtin(tap) and is_builtin(mixed.chain[1])
    fused = Engine(prior_model, sr=SR, channels=1, chain="noise", values=values, seed=9)
    np.testing.assert_allclose(_engine_run(mixed, x, 200), _engine_run(fused, x, 200), atol=1e-5)
    columns = [first for first, _ in tap.seen]
    assert columns == list(range(len(columns))) and len(columns) > 20


def test_switching_inpaint_context_moves_between_fused_and_split_on_one_history(prior_model, rng):
    """context=output runs the naive Bayes plugin on the chain's own output; the histories live
    in the step, so a switch mid-stream continues the same stream."""
    x = _signal(rng, 24000, 1)
    engine = Engine(prior_model, sr=SR, channels=1, chain="inpaint", values={"low_hz": 300.0, "high_hz": 5000.0}, seed=2)
    assert engine.fused
    first = _engine_run(engine, x[:8000], 256)
    engine.set("inpaint.context", "output")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        second = _engine_run(engine, x[8000:16000], 256)
    assert not engine.fused
    history = engine._step.history
    assert history.shape[2] == Engine.HISTORY_COLUMNS
    engine.set("inpaint.context", "input")
    third = _engine_run(engine, x[16000:], 256)
    assert engine.fused
    out = np.concatenate([first, second, third])
    assert np.isfinite(out).all() and np.max(np.abs(out)) < 4.0


def test_an_empty_region_still_walks_the_ramps(prior_model, rng):
    """A smoothed effect parameter set while the band is empty has landed when the band opens,
    in the engine and the module alike."""
    x = _signal(rng, 30000, 1)
    values = {"low_hz": 5000.0, "high_hz": 1000.0, "inpaint.temperature": 0.0}
    engine = Engine(prior_model, sr=SR, channels=1, chain="inpaint", values=values)
    engine.set("inpaint.temperature", 3.0)
    _engine_run(engine, x[:12000], 256)
    assert engine._step.effect_ramps.value[INDEX["inpaint.temperature"] - 5] == 3.0


@pytest.fixture(scope="module")
def neural_model(prior_model, tmp_path_factory):
    """The tiny prior model with a random neural prior (weights wide enough to prefer codes)."""
    from spectro_fx.models.export import load_model, with_neural_prior
    from spectro_fx.models.neural_prior import NeuralPrior

    torch.manual_seed(5)
    net = NeuralPrior(n_rows=int(prior_model.module.n_rows), codebook_size=int(prior_model.module.codebook_size),
                      context_columns=3, embed_dim=4, hidden=8, dilations=[1])
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.7)
    return load_model(with_neural_prior(prior_model, net.eval(), tmp_path_factory.mktemp("step") / "neural.pt"))


def test_the_neural_prior_runs_fused_as_its_plugin_and_as_the_exported_module(neural_model, rng):
    values = {"low_hz": 150.0, "high_hz": 12000.0, "inpaint.method": "neural"}
    x = _signal(rng, 16000, 2)
    greedy = {**values, "inpaint.temperature": 0.0}
    fused = Engine(neural_model, sr=SR, channels=2, chain="noise,inpaint", values={**greedy, "noise.amount": 0.2}, seed=3)
    split = Engine(neural_model, sr=SR, channels=2, chain="noise,inpaint", values={**greedy, "noise.amount": 0.2}, seed=3,
                   fuse=False)
    assert fused.fused
    out = _engine_run(fused, x, 300)
    np.testing.assert_allclose(_engine_run(split, x, 300), out, atol=1e-5)
    spatial = Engine(neural_model, sr=SR, channels=2, chain="noise,inpaint", seed=3,
                     values={**greedy, "noise.amount": 0.2, "inpaint.method": "spatial"})
    assert np.max(np.abs(out - _engine_run(spatial, x, 300))) > 1e-4  # the neural prior is what plays
    sampled = {**values, "inpaint.temperature": 1.0}
    engine = Engine(neural_model, sr=SR, channels=2, chain="inpaint", values=sampled, seed=8)
    split = Engine(neural_model, sr=SR, channels=2, chain="inpaint", values=sampled, seed=8, fuse=False)
    np.testing.assert_allclose(_engine_run(split, x, 700), _engine_run(engine, x, 700), atol=1e-5)  # sampled alike
    engine.reset()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.script(ScriptedEffect(neural_model, chain=["inpaint"], values=sampled, channels=2, seed=8))
    np.testing.assert_allclose(_module_run(module, x, 512), _engine_run(engine, x, 512), atol=1e-5)
