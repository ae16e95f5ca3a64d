"""The region mask: band edges, empty bands, the time gate and its slew, codemap rows."""

import numpy as np

from spectro_fx.effect.core.region import EDGE_BINS, band_mask, gate_targets, region_rows, slew_gate


def test_band_mask_inside_edges_and_beyond():
    sr, n_fft = 48000, 512
    bin_hz = sr / n_fft
    mask = band_mask(np.array([1000.0]), np.array([3000.0]), sr=sr, n_fft=n_fft)[0]
    freqs = np.arange(n_fft // 2 + 1) * bin_hz
    assert mask.shape == (257,)
    assert np.all(mask[(freqs >= 1000) & (freqs <= 3000)] == 1.0)
    beyond = (freqs <= 1000 - EDGE_BINS * bin_hz) | (freqs >= 3000 + EDGE_BINS * bin_hz)
    assert np.all(mask[beyond] == 0.0)
    edge = (freqs > 3000) & (freqs < 3000 + EDGE_BINS * bin_hz)
    assert np.all((mask[edge] > 0) & (mask[edge] < 1)) and np.all(np.diff(mask[edge]) < 0)


def test_empty_band_is_all_zero():
    mask = band_mask(np.array([2000.0, 500.0]), np.array([2000.0, 400.0]), sr=48000, n_fft=512)
    assert not mask.any()


def test_gate_period_and_duty():
    hop_s = 128 / 48000
    frames = np.arange(3000)
    assert gate_targets(frames, period_s=0.0, duty=0.3, hop_s=hop_s).all()
    assert gate_targets(frames, period_s=1.0, duty=1.0, hop_s=hop_s).all()
    assert not gate_targets(frames, period_s=1.0, duty=0.0, hop_s=hop_s).any()
    on = gate_targets(frames, period_s=0.5, duty=0.25, hop_s=hop_s)
    times = frames * hop_s
    np.testing.assert_array_equal(on.astype(bool), np.mod(times, 0.5) < 0.125)


def test_slew_never_jumps():
    targets = np.array([0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0], dtype=float)
    gate = slew_gate(targets, 0.0, ramp_frames=3)
    assert np.max(np.abs(np.diff(np.concatenate([[0.0], gate])))) <= 1 / 3 + 1e-12
    assert gate[5] == 1.0 and gate[-1] == 0.0


def test_region_rows_cover_the_mask():
    mask = np.zeros((4, 257))
    mask[:, 20:30] = 0.5  # bins 20..29 -> rows 2 and 3 of 8-bin rows
    rows = region_rows(mask, freq_stride=8, n_rows=33)
    assert rows.shape == (33,)
    assert list(np.flatnonzero(rows)) == [2, 3]
    assert not region_rows(np.zeros((4, 257)), freq_stride=8, n_rows=33).any()


def test_region_cells_match_region_rows_per_column(rng):
    from spectro_fx.effect.core.region import region_cells

    mask = np.where(rng.random((12, 257)) > 0.97, rng.random((12, 257)), 0.0)
    cells = region_cells(mask, time_stride=4, freq_stride=8, n_rows=33)
    assert cells.shape == (3, 33)
    for c in range(3):
        np.testing.assert_array_equal(cells[c], region_rows(mask[4 * c : 4 * c + 4], freq_stride=8, n_rows=33))


def test_torch_twins_equal_the_numpy_functions(rng):
    """The exported module's region functions give the engine's, to the last bit."""
    import torch

    from spectro_fx.effect.core.region import (
        band_mask_tensor, gate_targets, gate_targets_tensor, region_cells, region_cells_tensor, slew_gate,
        slew_gate_tensor,
    )

    low, high = rng.uniform(20, 12000, 40), rng.uniform(20, 24000, 40)
    expected = band_mask(low, high, sr=48000, n_fft=512)
    got = torch.jit.script(band_mask_tensor)(torch.from_numpy(low), torch.from_numpy(high), 48000, 512, EDGE_BINS)
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-15)
    frames = np.arange(3000)
    for period, duty in ((0.0, 0.5), (0.37, 0.25), (1.0, 0.5), (0.2, 0.0), (0.3, 1.0)):
        targets = gate_targets(frames, period_s=period, duty=duty, hop_s=128 / 48000)
        twin = gate_targets_tensor(torch.from_numpy(frames), period, duty, 128 / 48000).numpy()
        np.testing.assert_array_equal(twin, targets)
        np.testing.assert_array_equal(slew_gate_tensor(torch.from_numpy(targets), 0.5, 3).numpy(), slew_gate(targets, 0.5, ramp_frames=3))
    mask = expected * (rng.random(expected.shape[0]) > 0.3)[:, None]
    np.testing.assert_array_equal(
        region_cells_tensor(torch.from_numpy(mask), 4, 8, 33).numpy(), region_cells(mask, time_stride=4, freq_stride=8, n_rows=33)
    )
