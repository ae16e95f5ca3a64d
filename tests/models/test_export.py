import json
import zipfile

import pytest
import torch

from spectro_fx.models import ModelFileError
from spectro_fx.models.export import FORMAT_VERSION, Prior, export_model, load_model
from spectro_fx.models.vqvae import VQVAE, decoder_receptive_field_columns, receptive_field_frames


@pytest.fixture
def trained(tiny_config):
    model = VQVAE(tiny_config)
    model.train()
    for _ in range(3):
        model(torch.rand(4, tiny_config.stft.n_bins, 16) + 0.01)
    return model.eval()


def test_scripted_equals_eager(trained, tmp_path):
    path = export_model(trained, tmp_path / "m.pt", data_description="unit test notes")
    loaded = load_model(path)
    mod = loaded.module
    x = torch.rand(2, trained.cfg.stft.n_bins, 16) + 0.01
    with torch.no_grad():
        out = trained(x)
        codes = mod.encode(x)
        assert torch.equal(codes, out.codes)
        eager_mag = trained.normalizer.inverse(out.reconstruction)
        torch.testing.assert_close(mod.decode(codes), eager_mag, atol=1e-5, rtol=1e-5)
        latent = mod.embed(codes)
        assert latent.shape == (2, trained.cfg.code_dim, trained.cfg.n_rows, 4)
        torch.testing.assert_close(mod.decode_latent(latent), mod.decode(codes))
        torch.testing.assert_close(mod.decode_latent(latent, 1), mod.decode(codes)[..., -4:])


def test_metadata_survives(trained, tmp_path):
    k = trained.cfg.codebook_size
    prior = Prior(
        offsets=torch.tensor([[-1, 0], [0, -1]]),
        class_log_prior=torch.log_softmax(torch.randn(k), 0),
        feature_log_prob=torch.log_softmax(torch.randn(2, k, k + 1), -1),
        alpha=0.5,
    )
    path = export_model(trained, tmp_path / "m.pt", data_description="FluidR3 notes", prior=prior, metadata={"steps": 3})
    loaded = load_model(path)
    mod = loaded.module
    cfg = trained.cfg
    assert loaded.config == cfg
    assert loaded.metadata == {"format_version": FORMAT_VERSION, "steps": 3}
    assert (mod.sample_rate, mod.n_fft, mod.hop_length, mod.win_length, mod.window) == (
        cfg.stft.sr, cfg.stft.n_fft, cfg.stft.hop_length, cfg.stft.win_length, cfg.stft.window)
    assert (mod.time_stride, mod.freq_stride, mod.codebook_size) == (cfg.time_stride, cfg.freq_stride, k)
    assert mod.receptive_field_frames == receptive_field_frames(cfg)
    assert mod.decoder_receptive_field_columns == decoder_receptive_field_columns(cfg)
    assert mod.data_description == "FluidR3 notes"
    restored = loaded.prior()
    assert restored is not None and restored.alpha == 0.5
    torch.testing.assert_close(restored.feature_log_prob, prior.feature_log_prob)
    assert torch.equal(restored.offsets, prior.offsets)


def test_no_prior_by_default(trained, tmp_path):
    assert load_model(export_model(trained, tmp_path / "m.pt")).prior() is None


def test_missing_file(tmp_path):
    with pytest.raises(ModelFileError, match="does not exist"):
        load_model(tmp_path / "nope.pt")


def test_corrupted_file_is_refused(trained, tmp_path):
    path = export_model(trained, tmp_path / "m.pt")
    data = bytearray(path.read_bytes())
    data[len(data) // 3 : len(data) // 3 + 2000] = b"\0" * 2000
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match=str(path.name)):
        load_model(path)


def test_a_flipped_bit_in_the_weights_is_refused(trained, tmp_path):
    """torch.jit.load does not check CRC-32: without load_model's own check this file loads."""
    import struct

    path = export_model(trained, tmp_path / "m.pt")
    data = bytearray(path.read_bytes())
    info = next(i for i in zipfile.ZipFile(path).infolist() if "/data/" in i.filename and i.file_size >= 64)
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26 : info.header_offset + 30])
    data[info.header_offset + 30 + name_len + extra_len + 5] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match=r"m.pt is damaged: data/\d+ fails its CRC-32 check"):
        load_model(path)


