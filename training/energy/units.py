"""Units, integration and counters of the energy report, and the CO2e formula: pure functions.

Counters are preferred to integrated power; a component that cannot be read is not measured, never zero.
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import numpy as np

from ...models.errors import ParameterError, positive_number

J_PER_KWH = 3.6e6
DEFAULT_PUE = 1.58
DEFAULT_CARBON_INTENSITY_KG_PER_KWH = 0.477
FORMULA = "CO2e [kg] = E [kWh] x PUE x carbon_intensity [kg CO2e/kWh]"


def milliwatts_to_watts(power_mw):
    """NVML power (``nvmlDeviceGetPowerUsage``, milliwatts) to watts; float or array."""
    return power_mw / 1e3


def joules_to_kwh(energy_j):
    """Joules to kilowatt-hours (1 kWh = 3.6e6 J); float or array."""
    return energy_j / J_PER_KWH


def millijoules_to_kwh(energy_mj):
    """NVML energy (``nvmlDeviceGetTotalEnergyConsumption``, millijoules) to kWh (1 kWh = 3.6e9 mJ)."""
    return energy_mj / (J_PER_KWH * 1e3)


def microjoules_to_kwh(energy_uj):
    """RAPL energy (``energy_uj``, microjoules) to kWh (1 kWh = 3.6e12 uJ)."""
    return energy_uj / (J_PER_KWH * 1e6)


def _trace_arrays(t_s, power_w) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(t_s, dtype=np.float64)
    p = np.asarray(power_w, dtype=np.float64)
    if t.ndim != 1 or p.shape != t.shape:
        raise ParameterError(
            f"a power trace needs 1-D times and powers of equal length, got shapes {t.shape} and {p.shape}"
        )
    if not np.all(np.isfinite(t)):
        raise ParameterError("sample times must be finite numbers of seconds")
    if t.size > 1 and np.any(np.diff(t) < 0):
        i = int(np.argmax(np.diff(t) < 0))
        raise ParameterError(f"sample times must not decrease: t[{i}]={t[i]} > t[{i + 1}]={t[i + 1]}")
    if np.any(p[np.isfinite(p)] < 0) or np.any(np.isinf(p)):
        raise ParameterError("power readings must be finite and >= 0 W (NaN marks a failed reading)")
    return t, p


def cumulative_trapezoid_energy_j(t_s, power_w) -> np.ndarray:
    """Energy integrated from power samples with the trapezoid rule, cumulative at each sample.

    Parameters
    ----------
    t_s : array_like of float, shape [n]
        Sample times in seconds, non-decreasing (a monotonic clock).
    power_w : array_like of float, shape [n]
        Power in watts at each time; ``NaN`` marks a failed reading, bridged linearly between the
        valid readings around it.

    Returns
    -------
    energy_j : np.ndarray of float64, shape [n]
        Joules from the first valid reading up to each sample (a failed reading carries the value
        of the last valid one; samples before the first valid reading are ``NaN``: not measured).
    """
    t, p = _trace_arrays(t_s, power_w)
    out = np.full(t.shape, np.nan)
    valid = np.flatnonzero(np.isfinite(p))
    if valid.size == 0:
        return out
    tv, pv = t[valid], p[valid]
    steps = 0.5 * (pv[1:] + pv[:-1]) * np.diff(tv)
    cum_valid = np.concatenate([[0.0], np.cumsum(steps)])
    # each sample takes the cumulative value of the latest valid reading at or before it
    last_valid = np.searchsorted(valid, np.arange(t.size), side="right") - 1
    have = last_valid >= 0
    out[have] = cum_valid[last_valid[have]]
    return out


def trapezoid_energy_j(t_s, power_w) -> float:
    """Total energy in joules of a power trace (trapezoid rule); see `cumulative_trapezoid_energy_j`.

    A trace with a single valid reading spans no time and gives 0 J; a trace with no valid
    reading is not a measurement and raises ParameterError.
    """
    cum = cumulative_trapezoid_energy_j(t_s, power_w)
    finite = cum[np.isfinite(cum)]
    if finite.size == 0:
        raise ParameterError("the power trace has no valid reading: its energy is not measured, not 0 J")
    return float(finite[-1])


class CounterDeltas(NamedTuple):
    """Increments of a cumulative energy counter, in the counter's raw unit."""

    deltas: np.ndarray  # [n] increment since the previous valid reading (0 at the first / failed ones)
    n_wraps: int  # counter passed its maximum and restarted from 0 (RAPL)
    n_resets: int  # counter went back with no known wrap value (NVML: driver reloaded)


