"""Bundled models by name: `--model NAME` finds them, a file of that name wins, and an unknown
value is named in the error with the bundled names."""

from __future__ import annotations

import pytest

from spectro_fx.assets import BUNDLED_MODELS, DEFAULT_MODEL, asset_path, model_path
from spectro_fx.effect.io.cli import main
from spectro_fx.effect.io.render import resolve_model
from spectro_fx.models.errors import ModelFileError


def test_every_bundled_model_is_installed_and_loads():
    assert BUNDLED_MODELS["default"] == DEFAULT_MODEL
    for name, file in BUNDLED_MODELS.items():
        assert model_path(name) == asset_path(file)
        assert resolve_model(name).path == asset_path(file)
    assert model_path(None) == asset_path(DEFAULT_MODEL)


def test_a_file_of_that_name_wins(tmp_path, monkeypatch, tiny_model_path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "default").write_bytes(tiny_model_path.read_bytes())
    assert model_path("default").resolve() == (tmp_path / "default").resolve()
    assert resolve_model("default").path.resolve() == (tmp_path / "default").resolve()
    assert model_path(None) == resolve_model(None).path == asset_path(DEFAULT_MODEL)  # no --model: the bundled one


def test_unknown_model_names_the_value_and_the_bundled_models(tmp_path, capsys):
    with pytest.raises(ModelFileError, match="model file nosuch does not exist; give a model file or a bundled model: default"):
        resolve_model("nosuch")
    rc = main(["--input", str(asset_path("demo.wav")), "--output", str(tmp_path / "out.wav"), "--model", "nosuch"])
    assert rc != 0
    err = capsys.readouterr().err
    assert "nosuch" in err and ", ".join(BUNDLED_MODELS) in err
    assert not (tmp_path / "out.wav").exists()


def test_list_names_each_bundled_model_with_its_latency(capsys):
    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    assert "bundled models (--model NAME):" in out
    assert "classic_model.pt: 48000 Hz, window 512, hop 128 x 4 per column, latency 895 samples (18.65 ms)" in out
    for name in ("default_model.pt", "low_delay_model.pt"):
        assert f"{name}: 48000 Hz, window 1024/384, hop 96 x 2 per column, latency 479 samples (9.98 ms)" in out
