"""The engine with its network in ONNX Runtime plays as the engine with the scripted step: every
built-in chain, stereo, knobs moving, odd blocks, a switch to the split path and back, a reset."""

import warnings

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from spectro_fx.effect.core.engine import Engine  # noqa: E402
from spectro_fx.effect.core.runtime_step import resolve_runtime  # noqa: E402
from spectro_fx.models.errors import ParameterError  # noqa: E402

SR = 48000


def _signal(rng, frames, channels):
    t = np.arange(frames) / SR
    tone = 0.3 * np.sin(2 * np.pi * (300 * t + 900 * t**2))
    return (tone[:, None] + 0.05 * rng.standard_normal((frames, channels))).astype(np.float32)


def _play(engine, x, blocks, moves=()):
    """``x`` through ``engine`` in blocks cycling through ``blocks``; ``moves``: (block index, name, value)."""
    out, start, i = [], 0, 0
    while start < len(x):
        for index, name, value in moves:
            if index == i:
                engine.set(name, value)
        n = blocks[i % len(blocks)]
        out.append(engine.process(x[start : start + n]))
        start, i = start + n, i + 1
    return np.concatenate(out)


@pytest.fixture(scope="module")
def default_model_file():
    from spectro_fx.effect.io.render import resolve_model

    return resolve_model("default")


CHAINS = {
    "none": ("none", {}),
    "noise": ("noise", {"noise.amount": 0.4}),
    "inpaint spatial, sampled": ("inpaint", {"inpaint.temperature": 1.0}),
    "inpaint learned, greedy": ("inpaint", {"inpaint.method": "learned", "inpaint.temperature": 0.0}),
    "noise, gated, wet moving": ("noise", {"noise.amount": 0.4, "period_s": 0.1, "duty": 0.5, "wet": 0.7}),
    "noise, inpaint, dropout": ("noise,inpaint,dropout", {"noise.amount": 0.2, "inpaint.temperature": 1.0,
                                                          "dropout.channels": 2}),
}


@pytest.mark.parametrize("case", sorted(CHAINS))
def test_every_built_in_chain_plays_alike_in_both_runtimes(prior_model, rng, case):
    chain, values = CHAINS[case]
    values = {"low_hz": 200.0, "high_hz": 9000.0, **values}
    x = _signal(rng, 24000, 2)
    moves = [(20, "high_hz", 3000.0), (30, "wet", 0.3), (45, "low_hz", 20.0), (45, "high_hz", 24000.0)]
    outs = {}
    for runtime in ("torchscript", "onnxruntime"):
        engine = Engine(prior_model, sr=SR, channels=2, chain=chain, values=values, seed=7, runtime=runtime)
        assert engine.runtime == runtime and engine.fused
        outs[runtime] = _play(engine, x, [128, 300, 77, 1000], moves)
    delayed = np.concatenate([np.zeros((engine.latency_samples, 2), np.float32), x])[: len(x)]
    if chain != "none":
        assert np.max(np.abs(outs["torchscript"] - delayed)) > 1e-3  # the effect is heard
    np.testing.assert_allclose(outs["onnxruntime"], outs["torchscript"], atol=1e-5)


def test_the_default_model_with_its_neural_prior_plays_alike_in_both_runtimes(default_model_file, rng):
    """One column a call, the band standing still for more columns than the engine mixes keyed
    uniforms ahead (before and after a move), at temperature 1: as the step."""
    from spectro_fx.effect.core.runtime_step import _DRAWS_AHEAD

    model = default_model_file
    x = _signal(rng, 38400, 1)  # 200 columns: the band moves at the 40th
    assert 200 - 40 > 2 * _DRAWS_AHEAD
    values = {"low_hz": 200.0, "high_hz": 8000.0, "inpaint.temperature": 1.0}
    outs = {runtime: _play(Engine(model, sr=SR, channels=1, chain="inpaint", values=values, seed=3, runtime=runtime),
                           x, [128], [(60, "high_hz", 2000.0)])
            for runtime in ("torchscript", "onnxruntime")}
    np.testing.assert_allclose(outs["onnxruntime"], outs["torchscript"], atol=1e-5)


