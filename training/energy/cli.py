"""Command-line options of the energy tracker (`spectro-fx-train fit` and the experiments).

The options become an EnergyTracker at the command's edge; the training loop only enters it.
"""

from __future__ import annotations

import argparse

from .tracker import EnergyTracker
from .units import DEFAULT_CARBON_INTENSITY_KG_PER_KWH, DEFAULT_PUE

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
