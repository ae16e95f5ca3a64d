"""The scripted column step kept on disk: a second run loads it and plays the same; a damaged file,
another model's weights or ``off`` never give a wrong step."""

import numpy as np
import pytest
import torch

from spectro_fx.effect.core import step_cache
from spectro_fx.effect.core.step import INDEX, ColumnStep

SETTINGS = dict(streams=1, aux_streams=0, precision="float32", history_columns=64)


def _make(model):
    return lambda: ColumnStep(model, **SETTINGS)


def _render(step, x):
    step.start(1, 0)
    with torch.no_grad():  # as the engine runs it
        return step.process(torch.from_numpy(x), torch.zeros(0, x.shape[1], dtype=torch.float64)).numpy()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(step_cache.CACHE_ENV, str(tmp_path))
    return tmp_path / "steps"


def test_a_second_run_loads_the_saved_step_and_it_plays_the_same(tiny_model, cache, rng, monkeypatch):
    scripted = step_cache.cached_script(_make(tiny_model), model=tiny_model, settings=SETTINGS)
    saved = list(cache.glob("step-*.pt"))
    assert len(saved) == 1
    monkeypatch.setattr(step_cache.torch.jit, "script", lambda *a, **k: pytest.fail("scripted although saved"))
    loaded = step_cache.cached_script(_make(tiny_model), model=tiny_model, settings=SETTINGS)
    assert isinstance(loaded, torch.jit.ScriptModule)
    for step in (scripted, loaded):
        step.set_chain([1], [])  # noise
        step.set_parameter(INDEX["low_hz"], 20.0, True)  # the whole band
        step.set_parameter(INDEX["high_hz"], 24000.0, True)
        step.set_parameter(INDEX["noise.amount"], 0.5, True)
    x = 0.2 * rng.standard_normal((1, 9000))
    np.testing.assert_array_equal(_render(scripted, x), _render(loaded, x))


def test_other_settings_or_weights_make_another_step(tiny_model, prior_model, cache):
    step_cache.cached_script(_make(tiny_model), model=tiny_model, settings=SETTINGS)
    step_cache.cached_script(lambda: ColumnStep(tiny_model, **{**SETTINGS, "streams": 2}), model=tiny_model,
                             settings={**SETTINGS, "streams": 2})
    step_cache.cached_script(_make(prior_model), model=prior_model, settings=SETTINGS)
    assert len(list(cache.glob("step-*.pt"))) == 3
    assert step_cache.model_fingerprint(tiny_model) != step_cache.model_fingerprint(prior_model)


def test_the_fingerprint_ignores_stream_state_but_not_weights(tiny_model):
    before = step_cache.model_fingerprint(tiny_model)
    module = tiny_model.module
    with torch.no_grad():
        module.encode(torch.rand(1, tiny_model.config.stft.n_bins, 8))  # any stream state the file's module kept
    assert step_cache.model_fingerprint(tiny_model) == before
    codebook = module.codebook.clone()
    try:
        with torch.no_grad():
            module.codebook[0, 0] += 1.0
        assert step_cache.model_fingerprint(tiny_model) != before
    finally:
        with torch.no_grad():
            module.codebook.copy_(codebook)


def test_a_damaged_file_is_scripted_anew_and_replaced(tiny_model, cache):
    step_cache.cached_script(_make(tiny_model), model=tiny_model, settings=SETTINGS)
    (saved,) = cache.glob("step-*.pt")
    saved.write_bytes(b"not a TorchScript archive")
    step = step_cache.cached_script(_make(tiny_model), model=tiny_model, settings=SETTINGS)
    assert isinstance(step, torch.jit.ScriptModule)
    assert saved.stat().st_size > 1000
    assert not list(cache.glob(".partial-*"))


def test_off_keeps_nothing_and_an_unwritable_folder_only_costs_the_scripting(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv(step_cache.CACHE_ENV, "off")
    assert step_cache.cache_folder() is None
    assert isinstance(step_cache.cached_script(_make(tiny_model), model=tiny_model, settings=SETTINGS),
                      torch.jit.ScriptModule)
    blocked = tmp_path / "a file"
    blocked.write_text("")
    monkeypatch.setenv(step_cache.CACHE_ENV, str(blocked))  # its steps/ cannot be made
    assert isinstance(step_cache.cached_script(_make(tiny_model), model=tiny_model, settings=SETTINGS),
                      torch.jit.ScriptModule)


def test_the_oldest_steps_go_beyond_the_kept_number(tiny_model, cache, monkeypatch):
    monkeypatch.setattr(step_cache, "KEEP", 2)
    for history in (8, 16, 32):
        settings = {**SETTINGS, "history_columns": history}
        step_cache.cached_script(lambda h=history: ColumnStep(tiny_model, **{**SETTINGS, "history_columns": h}),
                                 model=tiny_model, settings=settings)
    assert len(list(cache.glob("step-*.pt"))) == 2


def test_engines_of_a_new_process_play_as_before(tiny_model_path, cache, rng, tmp_path):
    """Through the engine: a step loaded from the folder (as a second run's) renders as a scripted one."""
    import subprocess
    import sys

    script = (
        "import sys, numpy as np, warnings\n"
        "warnings.simplefilter('ignore')\n"
        "from spectro_fx.models.export import load_model\n"
        "from spectro_fx.effect.core.engine import Engine\n"
        "x = np.load(sys.argv[2])\n"
        "engine = Engine(load_model(sys.argv[1]), sr=48000, channels=1, chain='noise', seed=3,\n"
        "                values={'noise.amount': 0.5, 'low_hz': 100.0, 'high_hz': 9000.0})\n"
        "np.save(sys.argv[3], engine.process(x))\n"
    )
    x = (0.2 * rng.standard_normal((12000, 1))).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    outs = []
    for run in range(2):
        subprocess.run([sys.executable, "-c", script, str(tiny_model_path), str(tmp_path / "x.npy"),
                        str(tmp_path / f"y{run}.npy")], check=True, timeout=300)
        outs.append(np.load(tmp_path / f"y{run}.npy"))
        assert len(list(cache.glob("step-*.pt"))) == 1
    np.testing.assert_array_equal(outs[0], outs[1])
    assert np.abs(outs[0]).max() > 0.0
