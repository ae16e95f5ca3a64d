"""Streaming STFT/iSTFT (AnalysisRing, OverlapAdd) against the whole-signal functions of
models.spectral, any block size, eager (the engine) and scripted (the exported module)."""

import numpy as np
import pytest
import torch

from spectro_fx.effect.core.stft import AnalysisRing, OverlapAdd
from spectro_fx.models import STFTConfig
from spectro_fx.models.spectral import istft, stft

BLOCKS = [1, 64, 65, 256, 8193]
CONFIGS = [
    STFTConfig(),  # the default: 48 kHz, n_fft 512, hop 128, win 512
    STFTConfig(sr=16000, n_fft=128, hop_length=48, win_length=100),  # hop does not divide win
    # low delay: 1024-point analysis, 256-point synthesis at the frame's end
    STFTConfig(sr=48000, n_fft=1024, hop_length=128, win_length=1024, synthesis_length=256),
    # low delay where the hop divides neither window (the frame-by-frame overlap-add path)
    STFTConfig(sr=16000, n_fft=256, hop_length=48, win_length=200, synthesis_length=144 + 2, window="hamming"),
]
IDS = ["default", "odd", "low-delay", "low-delay-odd"]


def _blocks(n, size):
    return [(i, min(i + size, n)) for i in range(0, n, size)]


def _make(cls, cfg, streams, scripted):
    module = cls(cfg, streams)
    return torch.jit.script(module) if scripted else module


@pytest.mark.parametrize("scripted", [False, True], ids=["eager", "scripted"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
@pytest.mark.parametrize("block", BLOCKS)
def test_streaming_stft_equals_whole_signal(cfg, block, scripted, rng):
    y = rng.standard_normal((2, 3000))
    ring = _make(AnalysisRing, cfg, 2, scripted)
    frames = torch.cat([ring(torch.from_numpy(y[:, a:b].copy())) for a, b in _blocks(y.shape[1], block)], dim=2).numpy()
    expected = stft(y, cfg)
    assert frames.shape == expected.shape
    np.testing.assert_allclose(frames, expected, rtol=0, atol=1e-12)
    assert ring.frames_done == expected.shape[2]


@pytest.mark.parametrize("scripted", [False, True], ids=["eager", "scripted"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_streaming_istft_equals_whole_signal_and_reconstructs(cfg, scripted, rng):
    y = rng.standard_normal((1, 4000))
    spec = stft(y, cfg)
    # an arbitrary (modified) spectrum: the overlap-add must match models.spectral.istft
    modified = spec * rng.uniform(0.2, 2.0, spec.shape)
    synth = _make(OverlapAdd, cfg, 1, scripted)
    out = torch.cat([synth(torch.from_numpy(modified[:, :, t : t + 3].copy())) for t in range(0, spec.shape[2], 3)], 1).numpy()
    pre = synth.pre_roll
    n_final = spec.shape[2] * cfg.hop_length - pre  # the last pre samples still wait for frames
    aligned = out[:, pre:]
    np.testing.assert_allclose(aligned[:, : n_final - pre], istft(modified, cfg)[:, : n_final - pre], atol=1e-12)
    assert pre == cfg.synthesis_span - cfg.hop_length  # the synthesis window, not the analysis window, sets it
    # unmodified: the input comes back, pre_roll samples late
    synth.reset(1)
    back = synth(torch.from_numpy(spec)).numpy()[:, pre:]
    np.testing.assert_allclose(back[:, : n_final - pre], y[:, : n_final - pre], atol=1e-12)


def test_empty_and_short_pushes():
    cfg = STFTConfig()
    ring = AnalysisRing(cfg, 1)
    assert ring(torch.zeros(1, 0, dtype=torch.float64)).shape == (1, cfg.n_bins, 0)
    assert ring(torch.zeros(1, 100, dtype=torch.float64)).shape == (1, cfg.n_bins, 0)
    assert ring(torch.zeros(1, 28, dtype=torch.float64)).shape == (1, cfg.n_bins, 1)
    synth = OverlapAdd(cfg, 1)
    assert synth(torch.zeros(1, cfg.n_bins, 0, dtype=torch.complex128)).shape == (1, 0)
    # silence in: no transform, silence out (and the overlap it leaves is silent too)
    assert not synth(torch.zeros(1, cfg.n_bins, 2, dtype=torch.complex128)).any()
