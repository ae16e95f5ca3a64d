import dataclasses
import json

import numpy as np
import pytest
import soundfile as sf
import torch

from spectro_fx.models import ParameterError
from spectro_fx.models.naive_bayes import DEFAULT_PRIOR_OFFSETS, fit_categorical_prior
from spectro_fx.training.prior import PRIOR_NAME, codemaps_of_audio, fit_prior, parse_offsets, save_prior


def chirps(sr, *, count=3, seconds=0.4):
    t = np.arange(int(sr * seconds)) / sr
    return [(0.3 * np.sin(2 * np.pi * (200.0 * (i + 1) * t + 1000 * t**2))).astype(np.float32) for i in range(count)]


@pytest.fixture
def model(tiny_config):
    from spectro_fx.models.spectral import magnitude
    from spectro_fx.models.vqvae import VQVAE

    vqvae = VQVAE(tiny_config).train()
    mag = magnitude(torch.tensor(np.stack(chirps(tiny_config.stft.sr))), tiny_config.stft)
    with torch.no_grad():
        for _ in range(3):
            vqvae(mag[:, :, : mag.shape[2] // 4 * 4])
    return vqvae.eval()


def test_codemaps_and_fit(model):
    cfg = model.cfg
    clips = chirps(cfg.stft.sr) + [np.zeros(10, dtype=np.float32)]  # too short for a column: skipped
    maps = list(codemaps_of_audio(model, clips))
    assert len(maps) == 3
    columns = (len(clips[0]) // cfg.stft.hop_length) // cfg.time_stride
    assert maps[0].shape == (cfg.n_rows, columns) and maps[0].dtype == np.int64
    before = {k: v.clone() for k, v in model.state_dict().items()}
    prior = fit_prior(model, clips, alpha=0.5)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing updated
    expected = fit_categorical_prior(maps, n_codes=cfg.codebook_size, alpha=0.5)
    k = cfg.codebook_size
    assert prior.feature_log_prob.shape == (len(DEFAULT_PRIOR_OFFSETS), k, k + 1)
    torch.testing.assert_close(prior.feature_log_prob, expected.feature_log_prob)
    torch.testing.assert_close(prior.class_log_prior, expected.class_log_prior)


def test_prior_file_is_plain_tensors(model, tmp_path):
    prior = fit_prior(model, chirps(model.cfg.stft.sr), alpha=2.0)
    path = save_prior(prior, tmp_path / PRIOR_NAME)
    data = torch.load(path, weights_only=True)
    assert set(data) == {"offsets", "class_log_prior", "feature_log_prob", "alpha"}
    assert data["alpha"] == 2.0 and data["offsets"].dtype == torch.long
    assert torch.equal(data["feature_log_prob"], prior.feature_log_prob)
    assert [p.name for p in tmp_path.iterdir()] == [PRIOR_NAME]


def test_parse_offsets():
    assert parse_offsets("-1:0, -2:0,0:-1") == ((-1, 0), (-2, 0), (0, -1))
    with pytest.raises(ParameterError, match="'-1' must be d_column:d_row"):
        parse_offsets("-1")
    with pytest.raises(ParameterError, match="0:0 is the cell itself"):
        parse_offsets("0:0")
    with pytest.raises(ParameterError, match="at least one"):
        parse_offsets(" , ")


def test_cli_writes_the_prior_and_export_carries_it(model, tmp_path, capsys):
    from spectro_fx.models.export import load_model
    from spectro_fx.training.cli import main
    from spectro_fx.training.export_cmd import export_run

    sr = model.cfg.stft.sr
    run, _ = _run_folder(model, tmp_path, seconds=0.4)
    assert main(["prior", str(run), "--alpha", "0.5", "--offsets=-1:0,0:-1"]) == 0
    assert "alpha=0.5" in capsys.readouterr().out
    data = torch.load(run / PRIOR_NAME, weights_only=True)
    assert data["offsets"].tolist() == [[-1, 0], [0, -1]]
    expected = fit_prior(model, chirps(sr), offsets=((-1, 0), (0, -1)), alpha=0.5)
    torch.testing.assert_close(data["feature_log_prob"], expected.feature_log_prob)

    restored = load_model(export_run(run)).prior()
    assert restored is not None and restored.alpha == 0.5
    assert torch.equal(restored.feature_log_prob, data["feature_log_prob"])

    assert main(["prior", str(run), "--alpha", "0"]) == 2
    assert "alpha=0.0 must be > 0" in capsys.readouterr().err


def _run_folder(model, tmp_path, *, seconds=1.0):
    """A training run's folder (config, checkpoint of ``model``) over chirps of ``seconds`` in ``tmp_path / "audio"``."""
    from spectro_fx.training.fit import CHECKPOINT_NAME, CONFIG_NAME, DataConfig, RunConfig, TrainConfig, save_checkpoint

    sr = model.cfg.stft.sr
    audio_dir = tmp_path / "audio"
    audio_dir.mkdir()
    for i, clip in enumerate(chirps(sr, seconds=seconds)):
        sf.write(audio_dir / f"note{i}.wav", clip, sr, subtype="FLOAT")
    run = tmp_path / "run"
    run.mkdir()
    config = RunConfig(model=model.cfg, train=TrainConfig(), data=DataConfig(path=str(audio_dir)))
    (run / CONFIG_NAME).write_text(json.dumps(config.to_dict()))
    save_checkpoint({"step": 3, "model": model.state_dict(), "config": json.dumps(config.to_dict()),
                     "data_description": "chirps"}, run / CHECKPOINT_NAME)
    return run, audio_dir


def test_neural_prior_learns_codemaps_and_round_trips(model, tmp_path):
    from spectro_fx.models.neural_prior import neural_inpaint
    from spectro_fx.training.prior import NeuralPriorTraining, fit_neural_prior, load_neural_prior, save_neural_prior

    # codes that repeat along time: a prior that has learned anything recovers them
    rng = np.random.default_rng(0)
    maps = [np.repeat(rng.integers(0, 16, size=(model.cfg.n_rows, 1)), 40, axis=1) for _ in range(8)]
    settings = NeuralPriorTraining(steps=150, windows=8, columns=4, seed=1)
    logged = []
    net = fit_neural_prior(maps, n_codes=16, settings=settings, config={"hidden": 16, "embed_dim": 4},
                           log=lambda *a: logged.append(a))
    assert len(logged) == 1 and logged[0][0] == 100
    mask = np.zeros(maps[0].shape, dtype=bool)
    mask[1:3, 10:] = True
    filled = neural_inpaint(net, maps[0], mask, context="output")
    assert (filled[mask] == maps[0][mask]).mean() > 0.9
    path = save_neural_prior(net, tmp_path / "neural_prior.pt")
    again = load_neural_prior(path)
    assert again.config_json == net.config_json
    np.testing.assert_array_equal(neural_inpaint(again, maps[0], mask, context="output"), filled)
    with pytest.raises(ParameterError, match="narrower than a training window"):
        fit_neural_prior([maps[0][:, :3]], n_codes=16, settings=settings)

    # a fine-tune starts from the given network (its size and weights) and leaves it as it was
    before = {k: v.clone() for k, v in net.state_dict().items()}
    tuned = fit_neural_prior(maps, n_codes=16, settings=NeuralPriorTraining(steps=1, windows=8, columns=4, lr=1e-12),
                             init=torch.jit.script(net))
    assert tuned.config_json == net.config_json and tuned is not net
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    np.testing.assert_array_equal(neural_inpaint(tuned, maps[0], mask, context="output"), filled)
    with pytest.raises(ParameterError, match="config or by init"):
        fit_neural_prior(maps, n_codes=16, settings=settings, config={"hidden": 8}, init=net)
    with pytest.raises(ParameterError, match="rows of 16 codes; the codemaps have"):
        fit_neural_prior(maps, n_codes=32, settings=settings, init=net)
    with pytest.raises(ParameterError, match="true_history=2"):
        NeuralPriorTraining(true_history=2)


def test_code_levels_follow_the_input_level(model):
    from spectro_fx.training.prior import code_levels

    cfg = model.cfg
    clips = chirps(cfg.stft.sr) + [np.zeros(10, dtype=np.float32)]  # too short for a column: skipped
    maps = list(codemaps_of_audio(model, clips))
    levels = code_levels(model, clips)
    assert levels.shape == (cfg.n_rows, cfg.codebook_size) and np.isfinite(levels).all()
    np.testing.assert_allclose(code_levels(model, clips, codemaps=maps), levels)
    # the same codes 20 dB louder: every figure 20 dB up (unseen codes take the median of seen
    # ones), where the cells are well above the -100 dB floor
    louder = code_levels(model, [10 * c for c in clips], codemaps=maps)
    loud = levels > -60
    assert loud.any()
    assert np.median((louder - levels)[loud]) == pytest.approx(20.0, abs=0.01)
    assert ((louder - levels) > -1e-6).all() and ((louder - levels) < 20 + 1e-6).all()
    with pytest.raises(ParameterError, match="no clip long enough"):
        code_levels(model, [np.zeros(10, dtype=np.float32)])


def test_level_term_compares_band_levels():
    from spectro_fx.training.prior import _level_term

    energy = torch.tensor([[-20.0, -10.0, 0.0]]).expand(2, 3)  # codes 10 dB apart, same in both rows
    cells = torch.tensor([[0, 0], [0, 1], [1, 0]])  # two cells of example 0, one of example 1
    target = torch.tensor([2, 2, 0])
    sure = torch.nn.functional.one_hot(target, 3).float() * 50.0
    assert float(_level_term(sure, target, cells, energy, 2, 0.25)) < 1e-6
    # example 0 predicted 10 dB low (code 1 for code 2), example 1 right: ((-1)^2 + 0) / 2
    low = torch.nn.functional.one_hot(torch.tensor([1, 1, 0]), 3).float()
    assert float(_level_term(50 * low, target, cells, energy, 2, 0.25)) == pytest.approx(0.5, rel=1e-4)
    # and its gradient raises the louder code's logit, lowers the quieter one's
    logits = (0.1 * low).requires_grad_()
    _level_term(logits, target, cells, energy, 2, 0.25).backward()
    assert logits.grad[0, 2] < 0 < logits.grad[0, 0]


def test_level_weight_trains_with_code_levels(model):
    from spectro_fx.training.prior import NeuralPriorTraining, fit_neural_prior

    rng = np.random.default_rng(0)
    maps = [rng.integers(0, 16, size=(model.cfg.n_rows, 40)) for _ in range(4)]
    settings = NeuralPriorTraining(steps=2, windows=4, columns=4, rollout=4, level_weight=1.0)
    with pytest.raises(ParameterError, match="needs the codes' levels"):
        fit_neural_prior(maps, n_codes=16, settings=settings, config={"hidden": 8, "embed_dim": 4})
    levels = rng.uniform(-80, 0, size=16)
    net = fit_neural_prior(maps, n_codes=16, settings=settings, config={"hidden": 8, "embed_dim": 4},
                           code_level_db=levels)
    assert all(torch.isfinite(p).all() for p in net.parameters())
    with pytest.raises(ParameterError, match="level_weight=-1"):
        NeuralPriorTraining(level_weight=-1.0)
    # level_bias: the head's bias tilted by the codes' levels after training, nothing else changed
    plain = NeuralPriorTraining(steps=1, windows=4, columns=4, rollout=4, lr=1e-12)
    tilted = dataclasses.replace(plain, level_bias=0.01)
    a = fit_neural_prior(maps, n_codes=16, settings=plain, init=net)
    b = fit_neural_prior(maps, n_codes=16, settings=tilted, init=net, code_level_db=levels)
    np.testing.assert_allclose((b.head.bias - a.head.bias).detach().numpy(), 0.01 * (levels - levels.mean()),
                               rtol=1e-4, atol=1e-5)
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items() if k != "head.bias")
    # level_input: a network without it gets it (the band's level as an input), trained with the levels
    reading = dataclasses.replace(plain, level_input=True, lr=1e-2)
    with pytest.raises(ParameterError, match="needs the codes' levels"):
        fit_neural_prior(maps, n_codes=16, settings=reading, init=net)
    c = fit_neural_prior(maps, n_codes=16, settings=reading, init=net, code_level_db=levels)
    assert c.level_input and not net.level_input
    np.testing.assert_allclose(c.code_level.numpy(), np.broadcast_to((levels - levels.mean()) / 10, (model.cfg.n_rows, 16)),
                               rtol=1e-5, atol=1e-6)
    assert float(c.row_in.weight.detach()[:, -1].abs().max()) > 0  # trained from zero


def test_training_settings_from_set_items():
    from spectro_fx.training.prior import NeuralPriorTraining, training_settings

    settings = training_settings(["rollout=56", "lr=1e-3", "unknown_start = 0.7"], steps=10, seed=2)
    assert settings == NeuralPriorTraining(steps=10, seed=2, rollout=56, lr=1e-3, unknown_start=0.7)
    assert settings.changed() == "rollout 56, lr 0.001, unknown_start 0.7"
    assert NeuralPriorTraining(steps=5).changed() == ""
    with pytest.raises(ParameterError, match="NAME one of steps, windows"):
        training_settings(["depth=3"])
    with pytest.raises(ParameterError, match="'x' is not a valid int"):
        training_settings(["rollout=x"])
    assert training_settings(["level_input=true"]).level_input and not training_settings(["level_input=off"]).level_input
    assert training_settings(["level_input=yes", "lr=1e-3"]).changed() == "lr 0.001, level_input"
    with pytest.raises(ParameterError, match=r"'maybe' is not a valid bool \(true or false\)"):
        training_settings(["level_input=maybe"])


def test_cli_trains_the_neural_prior_and_export_carries_it(model, tmp_path, capsys):
    from spectro_fx.models.export import export_model, load_model
    from spectro_fx.training.cli import main
    from spectro_fx.training.export_cmd import export_run
    from spectro_fx.training.prior import NEURAL_PRIOR_NAME

    run, audio_dir = _run_folder(model, tmp_path)
    assert main(["prior", str(run), "--method", "neural", "--steps", "3"]) == 0
    assert "neural prior of" in capsys.readouterr().out
    assert (run / NEURAL_PRIOR_NAME).is_file() and not (run / PRIOR_NAME).exists()
    exported = load_model(export_run(run))
    assert exported.neural_prior() is not None and exported.prior() is None
    assert exported.metadata["has_neural_prior"] is True

    # for an existing model file: written anew with it, the rest as it was
    plain = export_model(model, tmp_path / "plain.pt")
    out = tmp_path / "with_neural.pt"
    assert main(["prior", "--method", "neural", "--model", str(plain), "--data", str(audio_dir), "--output", str(out),
                 "--steps", "2"]) == 0
    assert load_model(out).neural_prior() is not None
    # a fine-tune of the file's prior (or of a run's RUN/neural_prior.pt) on other audio
    again = tmp_path / "tuned.pt"
    for init in (out, run / NEURAL_PRIOR_NAME):
        assert main(["prior", "--method", "neural", "--model", str(plain), "--data", str(audio_dir), "--output",
                     str(again), "--steps", "1", "--init", str(init)]) == 0
        assert f"starting from the neural prior of {init.name}" in load_model(again).metadata["neural_prior"]
    assert main(["prior", "--method", "neural", "--model", str(plain), "--data", str(audio_dir), "--output",
                 str(again), "--steps", "1", "--set", "rollout=2", "--set", "windows=4"]) == 0
    assert "(seed 0; windows 4, rollout 2)" in load_model(again).metadata["neural_prior"]
    assert main(["prior", "--method", "neural", "--model", str(plain), "--data", str(audio_dir), "--output",
                 str(again), "--steps", "1", "--set", "level_weight=0.5"]) == 0
    assert "level_weight 0.5" in load_model(again).metadata["neural_prior"]
    assert main(["prior", "--method", "neural", "--model", str(plain), "--data", str(audio_dir), "--output",
                 str(again), "--steps", "1", "--set", "level_input=true"]) == 0
    assert "level_input" in load_model(again).metadata["neural_prior"] and load_model(again).neural_prior().level_input
    assert main(["prior", "--method", "neural", "--model", str(plain), "--data", str(audio_dir), "--output",
                 str(again), "--init", str(plain)]) == 2
    assert "has no neural prior" in capsys.readouterr().err
    assert main(["prior", "--method", "neural", "--model", str(plain)]) == 2
    assert "--model needs --data" in capsys.readouterr().err
