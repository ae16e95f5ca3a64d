"""The signal path both the engine and the exported module run (effect/core/stream.py): its
parameter ramps, its analyse/synthesise contract, eager and scripted alike."""

import math

import numpy as np
import pytest
import torch

from spectro_fx.effect.core.params import REGION_PARAMETERS
from spectro_fx.effect.core.stream import REGION_INDEX, Ramps, StreamCore


def _ramps(scripted):
    ramps = Ramps(REGION_PARAMETERS, hop_s=128 / 48000, values=[p.default for p in REGION_PARAMETERS])
    return torch.jit.script(ramps) if scripted else ramps


@pytest.mark.parametrize("scripted", [False, True], ids=["eager", "scripted"])
def test_ramps_land_exactly_linear_or_in_log_steps(scripted):
    ramps = _ramps(scripted)
    low, wet, period = REGION_INDEX["low_hz"], REGION_INDEX["wet"], REGION_INDEX["period_s"]
    ramps.set_value(wet, 0.25, False)
    steps = ramps.steps[wet]
    values = ramps.advance(wet, steps + 3).numpy()
    assert steps == round(0.03 / (128 / 48000))  # wet's declared 30 ms
    np.testing.assert_allclose(np.diff(values[:steps]), -0.75 / steps, rtol=1e-12)
    assert values[steps - 1] == 0.25 and np.all(values[steps:] == 0.25)
    ramps.set_value(low, 4000.0, False)
    values = ramps.advance(low, ramps.steps[low]).numpy()
    ratios = values[1:] / values[:-1]
    np.testing.assert_allclose(ratios, (4000.0 / 500.0) ** (1 / ramps.steps[low]), rtol=1e-12)  # log scale
    assert values[-1] == 4000.0
    ramps.set_value(period, 0.5, False)  # no smoothing declared: at once
    assert ramps.advance(period, 2).tolist() == [0.5, 0.5]
    # clamped into range, NaN refused, immediate jumps
    assert ramps.set_value(wet, 7.0, True) == 0 and ramps.target[wet] == 1.0 and ramps.value[wet] == 1.0
    assert ramps.set_value(wet, math.nan, False) == 1 and ramps.target[wet] == 1.0


def test_scripted_ramps_equal_eager_ones_to_the_last_bit():
    """TorchScript stores `out[i] = python_float` through float32; the ramps must not."""
    eager, scripted = _ramps(False), _ramps(True)
    for ramps in (eager, scripted):
        ramps.set_value(REGION_INDEX["high_hz"], 1234.5, False)
        ramps.set_value(REGION_INDEX["wet"], 1.0 / 3.0, False)
    for index in (REGION_INDEX["high_hz"], REGION_INDEX["wet"]):
        a, b = eager.advance(index, 40), scripted.advance(index, 40)
        assert a.dtype == b.dtype == torch.float64
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.parametrize("scripted", [False, True], ids=["eager", "scripted"])
def test_analyse_then_synthesise_gives_the_change_aligned_with_the_input(tiny_model, rng, scripted):
    """Columns come out as soon as their frames are complete; a chain that changes nothing
    (the codes' own latents) with the band closed gives no change, and every sample of the
    stream comes out once, aligned (the overlap-add's pre-roll dropped)."""
    core = StreamCore(tiny_model, streams=2)
    core = torch.jit.script(core) if scripted else core
    core.set_region(REGION_INDEX["high_hz"], 20.0)  # at or below low_hz: no band
    ts, hop = core.time_stride, core.hop
    x = torch.from_numpy(rng.standard_normal((2, 5000)) * 0.1)
    total, columns = 0, 0
    with torch.no_grad():
        for a in range(0, 5000, 333):
            codes, cells, aux = core.analyse(x[:, a : a + 333], torch.zeros(0, 333, dtype=torch.float64))
            assert codes.shape[2] == cells.shape[0] and aux.shape == (0, core.n_rows, 0)
            assert core.first_column == columns
            columns += codes.shape[2]
            if codes.shape[2]:
                assert not bool(cells.any())
                change = core.synthesise(core.embed(codes))
                assert change.shape[0] == 2 and not bool(change.any())
                total += change.shape[1]
    assert columns == (5000 // hop) // ts  # frame t is out once sample (t + 1) * hop - 1 is in
    assert total == columns * ts * hop - (core.span - hop)