def test_not_a_zip_is_refused(tmp_path):
    path = tmp_path / "song.wav"
    path.write_bytes(b"RIFF....WAVEfmt " + bytes(100))
    with pytest.raises(ModelFileError, match="not a TorchScript archive"):
        load_model(path)


def test_state_dict_is_refused(trained, tmp_path):
    path = tmp_path / "state.pt"
    torch.save(trained.state_dict(), path)
    with pytest.raises(ModelFileError, match="state dict"):
        load_model(path)


def test_other_format_version_is_refused(trained, tmp_path, monkeypatch):
    from spectro_fx.models import export

    monkeypatch.setattr(export, "FORMAT_VERSION", FORMAT_VERSION + 1)
    path = export.export_model(trained, tmp_path / "future.pt")
    monkeypatch.undo()
    with pytest.raises(ModelFileError, match=f"format_version={FORMAT_VERSION + 1}"):
        load_model(path)


def test_foreign_torchscript_names_missing_attributes(tmp_path):
    path = tmp_path / "other.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(path))
    with pytest.raises(ModelFileError, match="missing format_version"):
        load_model(path)


def test_export_is_atomic(trained, tmp_path, monkeypatch):
    target = tmp_path / "m.pt"
    target.write_bytes(b"previous")

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch.jit, "save", broken_save)
    with pytest.raises(OSError):
        export_model(trained, target)
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]


def test_config_json_in_archive(trained, tmp_path):
    path = export_model(trained, tmp_path / "m.pt")
    with zipfile.ZipFile(path) as z:
        name = next(n for n in z.namelist() if n.endswith("extra/config.json"))
        assert json.loads(z.read(name))["codebook_size"] == trained.cfg.codebook_size


def test_rebuild_module_is_the_file_in_this_versions_code(trained, tmp_path):
    """The engine runs a file's weights in this version's network: same codes, magnitudes,
    code usage and streams as the file's own scripted module."""
    from spectro_fx.models.export import rebuild_module

    loaded = load_model(export_model(trained, tmp_path / "m.pt"))
    rebuilt = rebuild_module(loaded.module, loaded.config)
    x = torch.rand(2, trained.cfg.stft.n_bins, 16) + 0.01
    with torch.no_grad():
        codes = loaded.module.encode(x)
        assert torch.equal(rebuilt.encode(x), codes)
        torch.testing.assert_close(rebuilt.decode(codes), loaded.module.decode(codes), atol=1e-6, rtol=1e-6)
        assert torch.equal(rebuilt.code_log_prior, loaded.module.code_log_prior)
        rebuilt.reset_stream()
        loaded.module.reset_stream()
        latent = rebuilt.embed(codes)
        torch.testing.assert_close(rebuilt.stream_encode_latent(x), loaded.module.stream_encode_latent(x), atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(
            rebuilt.stream_decode_latent(latent, 0, -1, 0), loaded.module.stream_decode_latent(latent, 0, -1, 0),
            atol=1e-6, rtol=1e-6,
        )


def test_use_precision_runs_the_network_in_bfloat16_behind_float32_methods(trained, tmp_path):
    """bfloat16 weights, float32 in and out of every method, codes mostly those of float32
    (8 bits of mantissa move a few latents across a boundary) and magnitudes close."""
    from spectro_fx.models.export import rebuild_module

    loaded = load_model(export_model(trained, tmp_path / "m.pt"))
    half = rebuild_module(loaded.module, loaded.config)
    half.use_precision(torch.bfloat16)
    assert half.decoder.trunk[0].conv.weight.dtype == torch.bfloat16
    scripted = torch.jit.script(half)
    x = torch.rand(2, trained.cfg.stft.n_bins, 64) + 0.01
    with torch.no_grad():
        full_latent = loaded.module.encode_latent(x)
        latent = scripted.encode_latent(x)
        assert latent.dtype == torch.float32
        assert 0 < float((latent - full_latent).abs().max()) < 0.05 * float(full_latent.abs().max())
        codes = loaded.module.encode(x)
        assert float((scripted.encode(x) == codes).float().mean()) > 0.9
        mag, full_mag = scripted.decode(codes), loaded.module.decode(codes)
        assert mag.dtype == torch.float32
        assert float((mag.log() - full_mag.log()).abs().max()) < 0.1  # within 10 % everywhere
