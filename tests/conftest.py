"""Shared fixtures: a seeded rng, tiny CPU model configs, and a JACK dummy server."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import numpy as np
import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def _step_cache(tmp_path_factory):
    """The scripted steps this run saves (and its subprocesses load) live in the run's own
    temporary folder, not the user's cache."""
    from spectro_fx.effect.core.step_cache import CACHE_ENV

    previous = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(tmp_path_factory.mktemp("step-cache"))
    yield
    if previous is None:
        os.environ.pop(CACHE_ENV, None)
    else:
        os.environ[CACHE_ENV] = previous


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(autouse=True)
def _seed_torch():
    torch.manual_seed(0)


@pytest.fixture
def tiny_config():
    """A VQ-VAE small enough to train a few steps in a test, at 16 kHz."""
    from spectro_fx.models import STFTConfig, VQVAEConfig

    return VQVAEConfig(
        stft=STFTConfig(sr=16000, n_fft=128, hop_length=32, win_length=128),
        channels=(4, 8),
        freq_strides=(2, 2),
        time_strides=(2, 2),
        freq_kernels=(4, 4),
        time_kernel=3,
        n_res_blocks=1,
        code_dim=8,
        codebook_size=16,
    )


def _jack_running() -> bool:
    # jack_wait -c exits 0 either way; it prints "running" or "not running"
    out = subprocess.run(["jack_wait", "-c"], capture_output=True, text=True, timeout=10).stdout
    return out.strip() == "running"


@pytest.fixture(scope="session")
def jack_server():
    """A JACK server with the dummy driver at 48 kHz / 256 frames; reuses one that runs
    (as `.ci/run` and `tests/run.sh` start), else starts one for the session."""
    if shutil.which("jackd") is None:
        pytest.fail("jackd is not installed: run `make system` (apt-get install jackd2)")
    if _jack_running():
        yield None
        return
    from .jack import JackServer

    server = JackServer()
    time.sleep(0.2)
    yield server
    # PortAudio's exit handler aborts the process if its JACK server is gone by then
    from spectro_fx.effect.io.audio_io import release

    release()
    server.stop()
