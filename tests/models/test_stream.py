"""The model file streams: its layers keep their own causal context, so chunked
``stream_encode`` / ``stream_decode_latent`` equal the whole-signal methods, for several
architectures; the region-restricted decoder head equals the full head on the wanted cells."""

import copy
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from spectro_fx.models import STFTConfig, VQVAEConfig
from spectro_fx.models.export import FORMAT_VERSION, export_model, load_model
from spectro_fx.models.vqvae import VQVAE

FORMAT1_FILE = Path(__file__).parent / "data" / "format1_tiny.pt"

ARCHITECTURES = {
    # the default model's layers (48 kHz, n_fft 512), narrower
    "default": dict(stft=STFTConfig(), channels=(4, 8, 16), freq_strides=(4, 2, 1), time_strides=(1, 2, 2),
                    freq_kernels=(8, 4, 3), time_kernel=3, n_res_blocks=1, code_dim=8, codebook_size=32),
    # two layers, time stride 2 in the first, kernel 2, no residual block, odd hop and window
    "shallow": dict(stft=STFTConfig(sr=16000, n_fft=128, hop_length=48, win_length=100), channels=(4, 6),
                    freq_strides=(2, 2), time_strides=(2, 1), freq_kernels=(5, 3), time_kernel=2,
                    n_res_blocks=0, code_dim=4, codebook_size=16),
    # four layers, time stride 8, time kernel 4, two residual blocks
    "deep": dict(stft=STFTConfig(sr=22050, n_fft=256, hop_length=64, win_length=256), channels=(3, 5, 7, 9),
                 freq_strides=(2, 2, 2, 1), time_strides=(2, 2, 2, 1), freq_kernels=(3, 4, 2, 3), time_kernel=4,
                 n_res_blocks=2, code_dim=6, codebook_size=24),
    # time stride 1: the decoder's last conv reaches two columns back
    "stride1": dict(stft=STFTConfig(sr=16000, n_fft=128, hop_length=32, win_length=128), channels=(4, 8),
                    freq_strides=(2, 2), time_strides=(1, 1), freq_kernels=(4, 4), time_kernel=3,
                    n_res_blocks=1, code_dim=8, codebook_size=16),
}


def _exported(name, tmp_path):
    torch.manual_seed(0)
    model = VQVAE(VQVAEConfig(**ARCHITECTURES[name])).train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(3, model.cfg.stft.n_bins, 8 * model.cfg.time_stride) * 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback, no warning of any kind
        return load_model(export_model(model.eval(), tmp_path / f"{name}.pt"))


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_chunked_stream_equals_one_pass(name, tmp_path, rng):
    module = _exported(name, tmp_path).module
    ts = int(module.time_stride)
    mag = torch.from_numpy(rng.uniform(0, 3, (2, int(module.n_bins), 24 * ts)).astype(np.float32))
    with torch.no_grad():
        latent = module.encode_latent(mag)
        decoded = module.decode_latent(latent, 0)
        sizes = [1, 3, 2, 5, 1, 12]  # columns per call
        starts = np.cumsum([0] + sizes)
        for _ in range(2):  # and again after reset_stream
            module.reset_stream()
            chunks = [module.stream_encode_latent(mag[:, :, a * ts : b * ts]) for a, b in zip(starts[:-1], starts[1:])]
            np.testing.assert_allclose(torch.cat(chunks, dim=3), latent, atol=1e-5 * float(latent.abs().max()))
            chunks = [module.stream_decode_latent(latent[..., a:b]) for a, b in zip(starts[:-1], starts[1:])]
            np.testing.assert_allclose(torch.cat(chunks, dim=2), decoded, atol=1e-5 * float(decoded.abs().max()))
        module.reset_stream()
        codes = torch.cat([module.stream_encode(mag[:, :, a * ts : b * ts]) for a, b in zip(starts[:-1], starts[1:])], 2)
    # equal, but for ties: codewords as near as float rounding to the one-pass latent
    flat = latent.permute(0, 2, 3, 1).reshape(-1, latent.shape[1]).double()
    dist_sq = (flat[:, None, :] - module.codebook.double()[None]).pow(2).sum(-1)
    expected = module.quantize(latent).flatten()
    gap = dist_sq.gather(1, codes.flatten()[:, None]) - dist_sq.gather(1, expected[:, None])
    assert float(gap.abs().max()) <= 1e-5 * float(flat.pow(2).sum(1).max())


