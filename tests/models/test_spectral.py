import subprocess
import sys

import numpy as np
import pytest
import scipy.signal
import torch

from spectro_fx.models import STFTConfig
from spectro_fx.models.config import WINDOWS
from spectro_fx.models.spectral import _periodic, analysis_window, istft, magnitude, overlap_norm, stft, synthesis_window


@pytest.mark.parametrize("shape", WINDOWS)
def test_windows_are_scipys_periodic_windows_bit_for_bit(shape):
    """The windows are computed without scipy.signal (its import cost every command a second);
    scipy's own are the oracle, to the last bit, so every model keeps its exact windows."""
    for length in (1, 2, 3, 7, 96, 383, 384, 512, 1024, 1536, 2048):
        expected = np.clip(scipy.signal.get_window(shape, length, fftbins=True), 0.0, None)
        np.testing.assert_array_equal(_periodic(shape, length), expected)


def test_rendering_a_file_does_not_import_scipy_signal():
    code = (
        "import sys; import spectro_fx.effect.io.render, spectro_fx.effect.io.cli; "
        "print(sorted(m for m in sys.modules if m.startswith('scipy.signal')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_istft_inverts_stft(rng):
    cfg = STFTConfig(sr=16000, n_fft=256, hop_length=64, win_length=256)
    y = rng.standard_normal((2, 64 * 50))
    out = istft(stft(y, cfg), cfg)
    np.testing.assert_allclose(out, y, atol=1e-10)


def test_frames_are_causal(rng):
    cfg = STFTConfig(sr=16000, n_fft=256, hop_length=64, win_length=128)
    y = rng.standard_normal(64 * 20)
    z = y.copy()
    z[64 * 10 :] += 1.0
    a, b = stft(y, cfg), stft(z, cfg)
    np.testing.assert_allclose(a[:, :10], b[:, :10])
    assert not np.allclose(a[:, 10], b[:, 10])


def test_torch_magnitude_matches_numpy(rng):
    cfg = STFTConfig(sr=16000, n_fft=256, hop_length=64, win_length=200)
    y = rng.standard_normal((3, 64 * 30))
    mag = magnitude(torch.from_numpy(y), cfg).numpy()
    np.testing.assert_allclose(mag, np.abs(stft(y, cfg)), atol=1e-9)


LOW_DELAY = [
    STFTConfig(sr=48000, n_fft=1024, hop_length=128, win_length=1024, synthesis_length=256),
    STFTConfig(sr=16000, n_fft=256, hop_length=48, win_length=200, synthesis_length=144, window="blackman"),
]


@pytest.mark.parametrize("cfg", LOW_DELAY, ids=["hann-1024-256", "blackman-odd"])
def test_low_delay_pair_reconstructs_perfectly(cfg, rng):
    y = rng.standard_normal((2, cfg.hop_length * 60))
    out = istft(stft(y, cfg), cfg)
    final = y.shape[1] - (cfg.synthesis_length - cfg.hop_length)  # later frames complete the rest
    np.testing.assert_allclose(out[:, :final], y[:, :final], rtol=0, atol=1e-12)


def test_low_delay_windows_have_the_designed_shapes():
    cfg = LOW_DELAY[0]
    ana, syn = analysis_window(cfg), synthesis_window(cfg)
    span = cfg.synthesis_length
    assert np.all(syn[: cfg.n_fft - span] == 0.0)  # synthesis touches only the frame's last 256 samples
    hann = scipy.signal.get_window("hann", span, fftbins=True)
    np.testing.assert_allclose((ana * syn)[-span:], hann, atol=1e-12)
    # a periodic Hann of 2 x hop overlap-adds to exactly one: no normalisation left to do
    np.testing.assert_allclose(overlap_norm(cfg), 1.0, atol=1e-12)
    peak = int(np.argmax(ana))
    assert cfg.n_fft - span < peak < cfg.n_fft - span // 2 + 1  # long rise, short fall
    assert np.all(np.diff(ana[:peak]) >= 0) and np.all(np.diff(ana[peak:]) <= 0)


def test_low_delay_resolution_is_the_analysis_window_s(rng):
    """Two tones 60 Hz apart at 48 kHz: resolved by a 1024-point low-delay analysis (46.9 Hz
    bins), not by the classic 512-point pair (93.75 Hz bins)."""
    sr = 48000
    t = np.arange(sr // 2) / sr
    y = np.sin(2 * np.pi * 1000 * t) + np.sin(2 * np.pi * 1060 * t)

    def dip(cfg):
        mag = np.abs(stft(y, cfg))[:, -1]
        f = np.arange(cfg.n_bins) * sr / cfg.n_fft
        between = mag[(f > 1010) & (f < 1050)]
        peaks = mag[(f > 960) & (f < 1100)].max()
        return between.min() / peaks

    assert dip(LOW_DELAY[0]) < 0.7
    assert dip(STFTConfig()) > 0.9


def test_classic_pair_is_unchanged_by_the_new_field():
    """Files made before ``synthesis_length`` existed carry no such key: the classic pair,
    synthesis window = analysis window = a right-aligned periodic Hann."""
    cfg = STFTConfig.from_dict({"sr": 48000, "n_fft": 512, "hop_length": 128, "win_length": 400, "window": "hann"})
    assert cfg.synthesis_length == 0 and cfg.synthesis_span == 400
    expected = np.pad(scipy.signal.get_window("hann", 400, fftbins=True), (112, 0))
    np.testing.assert_array_equal(analysis_window(cfg), expected)
    np.testing.assert_array_equal(synthesis_window(cfg), expected)


@pytest.mark.parametrize("cfg", LOW_DELAY, ids=["hann-1024-256", "blackman-odd"])
def test_torch_magnitude_matches_numpy_for_low_delay(cfg, rng):
    y = rng.standard_normal((2, cfg.hop_length * 30))
    mag = magnitude(torch.from_numpy(y), cfg).numpy()
    np.testing.assert_allclose(mag, np.abs(stft(y, cfg)), atol=1e-9)
