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

Modules, by job: ``units`` (pure functions: units, integration, counters, CO2e), ``report``
(configuration, traces, summary, plot), ``sources`` (NVML, RAPL, TDP estimate), ``tracker``
(the sampling thread and the run-folder files), ``cli`` (the command-line options).
"""

from __future__ import annotations

from .units import (
    J_PER_KWH,
    DEFAULT_PUE,
    DEFAULT_CARBON_INTENSITY_KG_PER_KWH,
    FORMULA,
    CounterDeltas,
    milliwatts_to_watts,
    joules_to_kwh,
    millijoules_to_kwh,
    microjoules_to_kwh,
    trapezoid_energy_j,
    cumulative_trapezoid_energy_j,
    counter_delta,
    counter_deltas,
    co2e_kg,
)
from .report import (
    EnergyConfig,
    ComponentTrace,
    Phase,
    summarize_energy,
    format_summary,
    plot_energy,
)
from .tracker import (
    EnergyTracker,
    CSV_NAME,
    REPORT_NAME,
    SUMMARY_NAME,
    PLOT_NAME,
)
from .cli import (
    add_energy_arguments,
    tracker_from_args,
)

__all__ = [
    "J_PER_KWH",
    "DEFAULT_PUE",
    "DEFAULT_CARBON_INTENSITY_KG_PER_KWH",
    "FORMULA",
    "CounterDeltas",
    "milliwatts_to_watts",
    "joules_to_kwh",
    "millijoules_to_kwh",
    "microjoules_to_kwh",
    "trapezoid_energy_j",
    "cumulative_trapezoid_energy_j",
    "counter_delta",
    "counter_deltas",
    "co2e_kg",
    "EnergyConfig",
    "ComponentTrace",
    "Phase",
    "summarize_energy",
    "format_summary",
    "plot_energy",
    "EnergyTracker",
    "CSV_NAME",
    "REPORT_NAME",
    "SUMMARY_NAME",
    "PLOT_NAME",
    "add_energy_arguments",
    "tracker_from_args",
]
