import numpy as np
import torch

from spectro_fx.models import STFTConfig
from spectro_fx.models.spectral import istft, magnitude, stft


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
