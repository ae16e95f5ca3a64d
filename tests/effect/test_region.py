"""The region mask: band edges, empty bands, the time gate and its slew, codemap cells; eager
and scripted alike (the engine runs them eagerly, the exported module scripted)."""

import numpy as np
import pytest
import torch

from spectro_fx.effect.core.region import EDGE_BINS, band_mask, gate_targets, region_cells, slew_gate

SCRIPTED = {f.__name__: torch.jit.script(f) for f in (band_mask, gate_targets, slew_gate, region_cells)}


@pytest.fixture(params=["eager", "scripted"])
def fn(request):
    """The region functions by name, eager or scripted."""
    if request.param == "eager":
        return {f.__name__: f for f in (band_mask, gate_targets, slew_gate, region_cells)}
    return SCRIPTED


def _t(values):
    return torch.tensor(values, dtype=torch.float64)


def test_band_mask_inside_edges_and_beyond(fn):
    sr, n_fft = 48000, 512
    bin_hz = sr / n_fft
    mask = fn["band_mask"](_t([1000.0]), _t([3000.0]), sr, n_fft, EDGE_BINS)[0].numpy()
    freqs = np.arange(n_fft // 2 + 1) * bin_hz
    assert mask.shape == (257,)
    assert np.all(mask[(freqs >= 1000) & (freqs <= 3000)] == 1.0)
    beyond = (freqs <= 1000 - EDGE_BINS * bin_hz) | (freqs >= 3000 + EDGE_BINS * bin_hz)
    assert np.all(mask[beyond] == 0.0)
    edge = (freqs > 3000) & (freqs < 3000 + EDGE_BINS * bin_hz)
    assert np.all((mask[edge] > 0) & (mask[edge] < 1)) and np.all(np.diff(mask[edge]) < 0)
    # the raised cosine: half way through the edge, half open
    d = (freqs[edge] - 3000) / bin_hz
    np.testing.assert_allclose(mask[edge], 0.5 + 0.5 * np.cos(np.pi * d / EDGE_BINS), atol=1e-15)


def test_empty_band_is_all_zero(fn):
    mask = fn["band_mask"](_t([2000.0, 500.0]), _t([2000.0, 400.0]), 48000, 512, EDGE_BINS)
    assert not bool(mask.any())


def test_gate_period_and_duty(fn):
    hop_s = 128 / 48000
    frames = torch.arange(3000)
    gate = fn["gate_targets"]
    assert bool(gate(frames, 0.0, 0.3, hop_s).all())
    assert bool(gate(frames, 1.0, 1.0, hop_s).all())
    assert not bool(gate(frames, 1.0, 0.0, hop_s).any())
    on = gate(frames, 0.5, 0.25, hop_s).numpy()
    times = np.arange(3000) * hop_s
    np.testing.assert_array_equal(on.astype(bool), np.mod(times, 0.5) < 0.125)


def test_slew_never_jumps(fn):
    targets = _t([0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0])
    gate = fn["slew_gate"](targets, 0.0, 3).numpy()
    assert np.max(np.abs(np.diff(np.concatenate([[0.0], gate])))) <= 1 / 3 + 1e-12
    assert gate[5] == 1.0 and gate[-1] == 0.0


def test_region_cells_cover_the_mask(fn, rng):
    mask = np.zeros((8, 257))
    mask[:4, 20:30] = 0.5  # column 0: bins 20..29 -> rows 2 and 3 of 8-bin rows
    mask[6, 256] = 0.1  # column 1: the last bin, alone in the last (padded) row
    cells = fn["region_cells"](torch.from_numpy(mask), 4, 8, 33).numpy()
    assert cells.shape == (2, 33)
    assert list(np.flatnonzero(cells[0])) == [2, 3] and list(np.flatnonzero(cells[1])) == [32]
    # any mask: a cell is set iff any frame of its column has a bin of its row above 0
    mask = np.where(rng.random((12, 257)) > 0.97, rng.random((12, 257)), 0.0)
    cells = fn["region_cells"](torch.from_numpy(mask), 4, 8, 33).numpy()
    for c in range(3):
        for r in range(33):
            assert cells[c, r] == (mask[4 * c : 4 * c + 4, 8 * r : 8 * r + 8] > 0).any()


def test_slew_equals_the_frame_by_frame_recursion(fn, rng):
    """Runs of equal values are filled at once: the values are still the recursion's, to the bit."""
    for _ in range(100):
        n = int(rng.integers(0, 40))
        targets = (rng.random(n) > 0.5).astype(np.float64)
        start, ramp = float(rng.choice([0.0, 1.0, 1 / 3, 0.5])), int(rng.integers(1, 5))
        step, value, expected = 1.0 / ramp, start, []
        for target in targets:
            value = min(max(target, value - step), value + step)
            expected.append(value)
        np.testing.assert_array_equal(fn["slew_gate"](torch.from_numpy(targets), start, ramp).numpy(), expected)