def counter_delta(previous: float, current: float, *, wrap_at: float | None = None) -> tuple[float, str]:
    """Increment between two readings of a cumulative energy counter.

    Parameters
    ----------
    previous, current : float >= 0
        Consecutive raw readings (e.g. uJ for RAPL, mJ for NVML).
    wrap_at : float > 0 or None
        The value at which the counter wraps to 0 (RAPL's ``max_energy_range_uj``). ``None`` for a
        counter that does not wrap in practice (NVML's 64-bit mJ counter takes ~5e8 years at 1 kW);
        a decrease then means the counter was reset and ``current`` is the energy since the reset.

    Returns
    -------
    delta : float
        Energy between the readings, in the counter's unit. Assumes at most one wrap between
        readings, so the sampling interval must be shorter than the wrap period.
    event : {"ok", "wrap", "reset"}
    """
    if not (math.isfinite(previous) and math.isfinite(current)) or previous < 0 or current < 0:
        raise ParameterError(f"counter readings must be finite and >= 0, got {previous} and {current}")
    if wrap_at is not None:
        positive_number("wrap_at", wrap_at, unit="the counter's maximum")
        if previous > wrap_at or current > wrap_at:
            raise ParameterError(
                f"counter reading {max(previous, current)} exceeds its wrap value wrap_at={wrap_at}"
            )
    if current >= previous:
        return current - previous, "ok"
    if wrap_at is not None:
        return (wrap_at - previous) + current, "wrap"
    return current, "reset"


def counter_deltas(readings, *, wrap_at: float | None = None) -> CounterDeltas:
    """Increments of a trace of cumulative counter readings; ``NaN`` marks a failed reading.

    A failed reading loses nothing: the next valid reading is differenced against the last valid
    one. See `counter_delta` for ``wrap_at`` and the wrap/reset rules.

    Parameters
    ----------
    readings : array_like of float, shape [n]
    wrap_at : float > 0 or None

    Returns
    -------
    CounterDeltas
        ``deltas`` [n] in the readings' unit (``cumsum`` gives energy since the first valid reading).
    """
    r = np.asarray(readings, dtype=np.float64)
    if r.ndim != 1:
        raise ParameterError(f"counter readings must be 1-D, got shape {r.shape}")
    deltas = np.zeros(r.shape)
    n_wraps = n_resets = 0
    previous = None
    for i, value in enumerate(r):
        if not math.isfinite(value):
            continue
        if previous is not None:
            deltas[i], event = counter_delta(previous, float(value), wrap_at=wrap_at)
            n_wraps += event == "wrap"
            n_resets += event == "reset"
        previous = float(value)
    return CounterDeltas(deltas, n_wraps, n_resets)


def check_factor(name: str, value: float, low: float, high: float, meaning: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ParameterError(f"{name}={value!r} must be a number in [{low}, {high}] ({meaning})")
    if not low <= value <= high:
        raise ParameterError(f"{name}={value} must be in [{low}, {high}] ({meaning})")
    return float(value)


def co2e_kg(energy_kwh: float, *, pue: float, carbon_intensity_kg_per_kwh: float) -> float:
    """CO2-equivalent emissions of IT energy: ``energy_kwh x pue x carbon_intensity_kg_per_kwh``.

    Apply it once, to the total IT energy (GPU + CPU + DRAM as measured at the devices); PUE
    scales that up to the facility's draw and the intensity turns facility kWh into kg CO2e.

    Parameters
    ----------
    energy_kwh : float >= 0
    pue : float in [1, 10]
        Power usage effectiveness (facility energy / IT energy); 1.58 in Strubell et al.
    carbon_intensity_kg_per_kwh : float in [0, 10]
        kg CO2e per kWh drawn from the grid; 0.477 in the paper.
    """
    if not math.isfinite(energy_kwh) or energy_kwh < 0:
        raise ParameterError(f"energy_kwh={energy_kwh} must be a finite number >= 0")
    pue = check_factor("pue", pue, 1.0, 10.0, "facility energy / IT energy")
    ci = check_factor("carbon_intensity_kg_per_kwh", carbon_intensity_kg_per_kwh, 0.0, 10.0, "kg CO2e per kWh")
    return energy_kwh * pue * ci
