"""The energy report: configuration, recorded traces and phases, the summary (JSON and text)
and the plot of power and cumulative CO2e (Figure 11 of the paper).
"""

from __future__ import annotations

import math
import os
import socket
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Sequence

import numpy as np

from ...models.atomic import atomic_open
from ...models.errors import ParameterError
from .units import (
    check_factor,
    co2e_kg,
    counter_deltas,
    CounterDeltas,
    cumulative_trapezoid_energy_j,
    DEFAULT_CARBON_INTENSITY_KG_PER_KWH,
    DEFAULT_PUE,
    FORMULA,
    joules_to_kwh,
    trapezoid_energy_j,
)

REPORT_FORMAT = "spectro-fx energy report"
REPORT_VERSION = 1
MAX_LISTED_PHASES = 40  # more epochs than this: the summary and plot show the first and last only


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
        check_factor("interval_s", self.interval_s, 0.01, 3600.0, "seconds between samples")
        check_factor("pue", self.pue, 1.0, 10.0, "facility energy / IT energy; 1.58 after Strubell et al.")
        check_factor(
            "carbon_intensity_kg_per_kwh", self.carbon_intensity_kg_per_kwh, 0.0, 10.0,
            "kg CO2e per kWh; 0.477 in the paper",
        )
        if self.tdp_estimate_w is not None:
            check_factor("tdp_estimate_w", self.tdp_estimate_w, 1e-3, 10000.0, "CPU watts assumed when RAPL is unreadable")


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


def iso_utc(t_wall: float) -> str:
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
        "started_utc": iso_utc(t_wall_start) if t_wall_start is not None else None,
        "ended_utc": iso_utc(t_wall_start + duration) if t_wall_start is not None else None,
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