@pytest.mark.parametrize("name", ["default", "stride1", "deep"])
def test_restricted_head_equals_full_head_on_wanted_cells(name, tmp_path, rng):
    module = _exported(name, tmp_path).module
    n_rows, ts, fs, n_bins = (int(module.n_rows), int(module.time_stride), int(module.freq_stride), int(module.n_bins))
    codes = torch.from_numpy(rng.integers(0, int(module.codebook_size), (1, n_rows, 40)))
    latent = module.embed(codes)
    with torch.no_grad():
        full = module.decode_latent(latent, 0)
        scale = float(full.abs().max())
        module.reset_stream()
        column = 0
        while column < 40:
            k = int(min(rng.integers(1, 5), 40 - column))
            lo = int(rng.integers(0, n_rows))
            hi = int(min(n_rows, lo + rng.integers(1, 10)))
            first = int(rng.integers(0, k + 1)) if rng.random() < 0.5 else 0
            out = module.stream_decode_latent(latent[..., column : column + k], lo, hi, first)
            bins = slice(lo * fs, min(hi * fs, n_bins))
            for j in range(k):
                frames = slice(j * ts, (j + 1) * ts)
                if j >= first:
                    expected = full[:, bins, (column + j) * ts : (column + j + 1) * ts]
                    np.testing.assert_allclose(out[:, bins, frames], expected, atol=1e-5 * scale)
                else:
                    assert not out[:, :, frames].any()
            outside = torch.ones(n_bins, dtype=torch.bool)
            outside[bins] = False
            assert not out[:, outside].any()
            column += k


def test_streams_of_two_copies_are_independent(tmp_path, rng):
    module = _exported("default", tmp_path).module
    other = copy.deepcopy(module)
    ts = int(module.time_stride)
    a = torch.from_numpy(rng.uniform(0, 3, (1, int(module.n_bins), 8 * ts)).astype(np.float32))
    b = torch.from_numpy(rng.uniform(0, 3, (1, int(module.n_bins), 8 * ts)).astype(np.float32))
    with torch.no_grad():
        whole = module.encode_latent(a)
        first = module.stream_encode_latent(a[:, :, : 4 * ts])
        other.stream_encode_latent(b)  # another stream in between must not touch this one
        second = module.stream_encode_latent(a[:, :, 4 * ts :])
    np.testing.assert_allclose(torch.cat([first, second], 3), whole, atol=1e-5 * float(whole.abs().max()))


def test_format_1_file_is_upgraded_on_load(tmp_path):
    """A model file written before the streaming methods existed loads, streams, and keeps
    its weights, codebook usage and prior tables."""
    path = tmp_path / "old.pt"
    shutil.copy(FORMAT1_FILE, path)
    loaded = load_model(path)
    module = loaded.module
    assert int(module.format_version) == FORMAT_VERSION
    assert loaded.metadata["format_version"] == 1
    assert module.data_description == "format 1 test file"
    assert loaded.prior() is not None and loaded.prior().alpha == 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        original = torch.jit.load(str(path))
    for key, value in original.state_dict().items():
        assert torch.equal(module.state_dict()[key], value), key
    mag = torch.rand(1, int(module.n_bins), 8 * int(module.time_stride)) * 2
    with torch.no_grad():
        torch.testing.assert_close(module.decode(module.encode(mag)), original.decode(original.encode(mag)))
        streamed = module.stream_decode_latent(module.stream_encode_latent(mag))
        torch.testing.assert_close(streamed, module.decode_latent(module.encode_latent(mag), 0), atol=1e-5, rtol=1e-5)
