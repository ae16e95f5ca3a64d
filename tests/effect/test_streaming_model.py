"""Cached-convolution runner: chunked encode/decode equals the model file's whole-signal
methods; the region-restricted decoder head equals the full head on the wanted cells."""

import numpy as np
import torch

from spectro_fx.effect.streaming_model import StreamingModel


def test_chunked_encode_and_decode_equal_the_model_file(tiny_model, rng):
    module = tiny_model.module
    runner = StreamingModel(tiny_model)
    ts = runner.time_stride
    mag = torch.from_numpy(rng.uniform(0, 3, (2, int(module.n_bins), 24 * ts)).astype(np.float32))
    with torch.no_grad():
        latent = module.encode_latent(mag)
        decoded = module.decode_latent(latent, 0)
    sizes = [1, 3, 2, 5, 1, 12]  # columns per call
    starts = np.cumsum([0] + sizes)
    chunks = [runner.encode_latent(mag[:, :, a * ts : b * ts]) for a, b in zip(starts[:-1], starts[1:])]
    np.testing.assert_allclose(torch.cat(chunks, dim=3), latent, atol=1e-5 * float(latent.abs().max()))
    assert torch.equal(runner.quantize(latent), module.quantize(latent))
    chunks = [runner.decode_latent(latent[..., a:b]) for a, b in zip(starts[:-1], starts[1:])]
    np.testing.assert_allclose(torch.cat(chunks, dim=2), decoded, atol=1e-5 * float(decoded.abs().max()))


def test_restricted_head_equals_full_head_on_wanted_cells(tiny_model, rng):
    module = tiny_model.module
    runner = StreamingModel(tiny_model)
    assert runner.row_reach is not None and runner.row_reach >= 1
    n_rows, ts, fs, n_bins = runner.n_rows, runner.time_stride, runner.freq_stride, runner.n_bins
    codes = torch.from_numpy(rng.integers(0, int(module.codebook_size), (1, n_rows, 40)))
    latent = module.embed(codes)
    with torch.no_grad():
        full = module.decode_latent(latent, 0)
    scale = float(full.abs().max())
    column = 0
    while column < 40:
        k = int(min(rng.integers(1, 5), 40 - column))
        lo = int(rng.integers(0, n_rows))
        hi = int(min(n_rows, lo + rng.integers(1, 10)))
        rows = torch.zeros(n_rows, dtype=torch.bool)
        rows[lo:hi] = True
        wanted = torch.from_numpy(rng.random(k) > 0.3)
        out = runner.decode_latent(latent[..., column : column + k], rows=rows, columns=wanted)
        for j in range(k):
            bins = slice(lo * fs, min(hi * fs, n_bins))
            if bool(wanted[: j + 1].any()):
                expected = full[:, bins, (column + j) * ts : (column + j + 1) * ts]
                np.testing.assert_allclose(out[:, bins, j * ts : (j + 1) * ts], expected, atol=1e-5 * scale)
            else:
                assert not out[:, :, j * ts : (j + 1) * ts].any()
        outside = torch.ones(n_bins, dtype=torch.bool)
        outside[lo * fs : hi * fs] = False
        assert not out[:, outside].any()
        column += k
