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
    from spectro_fx.training.fit import CHECKPOINT_NAME, CONFIG_NAME, DataConfig, RunConfig, TrainConfig, save_checkpoint

    sr = model.cfg.stft.sr
    audio_dir = tmp_path / "audio"
    audio_dir.mkdir()
    for i, clip in enumerate(chirps(sr)):
        sf.write(audio_dir / f"note{i}.wav", clip, sr, subtype="FLOAT")
    run = tmp_path / "run"
    run.mkdir()
    config = RunConfig(model=model.cfg, train=TrainConfig(), data=DataConfig(path=str(audio_dir)))
    (run / CONFIG_NAME).write_text(json.dumps(config.to_dict()))
    save_checkpoint({"step": 3, "model": model.state_dict(), "config": json.dumps(config.to_dict()),
                     "data_description": "chirps"}, run / CHECKPOINT_NAME)

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
