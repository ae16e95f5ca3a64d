"""Fixtures of the effect tests: tiny model files at the real 48 kHz analysis settings.

Built once per session in a temporary folder (never in tests/).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch


def _tiny_48k_config(**stft):
    from spectro_fx.models import STFTConfig, VQVAEConfig

    return VQVAEConfig(
        stft=STFTConfig(**{"sr": 48000, "n_fft": 512, "hop_length": 128, "win_length": 512, **stft}),
        channels=(4, 8),
        freq_strides=(4, 2),
        time_strides=(2, 2),
        freq_kernels=(8, 4),
        time_kernel=3,
        n_res_blocks=1,
        code_dim=8,
        codebook_size=32,
    )


def _build(path, cfg, *, seed: int = 0):
    """A VQ-VAE whose codebook was fitted (EMA, a few forward passes) on chirps and noise,
    exported as a model file: codes vary with the input, as a trained model's do."""
    from spectro_fx.models.export import export_model
    from spectro_fx.models.spectral import magnitude
    from spectro_fx.models.vqvae import VQVAE

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = VQVAE(cfg).train()
    sr = cfg.stft.sr
    t = np.arange(sr // 2) / sr
    clips = []
    for i in range(4):
        f0 = 200.0 * (i + 1)
        clips.append(0.3 * np.sin(2 * np.pi * (f0 * t + 2000 * t**2)) + 0.05 * rng.standard_normal(t.shape))
    y = torch.tensor(np.stack(clips), dtype=torch.float32)
    mag = magnitude(y, cfg.stft)
    mag = mag[:, :, : mag.shape[2] // cfg.time_stride * cfg.time_stride]
    with torch.no_grad():
        for _ in range(5):
            model(mag)
    model.eval()
    return export_model(model, path, data_description="test chirps and noise")


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory):
    """Path of a tiny model file at 48 kHz, n_fft 512, hop 128 (the default analysis)."""
    return _build(tmp_path_factory.mktemp("models") / "tiny48k.pt", _tiny_48k_config())


@pytest.fixture(scope="session")
def tiny_model(tiny_model_path):
    from spectro_fx.models.export import load_model

    return load_model(tiny_model_path)


@pytest.fixture(scope="session")
def odd_model(tmp_path_factory):
    """A tiny 16 kHz model with awkward shapes: hop 48 does not divide n_fft 128, window 100
    shorter than n_fft, time stride 2, asymmetric frequency padding, no residual blocks."""
    from spectro_fx.models import STFTConfig, VQVAEConfig
    from spectro_fx.models.export import load_model

    cfg = VQVAEConfig(
        stft=STFTConfig(sr=16000, n_fft=128, hop_length=48, win_length=100),
        channels=(4, 6),
        freq_strides=(2, 2),
        time_strides=(1, 2),
        freq_kernels=(5, 3),
        time_kernel=2,
        n_res_blocks=0,
        code_dim=4,
        codebook_size=16,
    )
    return load_model(_build(tmp_path_factory.mktemp("models") / "odd16k.pt", cfg))


@pytest.fixture(scope="session")
def lowdelay_model(tmp_path_factory):
    """A tiny 48 kHz model on the low-delay analysis-synthesis pair: 1024-point analysis
    (46.9 Hz bins), 256-point synthesis window, hop 128, 2 frames per column (383 samples)."""
    from spectro_fx.models import STFTConfig, VQVAEConfig
    from spectro_fx.models.export import load_model

    cfg = VQVAEConfig(
        stft=STFTConfig(sr=48000, n_fft=1024, hop_length=128, win_length=1024, synthesis_length=256),
        channels=(4, 8),
        freq_strides=(8, 2),
        time_strides=(2, 1),
        freq_kernels=(16, 4),
        time_kernel=3,
        n_res_blocks=1,
        code_dim=8,
        codebook_size=32,
    )
    return load_model(_build(tmp_path_factory.mktemp("models") / "lowdelay48k.pt", cfg))


@pytest.fixture(scope="session")
def prior_model(tmp_path_factory):
    """A tiny 48 kHz model file with a learned prior (random tables at the default offsets)."""
    from spectro_fx.models.export import Prior, export_model, load_model
    from spectro_fx.models.naive_bayes import DEFAULT_PRIOR_OFFSETS
    from spectro_fx.models.vqvae import VQVAE

    cfg = _tiny_48k_config()
    torch.manual_seed(3)
    model = VQVAE(cfg).train()
    with torch.no_grad():
        for _ in range(4):
            model(torch.rand(4, cfg.stft.n_bins, 32) * 3)
        # codewords far apart, so that another code is heard (a few EMA steps leave them close)
        model.quantizer.codebook.copy_(torch.randn_like(model.quantizer.codebook))
    k = cfg.codebook_size
    offsets = torch.tensor(DEFAULT_PRIOR_OFFSETS)
    prior = Prior(offsets=offsets, class_log_prior=torch.log_softmax(torch.randn(k), 0),
                  feature_log_prob=torch.log_softmax(3 * torch.randn(len(offsets), k, k + 1), -1), alpha=0.5)
    return load_model(export_model(model.eval(), tmp_path_factory.mktemp("prior") / "prior.pt", prior=prior))
