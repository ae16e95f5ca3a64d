"""Evaluation metrics: zero on identical audio, ordered on known degradations; the CLI end to end."""

import json

import numpy as np
import pytest
import scipy.signal
import soundfile as sf

from spectro_fx.models.errors import ParameterError
from spectro_fx.training.cli import main
from spectro_fx.training.evaluate import METRICS, audio_metrics, codebook_health, mel_distance

SR = 48000


@pytest.fixture
def note(rng):
    """A decaying harmonic note with a little noise, 1 s at 48 kHz."""
    t = np.arange(SR) / SR
    tone = sum(np.sin(2 * np.pi * 220 * k * t + rng.uniform(0, 6)) / k for k in range(1, 20))
    return 0.1 * tone * np.exp(-2 * t) + 1e-4 * rng.standard_normal(SR)


def test_identical_audio_is_zero(note):
    metrics = audio_metrics(note, note.copy(), sr=SR)
    assert set(metrics) == set(METRICS)
    for key, value in metrics.items():
        assert value == pytest.approx(0.0, abs=1e-9), key


def test_degradations_are_ordered(note, rng):
    noise = rng.standard_normal(len(note))
    mild = note + 0.003 * noise
    strong = note + 0.03 * noise
    sos_mild = scipy.signal.butter(8, 8000, fs=SR, output="sos")
    sos_strong = scipy.signal.butter(8, 1000, fs=SR, output="sos")
    for a, b in ((mild, strong), (scipy.signal.sosfilt(sos_mild, note), scipy.signal.sosfilt(sos_strong, note))):
        ma, mb = audio_metrics(note, a, sr=SR), audio_metrics(note, b, sr=SR)
        for key in METRICS:
            assert 0 < ma[key] < mb[key], (key, ma[key], mb[key])
    # silence is further than a slightly quieter copy
    assert mel_distance(note, 0.9 * note, sr=SR) < mel_distance(note, np.zeros_like(note), sr=SR)
    with pytest.raises(ParameterError, match="equal length"):
        audio_metrics(note, note[:-1], sr=SR)


def test_mel_distance_resamples_to_16k(note):
    import soxr

    low = soxr.resample(note, SR, 16000)
    degraded = note + 0.01 * np.sin(2 * np.pi * 3000 * np.arange(SR) / SR)
    a = mel_distance(note, degraded, sr=SR)
    b = mel_distance(low, soxr.resample(degraded, SR, 16000), sr=16000)
    assert a == pytest.approx(b, rel=0.05)


def test_codebook_health():
    usage = np.array([10, 10, 0, 0])
    health = codebook_health(usage)
    assert health["perplexity_ratio"] == pytest.approx(0.5)
    assert health["dead_fraction"] == pytest.approx(0.5)


def test_evaluate_cli(tmp_path, rng):

    from spectro_fx.training.export_cmd import export_run
    from .test_fit import tiny_run_config, write_tones
    from spectro_fx.training.fit import train
    from spectro_fx.models import STFTConfig, VQVAEConfig

    tiny = VQVAEConfig(
        stft=STFTConfig(sr=16000, n_fft=128, hop_length=32, win_length=128),
        channels=(4, 8), freq_strides=(2, 2), time_strides=(2, 2), freq_kernels=(4, 4),
        code_dim=8, codebook_size=16,
    )
    tones = write_tones(tmp_path / "tones", rng, count=6, seconds=0.5)
    train(tiny_run_config(tiny, tones, steps=4, checkpoint_every=4), tmp_path / "run", progress=False)
    model = export_run(tmp_path / "run")
    # the evaluation data is at 22.05 kHz: it is resampled to the model's 16 kHz
    folder = tmp_path / "eval"
    folder.mkdir()
    t = np.arange(11025) / 22050
    sf.write(folder / "a.wav", 0.2 * np.sin(2 * np.pi * 440 * t), 22050)
    sf.write(folder / "b.wav", 0.05 * np.sin(2 * np.pi * 150 * t + 1), 22050)
    out = tmp_path / "res.json"
    assert main(["evaluate", str(model), str(folder), "--json", str(out), "--gain-db", "0", "--gain-db", "-20"]) == 0
    results = json.loads(out.read_text())["results"]
    assert len(results) == 2
    for row in results.values():
        assert row["n_clips"] == 2
        assert all(np.isfinite(row["metrics"][k]) and row["metrics"][k] > 0 for k in METRICS)
        assert 0 < row["codebook"]["perplexity_ratio"] <= 1 and 0 <= row["codebook"]["dead_fraction"] < 1
    assert main(["evaluate", str(tmp_path / "missing.pt"), str(folder)]) == 2