def test_inpainting_run_outside_the_step_plays_as_the_step_through_every_change(default_model_file, rng):
    """The neural prior and the spatial naive Bayes run outside the scripted step: stereo, blocks
    of one to several columns, the temperature ramping, the method switched to spatial (its
    neighbourhood changed) and back, the band moving, a stretch on the split path: as the step."""
    x = _signal(rng, 33600, 2)
    values = {"low_hz": 300.0, "high_hz": 6000.0, "inpaint.temperature": 1.0}
    moves = [(15, "inpaint.temperature", 0.3), (30, "inpaint.method", "spatial"), (35, "inpaint.axis", "freq"),
             (38, "inpaint.axis", "time"), (41, "inpaint.radius", 3), (43, "inpaint.axis", "both"),
             (45, "inpaint.method", "neural"),
             (55, "high_hz", 12000.0), (70, "inpaint.context", "output"), (85, "inpaint.context", "input"),
             (100, "inpaint.temperature", 0.0)]
    outs, engines = {}, {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for runtime in ("torchscript", "onnxruntime"):
            engines[runtime] = Engine(default_model_file, sr=SR, channels=2, chain="inpaint", values=values, seed=5,
                                      runtime=runtime)
            outs[runtime] = _play(engines[runtime], x, [128, 700, 1, 383], moves)
    assert engines["onnxruntime"]._runtime_step._inpaint == ("neural",)  # the last columns ran outside the step
    delayed = np.concatenate([np.zeros((engines["onnxruntime"].latency_samples, 2), np.float32), x])[: len(x)]
    assert np.max(np.abs(outs["torchscript"] - delayed)) > 1e-3
    np.testing.assert_allclose(outs["onnxruntime"], outs["torchscript"], atol=1e-5)


def test_a_switch_to_the_split_path_and_back_continues_one_stream(prior_model, rng):
    """``inpaint.context=output`` runs the scripted network; the stream state moves across."""
    x = _signal(rng, 24000, 1)
    values = {"low_hz": 300.0, "high_hz": 5000.0}
    moves = [(30, "inpaint.context", "output"), (70, "inpaint.context", "input")]
    outs = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for runtime in ("torchscript", "onnxruntime"):
            engine = Engine(prior_model, sr=SR, channels=1, chain="inpaint", values=values, seed=2, runtime=runtime)
            outs[runtime] = _play(engine, x, [256], moves)
            assert engine.fused
    np.testing.assert_allclose(outs["onnxruntime"], outs["torchscript"], atol=1e-5)


def test_reset_starts_the_same_stream_again(prior_model, rng):
    x = _signal(rng, 9000, 1)
    engine = Engine(prior_model, sr=SR, channels=1, chain="noise", values={"noise.amount": 0.5}, runtime="onnxruntime")
    first = _play(engine, x, [128])
    engine.reset()
    np.testing.assert_array_equal(_play(engine, x, [128]), first)


def test_runtime_choices_are_checked():
    assert resolve_runtime("torchscript", precision="bfloat16") == "torchscript"
    assert resolve_runtime("auto", precision="bfloat16") == "torchscript"
    assert resolve_runtime("auto", precision="float32") == "onnxruntime"
    with pytest.raises(ParameterError, match="runtime='tensorrt' must be one of torchscript, onnxruntime, auto"):
        resolve_runtime("tensorrt", precision="float32")
    with pytest.raises(ParameterError, match="precision='bfloat16'"):
        resolve_runtime("onnxruntime", precision="bfloat16")


def test_a_decoder_overflow_plays_the_input_magnitude_and_is_counted(prior_model, rng):
    """Non-finite decoded magnitudes never reach the output (the input's magnitude is used there)."""
    x = _signal(rng, 9600, 1)
    values = {"low_hz": 200.0, "high_hz": 9000.0}
    engine = Engine(prior_model, sr=SR, channels=1, values=values, runtime="onnxruntime")
    network = engine._runtime_step.network
    decode = network.decode

    def overflowing(latent, low, high):
        column = decode(latent, low, high)
        return None if column is None else np.full_like(column, np.inf)

    network.decode = overflowing
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        out = _play(engine, x, [256])
    delayed = np.concatenate([np.zeros((engine.latency_samples, 1), np.float32), x])[: len(x)]
    assert engine.model_nonfinite_values > 0 and any("non-finite magnitudes" in str(w.message) for w in said)
    np.testing.assert_allclose(out, delayed, atol=1e-5)  # the input's magnitude with its phase: the input


@pytest.mark.parametrize("values", [{"low_hz": 5000.0, "high_hz": 1000.0}, {"wet": 0.0}])
def test_without_a_region_the_output_is_the_input_delayed_bit_for_bit(prior_model, rng, values):
    x = _signal(rng, 12000, 2)
    engine = Engine(prior_model, sr=SR, channels=2, chain="noise", values={"noise.amount": 1.0, **values},
                    runtime="onnxruntime")
    out = _play(engine, x, [128, 77, 500])
    delayed = np.concatenate([np.zeros((engine.latency_samples, 2), np.float32), x])[: len(x)]
    np.testing.assert_array_equal(out, delayed)


def test_cross_with_a_second_source_plays_alike_in_both_runtimes_through_a_split(default_model_file, rng):
    """The second source is analysed by the step; a switch to the split path and back keeps it."""
    x = _signal(rng, 16000, 1)
    t = np.arange(len(x)) / SR
    aux = (0.3 * np.sign(np.sin(2 * np.pi * 110 * t)))[:, None].astype(np.float32)
    values = {"cross.amount": 0.5, "low_hz": 300.0, "high_hz": 6000.0}
    outs = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for runtime in ("torchscript", "onnxruntime"):
            engine = Engine(default_model_file, sr=SR, channels=1, chain="cross,inpaint", values=values, aux_channels=1,
                            seed=4, runtime=runtime)
            out = []
            for i, start in enumerate(range(0, len(x), 256)):
                if i in (20, 40):
                    engine.set("inpaint.context", "output" if i == 20 else "input")
                out.append(engine.process(x[start : start + 256], aux=aux[start : start + 256]))
            outs[runtime] = np.concatenate(out)
    np.testing.assert_allclose(outs["onnxruntime"], outs["torchscript"], atol=1e-5)


def test_the_keyed_draws_in_numpy_are_the_steps_bit_for_bit(rng):
    import torch

    from spectro_fx.effect.core import builtin
    from spectro_fx.effect.core.runtime_step import _uniforms

    keys = np.concatenate([rng.integers(0, 2**62, 5000), np.arange(64), [2**63 - 1]]).astype(np.int64)
    for seed in (0, 1, 7, 123456789, 2**40 + 3):
        np.testing.assert_array_equal(_uniforms(keys, seed), builtin.uniforms(torch.from_numpy(keys), seed).numpy())


@pytest.mark.parametrize("scale, silent_bins", [(30.0, False), (30.0, True), (0.5, False), (0.5, True)])
def test_the_numpy_synthesis_is_the_scripted_cores_loud_or_quiet(prior_model, rng, scale, silent_bins):
    """The numpy synthesis gives the scripted core's numbers and carries its overlap-add buffer
    alike: decoded 30x the input (every frame loud: the loudness guard scales it) or half of it
    (no frame loud), with and without bins of zero magnitude (no phase there)."""
    import torch

    engine = Engine(prior_model, sr=SR, channels=2, values={"low_hz": 700.0, "high_hz": 3000.0}, runtime="onnxruntime")
    step = engine._runtime_step
    core = step.step.core
    frames, bins = 4, step.n_bins
    spec = rng.standard_normal((2, frames, bins)) + 1j * rng.standard_normal((2, frames, bins))
    if silent_bins:
        spec[:, :, 40:60] = 0.0
    magnitude = np.abs(spec)
    mask = np.zeros((frames, bins))
    mask[:, 20:70] = np.linspace(0.2, 1.0, 50)  # a ramped edge, as the band's
    decoded = (scale * magnitude).astype(np.float32).transpose(0, 2, 1).copy()
    overlap = step._overlap.copy() + rng.standard_normal(step._overlap.shape)
    step._overlap[...] = overlap
    step._pre_roll_left = core.pre_roll_left = 0
    ours = step._synthesise(decoded, spec, magnitude, mask)
    core.synthesis.overlap = torch.from_numpy(overlap)
    core.held_spec = torch.from_numpy(spec.transpose(0, 2, 1).copy())
    core.held_magnitude = torch.from_numpy(magnitude.transpose(0, 2, 1).copy())
    core.held_mask = torch.from_numpy(mask)
    theirs = core.synthesise_decoded(torch.from_numpy(decoded)).numpy()
    energy = (magnitude**2).sum(axis=-1)
    inside = mask * decoded.transpose(0, 2, 1)
    outside = (1.0 - mask) * magnitude
    loud = np.sqrt((inside**2).sum(axis=-1)) + np.sqrt((outside**2).sum(axis=-1)) > step.guard_ratio * np.sqrt(energy)
    assert loud.all() if scale > 1 else not loud.any()
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-9 * np.abs(theirs).max())
    np.testing.assert_allclose(step._overlap, core.synthesis.overlap.numpy(), rtol=0, atol=1e-9 * np.abs(theirs).max())


