"""Energy and CO2e accounting for training runs: GPU power and energy through NVML, CPU package and
DRAM energy through Linux RAPL, sampled by a background thread and reported per epoch and in total.

Measurement rules, so the numbers can be cited:

- A cumulative hardware energy counter is preferred over integrating power: NVML's
  ``nvmlDeviceGetTotalEnergyConsumption`` (mJ since the driver loaded, Volta and newer) and RAPL's
  ``energy_uj`` (wraps at ``max_energy_range_uj``). Only where no counter exists is power
  (``nvmlDeviceGetPowerUsage``, mW) integrated with the trapezoid rule.
- A component that cannot be read is "not measured" (``null`` and a reason), never zero. An
  estimate from a configured CPU TDP is made only when asked for and is labelled an estimate.
- CO2e is computed once, on the total: ``CO2e [kg] = E [kWh] x PUE x carbon intensity [kg/kWh]``
  (PUE 1.58 and 0.477 kg CO2e/kWh by default, after Strubell et al. 2019); the report carries the
  formula with its inputs.
- NVML and RAPL see whole devices: other processes' load on the same GPU or CPU is included.

Typical use::

    with EnergyTracker(run_dir, writer=summary_writer) as tracker:
        for epoch in range(n_epochs):
            tracker.mark_epoch(epoch)
            for step, batch in ...:
                ...
                tracker.mark_step(global_step)
    tracker.report["total"]["co2e_kg"]

Files written into ``run_dir``: ``energy.csv`` (one row per device per sample, appended as it
runs), ``energy_report.json``, ``energy_summary.txt`` and ``energy.png`` (power over time and
cumulative CO2e, like Figure 11 of the paper); all but the running CSV are written atomically.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import numbers
import os
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np

from ..models.atomic import atomic_open
from ..models.errors import ParameterError

__all__ = [
    "J_PER_KWH",
    "DEFAULT_PUE",
    "DEFAULT_CARBON_INTENSITY_KG_PER_KWH",
    "EnergyConfig",
    "ComponentTrace",
    "CounterDeltas",
    "EnergyTracker",
    "milliwatts_to_watts",
    "joules_to_kwh",
    "millijoules_to_kwh",
    "microjoules_to_kwh",
    "trapezoid_energy_j",
    "cumulative_trapezoid_energy_j",
    "counter_delta",
    "counter_deltas",
    "co2e_kg",
    "summarize_energy",
    "format_summary",
    "plot_energy",
    "add_energy_arguments",
    "tracker_from_args",
]

J_PER_KWH = 3.6e6
DEFAULT_PUE = 1.58
DEFAULT_CARBON_INTENSITY_KG_PER_KWH = 0.477
REPORT_FORMAT = "spectro-fx energy report"
REPORT_VERSION = 1

CSV_NAME = "energy.csv"
REPORT_NAME = "energy_report.json"
SUMMARY_NAME = "energy_summary.txt"
PLOT_NAME = "energy.png"
CSV_COLUMNS = (
    "timestamp_utc",
    "elapsed_s",
    "phase",
    "step",
    "device",
    "status",
    "power_w",
    "cumulative_kwh",
    "cumulative_co2e_kg",
)
MAX_LISTED_PHASES = 40  # more epochs than this: the summary and plot show the first and last only
INTERIM_REPORT_S = 30.0  # seconds between interim report writes at epoch marks
FORMULA = "CO2e [kg] = E [kWh] x PUE x carbon_intensity [kg CO2e/kWh]"


# --------------------------------------------------------------------------------------------
# Pure functions: units, integration, counters, CO2e
# --------------------------------------------------------------------------------------------


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
        if not wrap_at > 0:
            raise ParameterError(f"wrap_at={wrap_at} must be > 0 (the counter's maximum)")
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


def _check_factor(name: str, value: float, low: float, high: float, meaning: str) -> float:
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
    pue = _check_factor("pue", pue, 1.0, 10.0, "facility energy / IT energy")
    ci = _check_factor("carbon_intensity_kg_per_kwh", carbon_intensity_kg_per_kwh, 0.0, 10.0, "kg CO2e per kWh")
    return energy_kwh * pue * ci


# --------------------------------------------------------------------------------------------
# Configuration and recorded traces
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EnergyConfig:
    """How the tracker samples and converts energy to CO2e.

    Parameters
    ----------
    interval_s : float in [0.01, 3600]
        Seconds between samples (1 s by default; NVML power on Ampere and newer is itself a
        1-s average). RAPL counters wrap after minutes at full load, so keep it well below that.
    pue : float in [1, 10]
        Power usage effectiveness of the data centre (1.58, Strubell et al. 2019).
    carbon_intensity_kg_per_kwh : float in [0, 10]
        Grid intensity in kg CO2e per kWh (0.477 as in the paper).
    tdp_estimate_w : float in (0, 10000] or None
        When set and CPU power cannot be measured (no readable RAPL), the CPU is counted at this
        constant power and the report marks it an estimate. ``None``: no estimate, CPU "not measured".
    """

    interval_s: float = 1.0
    pue: float = DEFAULT_PUE
    carbon_intensity_kg_per_kwh: float = DEFAULT_CARBON_INTENSITY_KG_PER_KWH
    tdp_estimate_w: float | None = None

    def __post_init__(self):
        _check_factor("interval_s", self.interval_s, 0.01, 3600.0, "seconds between samples")
        _check_factor("pue", self.pue, 1.0, 10.0, "facility energy / IT energy; 1.58 after Strubell et al.")
        _check_factor(
            "carbon_intensity_kg_per_kwh", self.carbon_intensity_kg_per_kwh, 0.0, 10.0,
            "kg CO2e per kWh; 0.477 in the paper",
        )
        if self.tdp_estimate_w is not None:
            _check_factor("tdp_estimate_w", self.tdp_estimate_w, 1e-3, 10000.0, "CPU watts assumed when RAPL is unreadable")


@dataclass(frozen=True)
class ComponentTrace:
    """What was recorded for one device over a run.

    Parameters
    ----------
    name : str
        Short id: ``gpu0``, ``cpu-package0``, ``dram0``, ``cpu-tdp-estimate``.
    kind : {"gpu", "cpu", "dram"}
    description : str
        Human-readable device and source.
    status : {"measured", "estimate"}
    method : {"counter", "power"}
        Energy from cumulative counter differences, or from integrating ``power_w``.
    power_w : np.ndarray of float, shape [n]
        Power at each sample in W (``NaN``: no reading; for RAPL, the mean since the previous sample).
    counter : np.ndarray of float, shape [n], or None
        Raw cumulative counter readings (``NaN``: failed), unit given by ``counter_unit_j``.
    counter_unit_j : float
        Joules per counter unit (1e-3 for NVML mJ, 1e-6 for RAPL uJ).
    wrap_at : float or None
        Counter wrap value in raw units (RAPL ``max_energy_range_uj``); ``None`` for NVML.
    failed_reads : int
        Readings that raised and were skipped.
    """

    name: str
    kind: str
    description: str
    status: str
    method: str
    power_w: np.ndarray
    counter: np.ndarray | None = None
    counter_unit_j: float = 1.0
    wrap_at: float | None = None
    failed_reads: int = 0

    def cumulative_energy_j(self, t_s) -> tuple[np.ndarray, CounterDeltas | None]:
        """Energy in J since the first valid reading at each sample, by the trace's method."""
        if self.method == "counter":
            if self.counter is None:
                raise ParameterError(f"component {self.name!r} uses method 'counter' but has no counter readings")
            deltas = counter_deltas(self.counter, wrap_at=self.wrap_at)
            cum = np.cumsum(deltas.deltas) * self.counter_unit_j
            first = np.flatnonzero(np.isfinite(self.counter))
            cum[: first[0] if first.size else cum.size] = np.nan
            return cum, deltas
        if self.method == "power":
            return cumulative_trapezoid_energy_j(t_s, self.power_w), None
        raise ParameterError(f"method={self.method!r} must be 'counter' or 'power'")


