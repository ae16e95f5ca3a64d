"""`spectro-fx-train export`: run folder -> model file -> load_model round trip, prior included."""

import pytest
import torch

from spectro_fx.models.errors import ParameterError
from spectro_fx.models.export import load_model
from spectro_fx.training.cli import main
from spectro_fx.training.export_cmd import export_run
from spectro_fx.models.runtime import torch_threads
from spectro_fx.training.fit import model_from_run, train

from .test_fit import tiny_run_config, write_tones


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    import numpy as np

    from spectro_fx.models import STFTConfig, VQVAEConfig

    tiny = VQVAEConfig(
        stft=STFTConfig(sr=16000, n_fft=128, hop_length=32, win_length=128),
        channels=(4, 8), freq_strides=(2, 2), time_strides=(2, 2), freq_kernels=(4, 4),
        code_dim=8, codebook_size=16,
    )
    root = tmp_path_factory.mktemp("export")
    tones = write_tones(root / "tones", np.random.default_rng(0), count=8)
    with torch_threads(1):  # module-scoped: the autouse fixture is not active yet
        train(tiny_run_config(tiny, tones, steps=6, checkpoint_every=3), root / "run", progress=False)
    return root / "run"


@pytest.fixture
def run_dir(trained_run, tmp_path):
    import shutil

    return shutil.copytree(trained_run, tmp_path / "run")


def test_export_round_trip(run_dir, tiny_config):
    assert main(["export", str(run_dir)]) == 0
    loaded = load_model(run_dir / "model.pt")
    assert loaded.config == tiny_config
    assert loaded.metadata["step"] == 6 and loaded.metadata["train_config"]["train"]["steps"] == 6
    data_path = loaded.metadata["train_config"]["data"]["path"]
    assert data_path and "/" not in data_path  # the folder by name, not the training machine's path
    assert "tones" in loaded.module.data_description and not loaded.module.has_prior
    model, _ = model_from_run(run_dir)
    mag = torch.rand(2, tiny_config.stft.n_bins, 16) + 1e-3
    with torch.no_grad():
        out = model(mag)
        codes = loaded.module.encode(mag)
        assert torch.equal(codes, out.codes)
        torch.testing.assert_close(loaded.module.decode(codes), model.normalizer.inverse(out.reconstruction), atol=1e-5, rtol=1e-5)


def test_export_includes_prior(run_dir, tiny_config, tmp_path):
    k = tiny_config.codebook_size
    prior = {
        "offsets": torch.tensor([[-1, 0], [0, -1]]),
        "class_log_prior": torch.log_softmax(torch.randn(k), 0),
        "feature_log_prob": torch.log_softmax(torch.randn(2, k, k + 1), -1),
        "alpha": 0.5,
    }
    torch.save(prior, run_dir / "prior.pt")
    path = export_run(run_dir, tmp_path / "with_prior.pt")
    loaded = load_model(path)
    got = loaded.prior()
    assert got is not None and got.alpha == 0.5
    assert torch.equal(got.offsets, prior["offsets"])
    torch.testing.assert_close(got.feature_log_prob, prior["feature_log_prob"])
    assert not load_model(export_run(run_dir, tmp_path / "no_prior.pt", include_prior=False)).module.has_prior

    torch.save({**prior, "class_log_prior": torch.zeros(k + 1)}, run_dir / "prior.pt")
    with pytest.raises(ParameterError, match="another codebook size"):
        export_run(run_dir, tmp_path / "bad.pt")
    torch.save({"offsets": prior["offsets"]}, run_dir / "prior.pt")
    with pytest.raises(ParameterError, match="lacks class_log_prior"):
        export_run(run_dir, tmp_path / "bad.pt")
    assert not (tmp_path / "bad.pt").exists()


def test_export_refuses_non_run(tmp_path):
    with pytest.raises(ParameterError, match="not a run folder"):
        export_run(tmp_path)
    assert main(["export", str(tmp_path)]) == 2