def test_neural_inpainting_reading_its_own_output_runs_in_the_column_loop_as_the_plugin(default_model_file, rng):
    """``inpaint.context=output`` with the neural prior (the paper's recursion: each column reads
    the columns drawn before it) runs in the network runtime's column loop, not the plugin's split
    path, and plays as the plugin does: stereo, blocks of one to several columns, the temperature
    and the band moving; with ``context=input`` the same stream differs."""
    x = _signal(rng, 28800, 2)
    values = {"low_hz": 300.0, "high_hz": 6000.0, "inpaint.temperature": 1.0, "inpaint.context": "output"}
    moves = [(20, "inpaint.temperature", 0.3), (40, "high_hz", 9000.0), (60, "inpaint.temperature", 0.0)]
    outs, engines = {}, {}
    for runtime in ("torchscript", "onnxruntime"):
        engines[runtime] = Engine(default_model_file, sr=SR, channels=2, chain="inpaint", values=values, seed=7,
                                  runtime=runtime)
        outs[runtime] = _play(engines[runtime], x, [128, 700, 1, 383], moves)
    assert engines["onnxruntime"].fused and not engines["torchscript"].fused
    assert engines["onnxruntime"]._runtime_step._tail_output  # the last columns read their own output
    np.testing.assert_allclose(outs["onnxruntime"], outs["torchscript"], atol=1e-5)
    as_input = Engine(default_model_file, sr=SR, channels=2, chain="inpaint", runtime="onnxruntime", seed=7,
                      values={**values, "inpaint.context": "input"})
    assert np.max(np.abs(_play(as_input, x, [128, 700, 1, 383], moves) - outs["onnxruntime"])) > 1e-3
