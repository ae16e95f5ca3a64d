"""`spectro-fx-train distill`: a student with fewer channels that keeps the teacher's codes and priors."""

import numpy as np
import pytest
import soundfile as sf
import torch

from spectro_fx.models import ParameterError
from spectro_fx.training.distill import distill, student_config


def chirps(sr, *, count=6, seconds=1.0):
    t = np.arange(int(sr * seconds)) / sr
    rng = np.random.default_rng(0)
    return [(0.3 * np.sin(2 * np.pi * (150.0 * (i + 1) * t + 900 * t**2)) + 0.02 * rng.standard_normal(t.shape))
            .astype(np.float32) for i in range(count)]


@pytest.fixture
def teacher(tiny_config, tmp_path):
    """A tiny model file with both priors, and a folder of the audio it was fitted on."""
    from spectro_fx.models.export import export_model
    from spectro_fx.models.neural_prior import NeuralPrior
    from spectro_fx.models.spectral import magnitude
    from spectro_fx.models.vqvae import VQVAE
    from spectro_fx.training.prior import fit_prior

    torch.manual_seed(0)
    clips = chirps(tiny_config.stft.sr)
    data = tmp_path / "data"
    data.mkdir()
    for i, clip in enumerate(clips):
        sf.write(data / f"chirp{i}.wav", clip, tiny_config.stft.sr)
    model = VQVAE(tiny_config).train()
    mag = magnitude(torch.tensor(np.stack(clips)), tiny_config.stft)
    with torch.no_grad():
        for _ in range(5):
            model(mag[:, :, : mag.shape[2] // 4 * 4])
    model.eval()
    neural = NeuralPrior(n_rows=tiny_config.n_rows, codebook_size=tiny_config.codebook_size, hidden=16, embed_dim=4)
    path = export_model(model, tmp_path / "teacher.pt", prior=fit_prior(model, clips), neural_prior=neural)
    return path, data


def test_a_student_keeps_the_teachers_codes_and_priors_and_learns_its_latents(teacher, tmp_path):
    from spectro_fx.models.export import load_model

    path, data = teacher
    out = tmp_path / "student.pt"
    figures = distill(path, data, out, overrides=["model.channels=[2,4]"], steps=60, lr=5e-3, batch_size=4,
                      segment_frames=16, progress=False)
    # a network of random weights is as far from the latents as their variance, or further
    assert figures["encoder"] < 0.5, figures
    assert 0.0 <= figures["codes"] <= 1.0 and figures["decoder"] > 0.0
    mine, theirs = load_model(out), load_model(path)
    assert tuple(mine.config.channels) == (2, 4) and tuple(theirs.config.channels) == (4, 8)
    assert mine.config.n_rows == theirs.config.n_rows
    assert torch.equal(mine.module.codebook, theirs.module.codebook)
    torch.testing.assert_close(mine.module.code_log_prior, theirs.module.code_log_prior)  # (through the EMA counts)
    assert torch.equal(mine.prior().feature_log_prob, theirs.prior().feature_log_prob)
    mine_net, their_net = mine.neural_prior().state_dict(), theirs.neural_prior().state_dict()
    assert mine_net.keys() == their_net.keys() and all(torch.equal(mine_net[k], their_net[k]) for k in mine_net)
    assert mine.metadata["distilled_from"] == "teacher.pt" and mine.metadata["distill_steps"] == 60
    assert sum(p.numel() for p in mine.module.encoder.parameters()) < sum(p.numel() for p in theirs.module.encoder.parameters())


def test_a_student_may_change_its_network_not_its_codemap(tiny_config):
    assert student_config(tiny_config, ["model.channels=[2,4]", "model.n_res_blocks=0"]).n_res_blocks == 0
    with pytest.raises(ParameterError, match="may set only model.channels, model.freq_kernels"):
        student_config(tiny_config, ["model.code_dim=4"])
    with pytest.raises(ParameterError, match="may set only"):
        student_config(tiny_config, ["train.lr=1e-3"])


def test_the_command_refuses_a_missing_teacher_and_bad_settings_by_name(teacher, tmp_path, capsys):
    from spectro_fx.training.cli import main

    path, data = teacher
    out = tmp_path / "student.pt"
    assert main(["distill", "--teacher", str(tmp_path / "nope.pt"), "--data", str(data), "-o", str(out)]) == 2
    assert "--teacher" in capsys.readouterr().err
    assert main(["distill", "--teacher", str(path), "--data", str(data), "-o", str(out), "--steps", "0"]) == 2
    assert "steps=0" in capsys.readouterr().err
    assert not out.exists()


def test_a_decoder_only_student_keeps_the_teachers_encoder_and_keeps_cell_energy_when_asked(teacher, tmp_path):
    from spectro_fx.models.export import load_model

    path, data = teacher
    runs = {}
    for weight in (0.0, 5.0):
        out = tmp_path / f"decoder{weight}.pt"
        runs[weight] = distill(path, data, out, overrides=[], steps=40, lr=5e-3, batch_size=4, segment_frames=16,
                               decoder_only=True, energy_weight=weight, progress=False)
        mine, theirs = load_model(out), load_model(path)
        assert runs[weight]["codes"] == 1.0 and runs[weight]["encoder"] == 0.0
        mine_state, their_state = mine.module.encoder.state_dict(), theirs.module.encoder.state_dict()
        assert all(torch.equal(mine_state[k], their_state[k]) for k in their_state)  # the codes stay the teacher's
        assert torch.equal(mine.module.codebook, theirs.module.codebook)
        assert any(not torch.equal(a, b) for a, b in zip(mine.module.decoder.state_dict().values(),
                                                          theirs.module.decoder.state_dict().values()))
        assert mine.metadata["distill_decoder_only"] is True and mine.metadata["distill_energy_weight"] == weight
        assert mine.module.data_description.startswith(theirs.module.data_description)
        assert "its decoder 40 more steps on" in mine.module.data_description
    # the term lifts what an L1 on log magnitude leaves below the input (this teacher's decoder far
    # below: about -37 dB after 40 steps without the term, -35 with it)
    assert runs[5.0]["level_db"] > runs[0.0]["level_db"] + 1.0, runs


def test_the_cell_energy_error_is_the_log_ratio_of_each_cells_energy(tiny_config):
    from spectro_fx.training.fit import cell_energy_error

    rng = np.random.default_rng(0)
    frames = 4 * tiny_config.time_stride
    mag = torch.from_numpy(rng.uniform(10.0, 20.0, (2, tiny_config.stft.n_bins, frames))).float()
    assert float(cell_energy_error(mag, mag, tiny_config)) == 0.0
    # twice the magnitude: four times the energy in every cell
    assert float(cell_energy_error(2 * mag, mag, tiny_config)) == pytest.approx(np.log(4.0), rel=1e-3)
    # a decoder that leaves a cell silent is as far off as the cell is loud (up to the floor)
    silent = mag.clone()
    silent[:, :8] = 0.0
    assert float(cell_energy_error(silent, mag, tiny_config)) > float(cell_energy_error(0.5 * mag, mag, tiny_config))


def test_a_decoder_only_student_refuses_a_new_network_and_a_negative_weight(teacher, tmp_path):
    path, data = teacher
    out = tmp_path / "student.pt"
    with pytest.raises(ParameterError, match="keeps the teacher's network"):
        distill(path, data, out, overrides=["model.channels=[2,4]"], steps=2, decoder_only=True, progress=False)
    with pytest.raises(ParameterError, match="energy_weight=-0.1"):
        distill(path, data, out, overrides=[], steps=2, energy_weight=-0.1, progress=False)
    assert not out.exists()
