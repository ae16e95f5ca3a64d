"""The energy tracker: a background thread samples every source, marks epochs and steps, and
writes the CSV, the report, the summary and the plot into the run folder.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ...models.atomic import atomic_open
from ...models.errors import ParameterError, non_negative_int
from .report import (
    ComponentTrace,
    EnergyConfig,
    format_summary,
    iso_utc,
    Phase,
    plot_energy,
    summarize_energy,
)
from .sources import discover_nvml, discover_rapl, ReadError, Reading, Source, TdpEstimate
from .units import co2e_kg, counter_delta, DEFAULT_CARBON_INTENSITY_KG_PER_KWH, DEFAULT_PUE, joules_to_kwh

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
INTERIM_REPORT_S = 30.0  # seconds between interim report writes at epoch marks


@dataclass
class _Recorder:
    """Per-source readings and the running totals the live CSV and TensorBoard show."""

    source: Source
    power_w: list[float] = field(default_factory=list)
    counter: list[float] = field(default_factory=list)
    failed_reads: int = 0
    cum_j: float = math.nan
    _last_counter: float | None = None
    _last_power: tuple[float, float] | None = None  # (t, W)
    _last_counter_t: float | None = None

    def record(self, t: float, reading: Reading | None) -> None:
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
        gpus, gpu_missing, gpu_notes = discover_nvml()
        rapl, rapl_missing = discover_rapl(self.rapl_root)
        sources: list[Source] = [*gpus, *rapl]
        self._not_measured = [*gpu_missing, *rapl_missing]
        self._notes.extend(gpu_notes)
        tdp = self.config.tdp_estimate_w
        if tdp is not None:
            if any(s.kind == "cpu" for s in rapl):
                self._notes.append(f"tdp_estimate_w={tdp:g} not used: the CPU package energy is measured through RAPL")
            else:
                sources.append(TdpEstimate(tdp))
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
        non_negative_int("epoch", epoch)
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
                except ReadError:
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
        stamp = iso_utc(t_wall)

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