@dataclass(frozen=True)
class Phase:
    """A labelled stretch of the run between two samples (inclusive indices)."""

    label: str
    epoch: int | None
    start_index: int
    end_index: int


def _iso(t_wall: float) -> str:
    return datetime.fromtimestamp(t_wall, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def summarize_energy(
    t_s: Sequence[float],
    components: Sequence[ComponentTrace],
    *,
    config: EnergyConfig,
    phases: Sequence[Phase] = (),
    not_measured: Sequence[dict] = (),
    notes: Sequence[str] = (),
    t_wall_start: float | None = None,
) -> dict[str, Any]:
    """The energy report of a recorded run: per component, per phase and in total.

    Parameters
    ----------
    t_s : array_like of float, shape [n]
        Monotonic sample times in seconds.
    components : sequence of ComponentTrace
        Devices that were read (measured or estimated), each with ``n`` samples.
    config : EnergyConfig
        PUE and carbon intensity, applied once to the total energy.
    phases : sequence of Phase
        Epochs (or other labelled stretches); energy is the cumulative difference between their
        boundary samples.
    not_measured : sequence of dict
        ``{"name", "kind", "reason"}`` for each component that could not be read.
    notes : sequence of str
        Extra remarks carried into the report.
    t_wall_start : float or None
        Unix time of sample 0, for the report's UTC timestamps.

    Returns
    -------
    dict
        JSON-serialisable report (`format_summary` renders it as text). Energies are ``None``
        where nothing was measured.
    """
    t = np.asarray(t_s, dtype=np.float64)
    n = t.size
    duration = float(t[-1] - t[0]) if n else 0.0
    pue, ci = config.pue, config.carbon_intensity_kg_per_kwh

    def co2(kwh):
        return None if kwh is None else co2e_kg(kwh, pue=pue, carbon_intensity_kg_per_kwh=ci)

    cumulative: dict[str, np.ndarray] = {}
    comp_reports = []
    for comp in components:
        if comp.power_w.shape != t.shape or (comp.counter is not None and comp.counter.shape != t.shape):
            raise ParameterError(f"component {comp.name!r} has a trace of another length than the {n} sample times")
        cum, deltas = comp.cumulative_energy_j(t)
        cumulative[comp.name] = cum
        finite = cum[np.isfinite(cum)]
        energy_j = float(finite[-1]) if finite.size else None
        valid_power = comp.power_w[np.isfinite(comp.power_w)]
        entry: dict[str, Any] = {
            "name": comp.name,
            "kind": comp.kind,
            "description": comp.description,
            "status": comp.status,
            "method": {
                "counter": "cumulative energy counter, differenced",
                "power": "power samples integrated with the trapezoid rule",
            }[comp.method],
            "energy_j": energy_j,
            "energy_kwh": None if energy_j is None else joules_to_kwh(energy_j),
            "mean_power_w": energy_j / duration if energy_j is not None and duration > 0 else None,
            "peak_power_w": float(valid_power.max()) if valid_power.size else None,
            "samples": int(n),
            "failed_reads": int(comp.failed_reads),
            "reason": None if energy_j is not None else "no valid reading during the run",
        }
        if deltas is not None:
            entry["counter_wraps"] = deltas.n_wraps
            entry["counter_resets"] = deltas.n_resets
            # cross-check: the same interval integrated from the power readings, when there are any
            if comp.kind == "gpu" and np.isfinite(comp.power_w).sum() >= 2:
                power_j = trapezoid_energy_j(t, comp.power_w)
                entry["power_integral_kwh"] = joules_to_kwh(power_j)
                entry["power_integral_vs_counter"] = (power_j - energy_j) / energy_j if energy_j else None
        comp_reports.append(entry)

    def total_of(status: str, idx_from: int | None = None, idx_to: int | None = None) -> float | None:
        vals = []
        for comp in components:
            if comp.status != status:
                continue
            cum = cumulative[comp.name]
            if idx_from is None:
                finite = cum[np.isfinite(cum)]
                if finite.size:
                    vals.append(float(finite[-1]))
            else:
                a, b = cum[idx_from], cum[idx_to]
                if math.isfinite(b):
                    vals.append(float(b - (a if math.isfinite(a) else 0.0)))
        return joules_to_kwh(sum(vals)) if vals else None

    measured = total_of("measured")
    estimated = total_of("estimate")
    energy = None if measured is None and estimated is None else (measured or 0.0) + (estimated or 0.0)
    total: dict[str, Any] = {
        "energy_kwh": energy,
        "measured_energy_kwh": measured,
        "estimated_energy_kwh": estimated,
        "includes_estimate": estimated is not None,
        "facility_energy_kwh": None if energy is None else energy * pue,
        "co2e_kg": co2(energy),
        "components": [c.name for c in components],
        "not_measured": [m["name"] for m in not_measured],
        "formula": (
            f"{FORMULA} = {energy:.6g} x {pue:g} x {ci:g} = {co2(energy):.6g} kg"
            if energy is not None
            else f"{FORMULA}: not computed, no component could be measured"
        ),
        "reason": None if energy is not None else "no component could be measured (see not_measured)",
    }

    phase_reports = []
    for ph in phases:
        if not (0 <= ph.start_index <= ph.end_index < n):
            raise ParameterError(f"phase {ph.label!r} spans samples {ph.start_index}..{ph.end_index} outside 0..{n - 1}")
        per_comp = {}
        for comp in components:
            a, b = cumulative[comp.name][ph.start_index], cumulative[comp.name][ph.end_index]
            per_comp[comp.name] = (
                joules_to_kwh(float(b - (a if math.isfinite(a) else 0.0))) if math.isfinite(b) else None
            )
        m = total_of("measured", ph.start_index, ph.end_index)
        e = total_of("estimate", ph.start_index, ph.end_index)
        ph_energy = None if m is None and e is None else (m or 0.0) + (e or 0.0)
        phase_reports.append({
            "label": ph.label,
            "epoch": ph.epoch,
            "start_s": float(t[ph.start_index] - t[0]),
            "end_s": float(t[ph.end_index] - t[0]),
            "duration_s": float(t[ph.end_index] - t[ph.start_index]),
            "energy_kwh": ph_energy,
            "measured_energy_kwh": m,
            "estimated_energy_kwh": e,
            "co2e_kg": co2(ph_energy),
            "components_kwh": per_comp,
        })

    gaps = np.diff(t) if n > 1 else np.zeros(0)
    return {
        "format": REPORT_FORMAT,
        "version": REPORT_VERSION,
        "host": socket.gethostname(),
        "started_utc": _iso(t_wall_start) if t_wall_start is not None else None,
        "ended_utc": _iso(t_wall_start + duration) if t_wall_start is not None else None,
        "duration_s": duration,
        "samples": int(n),
        "interval_s": config.interval_s,
        "max_gap_s": float(gaps.max()) if gaps.size else None,
        "method": {
            "formula": FORMULA,
            "pue": pue,
            "carbon_intensity_kg_per_kwh": ci,
            "sources": "PUE 1.58 and 0.477 kg CO2e/kWh are the defaults of Strubell et al. (2019) as used in the paper",
            "energy": "counters (NVML total energy, RAPL energy_uj) differenced where available, else power integrated (trapezoid)",
            "scope": "whole devices as seen by NVML and RAPL, including other processes' load on them",
            "tdp_estimate_w": config.tdp_estimate_w,
        },
        "components": comp_reports,
        "not_measured": [
            {"name": m["name"], "kind": m["kind"], "status": "not measured", "energy_kwh": None, "reason": m["reason"]}
            for m in not_measured
        ],
        "total": total,
        "phases": phase_reports,
        "notes": list(notes),
    }


def _fmt_kwh(kwh: float | None) -> str:
    return "not measured" if kwh is None else f"{kwh:.6g} kWh"


def format_summary(report: dict[str, Any]) -> str:
    """A short plain-text rendering of a `summarize_energy` report, per phase and in total."""
    method = report["method"]
    lines = [
        f"Energy and CO2e of the run: {report['duration_s']:.1f} s, {report['samples']} samples "
        f"every {report['interval_s']:g} s ({report.get('started_utc') or '?'} .. {report.get('ended_utc') or '?'})",
    ]
    for comp in report["components"]:
        extra = ""
        if comp.get("power_integral_kwh") is not None and comp.get("power_integral_vs_counter") is not None:
            extra = f"; power integral {comp['power_integral_kwh']:.6g} kWh ({100 * comp['power_integral_vs_counter']:+.1f} %)"
        mean = f", mean {comp['mean_power_w']:.1f} W" if comp.get("mean_power_w") is not None else ""
        tag = "ESTIMATE" if comp["status"] == "estimate" else "measured"
        lines.append(f"  {comp['name']:<18} {tag:<9} {_fmt_kwh(comp['energy_kwh'])}{mean} - {comp['description']} [{comp['method']}{extra}]")
    for miss in report["not_measured"]:
        lines.append(f"  {miss['name']:<18} NOT MEASURED: {miss['reason']}")
    total = report["total"]
    if total["energy_kwh"] is None:
        lines.append("Total: not measured (no component could be read on this machine); no CO2e figure.")
    else:
        est = (
            f" (of which {total['estimated_energy_kwh']:.6g} kWh ESTIMATED from TDP)" if total["includes_estimate"] else ""
        )
        lines.append(f"Total IT energy: {total['energy_kwh']:.6g} kWh{est}")
        lines.append(f"CO2e: {total['formula']}")
        if total["not_measured"]:
            lines.append(f"  (excludes, not measured: {', '.join(total['not_measured'])})")
    phases = report["phases"]
    if phases:
        lines.append("Per phase:")
        shown = phases if len(phases) <= MAX_LISTED_PHASES else [*phases[:3], None, *phases[-3:]]
        for ph in shown:
            if ph is None:
                kwh = [p["energy_kwh"] for p in phases if p["epoch"] is not None and p["energy_kwh"] is not None]
                spread = f"; per epoch {min(kwh):.6g} .. {max(kwh):.6g} kWh" if kwh else ""
                lines.append(f"  ... {len(phases) - 6} more (all in energy_report.json){spread}")
                continue
            co2 = "" if ph["co2e_kg"] is None else f"  {ph['co2e_kg']:.6g} kg CO2e"
            lines.append(f"  {ph['label']:<12} {ph['duration_s']:8.1f} s  {_fmt_kwh(ph['energy_kwh'])}{co2}")
    lines.append(f"PUE {method['pue']:g}, carbon intensity {method['carbon_intensity_kg_per_kwh']:g} kg CO2e/kWh.")
    for note in report.get("notes", []):
        lines.append(f"Note: {note}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# The plot
# --------------------------------------------------------------------------------------------


def plot_energy(
    path: str | os.PathLike,
    t_s: Sequence[float],
    components: Sequence[ComponentTrace],
    report: dict[str, Any],
) -> None:
    """Save a PNG like the paper's Figure 11: power per device over time (top) and cumulative
    CO2e (bottom), with phase boundaries; written atomically, matplotlib's Agg canvas only."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    t = np.asarray(t_s, dtype=np.float64)
    x = t - t[0] if t.size else t
    fig = Figure(figsize=(8, 6), layout="constrained")
    FigureCanvasAgg(fig)
    ax_p, ax_c = fig.subplots(2, 1, sharex=True)
    total_cum = None
    for comp in components:
        style = "--" if comp.status == "estimate" else "-"
        label = comp.name + (" (estimate)" if comp.status == "estimate" else "")
        ax_p.plot(x, comp.power_w, style, label=label)
        cum, _ = comp.cumulative_energy_j(t)
        cum = np.where(np.isfinite(cum), cum, 0.0)  # before a device's first reading it adds nothing yet
        total_cum = cum if total_cum is None else total_cum + cum
    pue = report["method"]["pue"]
    ci = report["method"]["carbon_intensity_kg_per_kwh"]
    if total_cum is not None:
        ax_c.plot(x, joules_to_kwh(total_cum) * pue * ci * 1e3, color="k")
        ax_p.legend(loc="best", fontsize="small")
    else:
        for ax in (ax_p, ax_c):
            ax.text(0.5, 0.5, "not measured on this machine", ha="center", va="center", transform=ax.transAxes)
    phases = report.get("phases", [])
    # boundaries help up to a few dozen epochs; beyond that they only hide the curves (and cost seconds)
    for ph in phases if len(phases) <= MAX_LISTED_PHASES else []:
        if ph["start_s"] > 0:
            for ax in (ax_p, ax_c):
                ax.axvline(ph["start_s"], color="0.7", linestyle=":", linewidth=0.8)
        if ph["epoch"] is not None:
            ax_p.annotate(f"e{ph['epoch']}", (ph["start_s"], 1.0), xycoords=("data", "axes fraction"),
                          xytext=(2, -10), textcoords="offset points", fontsize="x-small", color="0.4")
    ax_p.set_ylabel("power (W)")
    ax_p.set_title("Instantaneous power per device")
    ax_c.set_ylabel("g CO2e")
    ax_c.set_xlabel("time since start (s)")
    est = " incl. TDP estimate" if report["total"].get("includes_estimate") else ""
    ax_c.set_title(f"Cumulative CO2e (PUE {pue:g}, {ci:g} kg/kWh{est})")
    with atomic_open(path, "wb", suffix=".tmp") as fh:
        fig.savefig(fh, format="png", dpi=100)


# --------------------------------------------------------------------------------------------
# Device sources
# --------------------------------------------------------------------------------------------


class _Reading(NamedTuple):
    power_w: float | None
    counter: float | None


class _Source:
    """One device the sampler reads: a power reading and/or a raw cumulative counter."""

    name: str
    kind: str
    description: str
    status = "measured"
    method = "power"
    counter_unit_j = 1.0
    wrap_at: float | None = None
    derive_power = False  # power shown for a counter-only source is its mean since the previous sample

    def read(self) -> _Reading:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        pass


class _NvmlGpu(_Source):
    kind = "gpu"
    counter_unit_j = 1e-3  # mJ

    def __init__(self, pynvml, handle, index: int, name: str, *, use_counter: bool, use_power: bool):
        self._nvml = pynvml
        self._handle = handle
        self._use_counter = use_counter
        self._use_power = use_power
        self.name = f"gpu{index}"
        self.method = "counter" if use_counter else "power"
        source = "NVML total-energy counter (mJ)" if use_counter else "NVML power (mW), no energy counter on this GPU"
        self.description = f"{name} (NVML index {index}; {source})"

    def read(self) -> _Reading:
        power = counter = None
        errors = []
        if self._use_power:
            try:
                power = milliwatts_to_watts(float(self._nvml.nvmlDeviceGetPowerUsage(self._handle)))
            except self._nvml.NVMLError as exc:
                errors.append(exc)
        if self._use_counter:
            try:
                counter = float(self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle))
            except self._nvml.NVMLError as exc:
                errors.append(exc)
        if errors and power is None and counter is None:
            raise _ReadError(str(errors[0]))
        return _Reading(power, counter)

    def close(self) -> None:
        try:
            self._nvml.nvmlShutdown()
        except self._nvml.NVMLError:
            pass


class _RaplZone(_Source):
    method = "counter"
    counter_unit_j = 1e-6  # uJ
    derive_power = True

    def __init__(self, zone: Path, *, name: str, kind: str, label: str, wrap_at: float):
        self._energy_file = zone / "energy_uj"
        self.name = name
        self.kind = kind
        self.wrap_at = wrap_at
        self.description = f"{label} (RAPL {zone.name}, energy_uj counter wrapping at {wrap_at:.0f} uJ)"

    def read(self) -> _Reading:
        try:
            return _Reading(None, float(self._energy_file.read_text().strip()))
        except (OSError, ValueError) as exc:
            raise _ReadError(f"{self._energy_file}: {exc}") from exc


class _TdpEstimate(_Source):
    kind = "cpu"
    status = "estimate"
    method = "power"

    def __init__(self, tdp_w: float):
        self._tdp_w = float(tdp_w)
        self.name = "cpu-tdp-estimate"
        self.description = f"CPU assumed at the configured TDP of {tdp_w:g} W (an ESTIMATE, not a measurement)"

    def read(self) -> _Reading:
        return _Reading(self._tdp_w, None)


class _ReadError(Exception):
    """A device reading failed this time; the sample is skipped for that device."""


def _visible_gpu_entries(value: str | None, count: int) -> list[str] | None:
    """CUDA_VISIBLE_DEVICES as a list of entries (indices or UUID prefixes), None when unset.

    CUDA stops at the first invalid entry (e.g. ``-1``), so do we.
    """
    if value is None:
        return None
    entries = []
    for item in value.split(","):
        item = item.strip()
        if re.fullmatch(r"\d+", item):
            if int(item) >= count:
                break
            entries.append(item)
        elif item.startswith(("GPU-", "MIG-")):
            entries.append(item)
        else:
            break
    return entries


def _discover_nvml() -> tuple[list[_Source], list[dict], list[str]]:
    """NVML sources for every visible GPU, the GPUs that cannot be read, and notes."""
    try:
        import pynvml
    except ImportError:
        return [], [{"name": "gpu", "kind": "gpu", "reason": "the pynvml module (package nvidia-ml-py) is not installed"}], []
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return [], [{
            "name": "gpu",
            "kind": "gpu",
            "reason": f"NVML is not available ({exc}): no NVIDIA GPU or driver on this machine",
        }], []
    try:
        sources, missing, notes = _nvml_sources(pynvml)
    except pynvml.NVMLError as exc:
        return [], [{"name": "gpu", "kind": "gpu", "reason": f"NVML failed while listing GPUs ({exc})"}], []
    finally:
        pynvml.nvmlShutdown()
    return sources, missing, notes


def _nvml_sources(pynvml) -> tuple[list[_Source], list[dict], list[str]]:
    sources: list[_Source] = []
    missing: list[dict] = []
    notes: list[str] = []
    try:
        count = pynvml.nvmlDeviceGetCount()
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        uuids = [_text(pynvml.nvmlDeviceGetUUID(h)) for h in handles]
        entries = _visible_gpu_entries(os.environ.get("CUDA_VISIBLE_DEVICES"), count)
        if entries is None:
            chosen = list(range(count))
        else:
            chosen = []
            for entry in entries:
                if entry.isdigit():
                    chosen.append(int(entry))
                    continue
                if entry.startswith("MIG-"):
                    missing.append({"name": entry, "kind": "gpu", "reason": "a MIG instance has no power reading of its own"})
                    continue
                hits = [i for i, u in enumerate(uuids) if u.startswith(entry)]
                if len(hits) == 1:
                    chosen.append(hits[0])
                else:
                    missing.append({"name": entry, "kind": "gpu", "reason": f"CUDA_VISIBLE_DEVICES entry {entry!r} matches {len(hits)} GPUs"})
            if any(e.isdigit() for e in entries) and os.environ.get("CUDA_DEVICE_ORDER") != "PCI_BUS_ID":
                notes.append(
                    "CUDA_VISIBLE_DEVICES indices were taken as NVML (PCI bus) indices; set CUDA_DEVICE_ORDER=PCI_BUS_ID "
                    "so CUDA numbers GPUs the same way"
                )
        if count == 0 or (entries is not None and not chosen and not missing):
            missing.append({"name": "gpu", "kind": "gpu", "reason": "NVML runs but no GPU is visible to this process"})
        for i in dict.fromkeys(chosen):
            handle = handles[i]
            name = _text(pynvml.nvmlDeviceGetName(handle))
            power_ok = counter_ok = True
            errors = []
            try:
                pynvml.nvmlDeviceGetPowerUsage(handle)
            except pynvml.NVMLError as exc:
                power_ok = False
                errors.append(f"power: {exc}")
            try:
                pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
            except pynvml.NVMLError as exc:
                counter_ok = False
                errors.append(f"energy counter: {exc}")
            if not (power_ok or counter_ok):
                missing.append({"name": f"gpu{i}", "kind": "gpu", "reason": f"{name}: NVML cannot read it ({'; '.join(errors)})"})
                continue
            # each source holds one NVML reference so closing them all balances nvmlInit
            pynvml.nvmlInit()
            sources.append(_NvmlGpu(pynvml, handle, i, name, use_counter=counter_ok, use_power=power_ok))
    except pynvml.NVMLError:
        for source in sources:
            source.close()
        raise
    return sources, missing, notes


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _discover_rapl(root: Path) -> tuple[list[_Source], list[dict]]:
    """RAPL package and DRAM zones under ``root`` (``/sys/class/powercap``) that can be read.

    Core/uncore sub-zones are parts of the package and ``psys`` covers the whole platform, so
    they are left out to avoid counting energy twice.
    """
    def not_measured(reason_cpu: str, reason_dram: str | None = None) -> list[dict]:
        return [
            {"name": "cpu-package", "kind": "cpu", "reason": reason_cpu},
            {"name": "dram", "kind": "dram", "reason": reason_dram or reason_cpu},
        ]

    if not root.is_dir():
        return [], not_measured(f"{root} does not exist: no RAPL powercap interface (usual in VMs)")
    zones = sorted(p for p in root.glob("intel-rapl:*") if re.fullmatch(r"intel-rapl(:\d+)+", p.name))
    if not zones:
        return [], not_measured(f"no intel-rapl zone under {root}")
    sources: list[_Source] = []
    problems: dict[str, list[str]] = {"cpu": [], "dram": []}
    for zone in zones:
        try:
            zone_name = (zone / "name").read_text().strip()
        except OSError as exc:
            problems["cpu"].append(f"{zone}/name: {exc}")
            continue
        top_level = zone.name.count(":") == 1
        if top_level and zone_name.startswith("package-"):
            kind, name, label = "cpu", f"cpu-{zone_name.replace('-', '')}", f"CPU {zone_name}"
        elif zone_name == "dram":
            parent = zone.name.split(":")[1]
            kind, name, label = "dram", f"dram{parent}", f"DRAM of package-{parent}"
        else:
            continue
        try:
            wrap_at = float((zone / "max_energy_range_uj").read_text().strip())
            float((zone / "energy_uj").read_text().strip())
        except PermissionError:
            problems[kind].append(
                f"{zone / 'energy_uj'} is not readable by this user (root-only on current kernels)"
            )
            continue
        except (OSError, ValueError) as exc:
            problems[kind].append(f"{zone}: {exc}")
            continue
        sources.append(_RaplZone(zone, name=name, kind=kind, label=label, wrap_at=wrap_at))
    missing = []
    for kind, label in (("cpu", "cpu-package"), ("dram", "dram")):
        if not any(s.kind == kind for s in sources):
            reason = "; ".join(problems[kind]) or f"no RAPL {'package' if kind == 'cpu' else 'dram'} zone under {root}"
            missing.append({"name": label, "kind": kind, "reason": reason})
    return sources, missing


# --------------------------------------------------------------------------------------------
# The tracker
# --------------------------------------------------------------------------------------------


@dataclass
class _Recorder:
    """Per-source readings and the running totals the live CSV and TensorBoard show."""

    source: _Source
    power_w: list[float] = field(default_factory=list)
    counter: list[float] = field(default_factory=list)
    failed_reads: int = 0
    cum_j: float = math.nan
    _last_counter: float | None = None
    _last_power: tuple[float, float] | None = None  # (t, W)
    _last_counter_t: float | None = None

    def record(self, t: float, reading: _Reading | None) -> None:
        power = reading.power_w if reading else None
        count = reading.counter if reading else None
        wrap_at = self.source.wrap_at
        if count is not None and not (0 <= count <= (wrap_at if wrap_at is not None else math.inf)):
            # an impossible counter value is a failed reading, not a reason to stop the training
            self.failed_reads += 1
            count = None
        if power is not None and not (0 <= power < math.inf):
            self.failed_reads += 1
            power = None
        shown_power = power
        if self.source.method == "counter":
            if count is not None:
                if self._last_counter is None:
                    self.cum_j = 0.0
                else:
                    delta, _ = counter_delta(self._last_counter, count, wrap_at=self.source.wrap_at)
                    delta_j = delta * self.source.counter_unit_j
                    self.cum_j += delta_j
                    if self.source.derive_power and t > self._last_counter_t:
                        shown_power = delta_j / (t - self._last_counter_t)
                self._last_counter, self._last_counter_t = count, t
        elif power is not None:
            if self._last_power is None:
                self.cum_j = 0.0
            else:
                t0, p0 = self._last_power
                self.cum_j += 0.5 * (p0 + power) * (t - t0)
            self._last_power = (t, power)
        self.power_w.append(math.nan if shown_power is None else shown_power)
        self.counter.append(math.nan if count is None else count)

    def trace(self) -> ComponentTrace:
        src = self.source
        return ComponentTrace(
            name=src.name,
            kind=src.kind,
            description=src.description,
            status=src.status,
            method=src.method,
            power_w=np.asarray(self.power_w, dtype=np.float64),
            counter=np.asarray(self.counter, dtype=np.float64) if src.method == "counter" else None,
            counter_unit_j=src.counter_unit_j,
            wrap_at=src.wrap_at,
            failed_reads=self.failed_reads,
        )


class EnergyTracker:
    """Samples GPU (NVML) and CPU/DRAM (RAPL) energy in a background thread while code runs.

    Parameters
    ----------
    run_dir : path or None
        Folder for ``energy.csv`` (appended as it runs), ``energy_report.json``,
        ``energy_summary.txt`` and ``energy.png``; created if missing. ``None``: nothing is written,
        the report is only returned.
    interval_s : float in [0.01, 3600]
        Seconds between samples (1 s by default).
    pue : float in [1, 10]
        Power usage effectiveness, 1.58 by default.
    carbon_intensity_kg_per_kwh : float in [0, 10]
        kg CO2e per kWh, 0.477 by default.
    tdp_estimate_w : float or None
        CPU watts to assume when RAPL cannot be read; the report marks it an estimate.
    writer : torch.utils.tensorboard.SummaryWriter or None
        Receives ``energy/power_w/<device>``, ``energy/cumulative_kwh/<device>``,
        ``energy/cumulative_kwh/total`` and ``energy/co2e_kg/total`` every sample (x axis: the
        last `mark_step` step, else the sample index), and ``energy/epoch_kwh``,
        ``energy/epoch_co2e_kg`` per epoch (x axis: epoch). Nothing is logged for a quantity
        that is not measured. The caller keeps ownership (the tracker flushes, never closes it).
    rapl_root : path
        Where the powercap tree lives (``/sys/class/powercap``).

    Notes
    -----
    NVML and RAPL measure whole devices; under ``torchrun`` start one tracker per node (local
    rank 0), which sees every GPU in ``CUDA_VISIBLE_DEVICES``, or the GPUs are counted twice.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike | None = None,
        *,
        interval_s: float = 1.0,
        pue: float = DEFAULT_PUE,
        carbon_intensity_kg_per_kwh: float = DEFAULT_CARBON_INTENSITY_KG_PER_KWH,
        tdp_estimate_w: float | None = None,
        writer=None,
        rapl_root: str | os.PathLike = "/sys/class/powercap",
    ):
        self.config = EnergyConfig(
            interval_s=interval_s,
            pue=pue,
            carbon_intensity_kg_per_kwh=carbon_intensity_kg_per_kwh,
            tdp_estimate_w=tdp_estimate_w,
        )
        self.run_dir = None if run_dir is None else Path(run_dir)
        if self.run_dir is not None and self.run_dir.exists() and not self.run_dir.is_dir():
            raise ParameterError(f"run_dir={str(self.run_dir)!r} exists and is not a folder")
        self.writer = writer
        self.rapl_root = Path(rapl_root)
        self.report: dict[str, Any] | None = None
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._recorders: list[_Recorder] = []
        self._not_measured: list[dict] = []
        self._notes: list[str] = []
        self._t: list[float] = []
        self._t_wall0: float | None = None
        self._phase_starts: list[tuple[str, int | None, int]] = []  # (label, epoch, start sample)
        self._step: int | None = None
        self._phase_start_kwh: float | None = None
        self._last_interim = -math.inf
        self._csv = None
        self._started = False
        self._stopped = False
        self._sampler_error: str | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> "EnergyTracker":
        """Find the devices, take the first sample and start the sampler thread."""
        if self._started:
            raise ParameterError("this EnergyTracker was already started; make a new one per run")
        self._started = True
        gpus, gpu_missing, gpu_notes = _discover_nvml()
        rapl, rapl_missing = _discover_rapl(self.rapl_root)
        sources: list[_Source] = [*gpus, *rapl]
        self._not_measured = [*gpu_missing, *rapl_missing]
        self._notes.extend(gpu_notes)
        tdp = self.config.tdp_estimate_w
        if tdp is not None:
            if any(s.kind == "cpu" for s in rapl):
                self._notes.append(f"tdp_estimate_w={tdp:g} not used: the CPU package energy is measured through RAPL")
            else:
                sources.append(_TdpEstimate(tdp))
        self._recorders = [_Recorder(s) for s in sources]
        if self.run_dir is not None:
            try:
                self.run_dir.mkdir(parents=True, exist_ok=True)
                self._keep_previous_session()
                csv_path = self.run_dir / CSV_NAME
                with atomic_open(csv_path, suffix=".tmp", newline="") as fh:
                    csv.writer(fh).writerow(CSV_COLUMNS)
                self._csv = open(csv_path, "a", encoding="utf-8", newline="")
            except OSError as exc:
                for source in sources:
                    source.close()
                raise ParameterError(f"run_dir={str(self.run_dir)!r} cannot hold the energy files: {exc}") from exc
        self._t_wall0 = time.time()
        self._phase_starts = [("setup", None, 0)]
        self._sample()
        self._thread = threading.Thread(target=self._run, name="energy-sampler", daemon=True)
        self._thread.start()
        return self

    def _keep_previous_session(self) -> None:
        """A resumed run must not overwrite the energy of the session before it: its files are
        renamed with that session's start time (``energy_report.<start>.json`` ...)."""
        previous = self.run_dir / REPORT_NAME
        if not previous.exists():
            return
        try:
            stamp = json.loads(previous.read_text()).get("started_utc") or ""
        except (OSError, ValueError):
            stamp = ""
        stamp = re.sub(r"[^0-9TZ]", "", stamp) or datetime.fromtimestamp(
            previous.stat().st_mtime, tz=timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        for name in (CSV_NAME, REPORT_NAME, SUMMARY_NAME, PLOT_NAME):
            old = self.run_dir / name
            if old.exists():
                stem, ext = os.path.splitext(name)
                os.replace(old, self.run_dir / f"{stem}.{stamp}{ext}")
        self._notes.append(
            f"an earlier session's energy files in this folder were kept as *.{stamp}.*; this report covers this session only"
        )

    def stop(self, *, error: BaseException | None = None) -> dict[str, Any]:
        """Stop sampling, take the last sample, write the report files and return the report."""
        if not self._started:
            raise ParameterError("stop() before start(): this EnergyTracker never ran")
        if self._stopped:
            return self.report
        self._stopped = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            self._sample()
            self._log_phase_end()
            if error is not None:
                self._notes.append(f"the tracked code stopped with {type(error).__name__}: {error}")
            self.report = self._build_report()
            self._write_outputs(final=True)
        finally:
            if self._csv is not None:
                self._csv.close()
                self._csv = None
            for rec in self._recorders:
                rec.source.close()
        return self.report

    def __enter__(self) -> "EnergyTracker":
        return self.start()

    def __exit__(self, exc_type, exc, tb) -> None:
        self.stop(error=exc)

    # -- marks ---------------------------------------------------------------------------------

    def mark_epoch(self, epoch: int) -> None:
        """Epoch ``epoch`` begins now: the previous phase ends here (a sample is taken at once).

        The report then gives energy and CO2e per epoch; everything up to the next mark (or
        `stop`) counts in this epoch.
        """
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise ParameterError(f"epoch={epoch!r} must be an integer >= 0")
        self.mark_phase(f"epoch {int(epoch)}", epoch=int(epoch))

    def mark_phase(self, label: str, *, epoch: int | None = None) -> None:
        """A phase named ``label`` (e.g. ``"export"``) begins now; see `mark_epoch`."""
        if not self._started or self._stopped:
            raise ParameterError(f"mark_phase({label!r}) outside start()..stop()")
        with self._lock:
            self._sample()
            now_kwh = self._log_phase_end()
            self._phase_starts.append((str(label), epoch, len(self._t) - 1))
            self._phase_start_kwh = now_kwh
            # an interim report, so a run that dies later still leaves its finished epochs; at most
            # every INTERIM_REPORT_S, since a tiny data set can make every step an epoch
            if time.monotonic() - self._last_interim >= INTERIM_REPORT_S:
                self._last_interim = time.monotonic()
                self.report = self._build_report()
                self._write_outputs(final=False)

    def _log_phase_end(self) -> float | None:
        """Log the energy of the epoch that ends at the last sample to TensorBoard; returns the
        running total in kWh (None while nothing is measured)."""
        closed_epoch = self._phase_starts[-1][1]
        now_kwh = self._running_kwh()
        if self.writer is not None and closed_epoch is not None and now_kwh is not None:
            epoch_kwh = now_kwh - (self._phase_start_kwh if self._phase_start_kwh is not None else 0.0)
            cfg = self.config
            self.writer.add_scalar("energy/epoch_kwh", epoch_kwh, closed_epoch)
            self.writer.add_scalar(
                "energy/epoch_co2e_kg",
                co2e_kg(epoch_kwh, pue=cfg.pue, carbon_intensity_kg_per_kwh=cfg.carbon_intensity_kg_per_kwh),
                closed_epoch,
            )
        return now_kwh

    def note(self, text: str) -> None:
        """Add a remark to the report (e.g. "other nodes of this DDP run are not measured")."""
        self._notes.append(str(text))

    @property
    def current_epoch(self) -> int | None:
        """The epoch of the last `mark_epoch` (None before any, or after another `mark_phase`)."""
        return self._phase_starts[-1][1] if self._phase_starts else None

    def mark_step(self, step: int) -> None:
        """The training's global step now; used as the x axis of the TensorBoard scalars."""
        self._step = int(step)

    # -- sampling ------------------------------------------------------------------------------

    def _run(self) -> None:
        interval = self.config.interval_s
        next_t = time.monotonic() + interval
        while not self._stop.wait(max(0.0, next_t - time.monotonic())):
            try:
                self._sample()
            except Exception as exc:  # the sampler must never take the training down with it
                self._sampler_error = f"{type(exc).__name__}: {exc}"
                return
            next_t += interval
            now = time.monotonic()
            if next_t < now:  # fell behind (suspended, overloaded): skip the missed ticks
                next_t = now + interval

    def _sample(self) -> None:
        with self._lock:
            t = time.monotonic()
            t_wall = self._t_wall0 + (t - self._t[0]) if self._t else self._t_wall0
            for rec in self._recorders:
                try:
                    reading = rec.source.read()
                except _ReadError:
                    rec.failed_reads += 1
                    reading = None
                rec.record(t, reading)
            self._t.append(t)
            self._emit(t, t_wall)

    def _running_kwh(self) -> float | None:
        """Total energy so far (measured and estimated) from the live counters, None if nothing yet."""
        done = [rec.cum_j for rec in self._recorders if math.isfinite(rec.cum_j)]
        return joules_to_kwh(sum(done)) if done else None

    def _emit(self, t: float, t_wall: float) -> None:
        cfg = self.config
        elapsed = t - self._t[0]
        phase = self._phase_starts[-1][0]
        step = "" if self._step is None else str(self._step)
        stamp = _iso(t_wall)

        def co2(kwh: float) -> float:
            return co2e_kg(kwh, pue=cfg.pue, carbon_intensity_kg_per_kwh=cfg.carbon_intensity_kg_per_kwh)

        rows = []
        powers, energies = [], []
        for rec in self._recorders:
            p = rec.power_w[-1]
            kwh = joules_to_kwh(rec.cum_j) if math.isfinite(rec.cum_j) else None
            powers.append(p)
            if kwh is not None:
                energies.append(kwh)
            rows.append([
                stamp, f"{elapsed:.3f}", phase, step, rec.source.name, rec.source.status,
                "" if not math.isfinite(p) else f"{p:.3f}",
                "" if kwh is None else f"{kwh:.9g}",
                "" if kwh is None else f"{co2(kwh):.9g}",
            ])
        total_kwh = sum(energies) if energies else None
        total_p = sum(powers) if powers and all(math.isfinite(p) for p in powers) else None
        status = (
            "not measured" if total_kwh is None
            else "includes estimate" if any(r.source.status == "estimate" for r in self._recorders)
            else "measured"
        )
        rows.append([
            stamp, f"{elapsed:.3f}", phase, step, "total", status,
            "" if total_p is None else f"{total_p:.3f}",
            "" if total_kwh is None else f"{total_kwh:.9g}",
            "" if total_kwh is None else f"{co2(total_kwh):.9g}",
        ])
        if self._csv is not None:
            buf = io.StringIO()
            csv.writer(buf).writerows(rows)
            # one write per sample, so a reader never sees a half row
            self._csv.write(buf.getvalue())
            self._csv.flush()
        if self.writer is not None:
            gstep = self._step if self._step is not None else len(self._t) - 1
            for rec, p in zip(self._recorders, powers):
                if math.isfinite(p):
                    self.writer.add_scalar(f"energy/power_w/{rec.source.name}", p, gstep, walltime=t_wall)
                if math.isfinite(rec.cum_j):
                    self.writer.add_scalar(
                        f"energy/cumulative_kwh/{rec.source.name}", joules_to_kwh(rec.cum_j), gstep, walltime=t_wall
                    )
            if total_kwh is not None:
                self.writer.add_scalar("energy/cumulative_kwh/total", total_kwh, gstep, walltime=t_wall)
                self.writer.add_scalar("energy/co2e_kg/total", co2(total_kwh), gstep, walltime=t_wall)

    # -- reporting -----------------------------------------------------------------------------

    def _phases(self) -> list[Phase]:
        last = len(self._t) - 1
        bounds = [*self._phase_starts, (None, None, last)]
        phases = []
        for (label, epoch, a), (_, _, b) in zip(bounds[:-1], bounds[1:]):
            if label == "setup" and b == a:
                continue  # marked an epoch right at start: no setup phase to report
            phases.append(Phase(label=label, epoch=epoch, start_index=a, end_index=b))
        return phases

    def _build_report(self) -> dict[str, Any]:
        notes = list(self._notes)
        if self._sampler_error:
            notes.append(f"the sampler thread stopped early ({self._sampler_error}); later samples are missing")
        report = summarize_energy(
            self._t,
            [rec.trace() for rec in self._recorders],
            config=self.config,
            phases=self._phases(),
            not_measured=self._not_measured,
            notes=notes,
            t_wall_start=self._t_wall0,
        )
        report["completed"] = self._stopped
        return report

    def _write_outputs(self, *, final: bool) -> None:
        if self.run_dir is None:
            return
        report = self.report
        if final:
            try:
                plot_energy(self.run_dir / PLOT_NAME, self._t, [rec.trace() for rec in self._recorders], report)
            except ImportError as exc:  # a bare GPU box may lack matplotlib: the numbers matter more
                report["notes"].append(f"{PLOT_NAME} not written: {exc}")
        with atomic_open(self.run_dir / REPORT_NAME, suffix=".tmp") as fh:
            fh.write(json.dumps(report, indent=2) + "\n")
        with atomic_open(self.run_dir / SUMMARY_NAME, suffix=".tmp") as fh:
            fh.write(format_summary(report))
        if self.writer is not None:
            self.writer.flush()

    def snapshot(self) -> dict[str, Any]:
        """The report as it stands now (a sample is taken), without writing files."""
        with self._lock:
            if self._started and not self._stopped:
                self._sample()
            return self._build_report()


# --------------------------------------------------------------------------------------------
# CLI glue for `spectro-fx-train fit`
# --------------------------------------------------------------------------------------------


def add_energy_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--pue``, ``--carbon-intensity``, ``--energy-interval`` and ``--tdp-estimate-w``."""
    group = parser.add_argument_group(
        "energy and CO2e",
        "GPU energy is read through NVML and CPU/DRAM through RAPL every interval; what cannot be "
        "read is reported as not measured. Files: energy.csv, energy_report.json, "
        "energy_summary.txt, energy.png in the run folder.",
    )
    group.add_argument("--pue", type=float, default=DEFAULT_PUE, metavar="X",
                       help=f"data-centre power usage effectiveness, >= 1 (default {DEFAULT_PUE})")
    group.add_argument("--carbon-intensity", type=float, default=DEFAULT_CARBON_INTENSITY_KG_PER_KWH,
                       metavar="KG_PER_KWH",
                       help=f"grid carbon intensity in kg CO2e per kWh (default {DEFAULT_CARBON_INTENSITY_KG_PER_KWH})")
    group.add_argument("--energy-interval", type=float, default=1.0, metavar="SECONDS",
                       help="seconds between power/energy samples (default 1)")
    group.add_argument("--tdp-estimate-w", type=float, default=None, metavar="WATTS",
                       help="if CPU energy cannot be measured, count the CPU at this constant power, "
                            "reported as an ESTIMATE (default: no estimate, CPU 'not measured')")


def tracker_from_args(args: argparse.Namespace, run_dir, *, writer=None) -> EnergyTracker:
    """An `EnergyTracker` from the options of `add_energy_arguments` (ParameterError if out of range)."""
    return EnergyTracker(
        run_dir,
        interval_s=args.energy_interval,
        pue=args.pue,
        carbon_intensity_kg_per_kwh=args.carbon_intensity,
        tdp_estimate_w=args.tdp_estimate_w,
        writer=writer,
    )
