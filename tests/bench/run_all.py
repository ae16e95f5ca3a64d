"""`make bench`: every benchmark that can run on this machine, with short settings, then a list
of what ran, what failed and what was skipped and why.

Run: ``.venv/bin/python tests/bench/run_all.py [--full] [--only NAME,...]``. ``--full`` gives
each benchmark its own default length (the figures quoted in docs/benchmarks.md); the default is a
quick pass of a few minutes. Exit status 1 when a benchmark that ran failed; skips are not
failures. Each benchmark prints its own figures and names the machine it measures.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
SOUNDFONTS = (Path("/usr/share/sounds/sf2/FluidR3_GM.sf2"), Path("/usr/share/sounds/sf2/TimGM6mb.sf2"))


def _missing_module(name: str) -> str | None:
    return None if importlib.util.find_spec(name) is not None else f"the Python package {name} is not installed"


def _needs_jackd() -> str | None:
    if shutil.which("jackd") is None or shutil.which("jack_wait") is None:
        return "jackd is not installed (make system installs jackd2)"
    return _missing_module("rtmidi")


def _needs_soundfonts() -> str | None:
    missing = [str(p) for p in SOUNDFONTS if not p.is_file()]
    if missing:
        return f"{', '.join(missing)} missing (make system installs fluid-soundfont-gm timgm6mb-soundfont)"
    return _missing_module("fluidsynth")


def _needs_real_recordings() -> str | None:
    spec = importlib.util.spec_from_file_location("bench_real_recordings", HERE / "bench_real_recordings.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    missing = bench.missing_packages()
    if missing:
        return f"the Debian packages {', '.join(missing)} are not installed (make bench-system installs them)"
    return _missing_module("fluidsynth")


def _needs_chromium() -> str | None:
    if shutil.which("chromium") is None or shutil.which("chromedriver") is None:
        return "chromium and chromium-driver are not installed (make system installs them)"
    return _needs_jackd() or _missing_module("selenium")


def _needs_nvidia_gpu() -> str | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        count = pynvml.nvmlDeviceGetCount()
        pynvml.nvmlShutdown()
    except Exception as exc:  # pynvml missing, no driver, no library: all mean "no GPU to measure"
        return f"no NVIDIA GPU readable through NVML here ({type(exc).__name__}); run it where a GPU is lent"
    return None if count else "NVML reports no GPU"


@dataclass(frozen=True)
class Bench:
    """One benchmark script: its quick and full arguments, and what it needs to run here."""

    script: str
    quick: tuple[str, ...] = ()
    full: tuple[str, ...] = ()
    needs: Callable[[], str | None] = lambda: None
    by_hand: str = ""  # set when the script always needs inputs only a person can choose

    @property
    def name(self) -> str:
        return Path(self.script).stem


BENCHES = (
    Bench("bench_engine.py", quick=("--seconds", "4")),
    Bench("bench_inpaint.py", quick=("--part", "speed", "--quick"), full=("--part", "speed")),
    Bench("bench_inpaint.py", quick=("--part", "engine", "--quick"), full=("--part", "engine")),
    Bench("bench_band_level.py"),
    Bench("bench_quality.py", quick=("--stride", "16", "--throughput-steps", "5"), needs=_needs_soundfonts),
    Bench("bench_real_recordings.py", needs=_needs_real_recordings),
    # real recordings join the held-out notes when `make bench-system` installed them
    Bench("bench_gap_filling.py", full=("--full",), needs=_needs_soundfonts),
    Bench("bench_live.py", quick=("--minutes", "0.5"), needs=_needs_jackd),
    Bench("bench_synthesis_pairs.py", quick=("--stride", "64"), needs=_needs_soundfonts),
    Bench("bench_latency.py", quick=("--seconds", "4", "--live-seconds", "6"), needs=_needs_jackd),
    Bench("bench_scripted.py", quick=("--seconds", "3")),
    Bench("bench_column_step.py", quick=("--seconds", "2", "--rounds", "1", "--no-ops")),
    Bench("bench_start.py", quick=("--runs", "1"), needs=_needs_jackd),
    Bench("bench_quantizer.py", quick=("--repeats", "10")),
    Bench("bench_precision.py", quick=("--seconds", "3", "--rounds", "1")),
    Bench("bench_file_render.py", quick=("--seconds", "3", "--rounds", "1", "--model", "default", "--chain", "none")),
    Bench("bench_network_size.py", quick=("--seconds", "3", "--rounds", "1")),
    Bench("bench_ui.py", quick=("--seconds", "15", "--rounds", "1"), needs=_needs_chromium),
    Bench("gpu_energy_check.py", quick=("--seconds", "20"), needs=_needs_nvidia_gpu),
    Bench(
        "bench_paper_anchor.py",
        by_hand="needs --variant, --train-data and --heldout (rendered notes) and trains for about "
        "27 minutes per variant; see its docstring",
    ),
)


def unlisted() -> list[str]:
    """Benchmark scripts of tests/bench that BENCHES does not name (a new one must be added);
    modules named ``_*.py`` hold what benchmarks share."""
    listed = {bench.script for bench in BENCHES}
    return sorted(p.name for p in HERE.glob("*.py")
                  if p.name not in listed and p.name != Path(__file__).name and not p.name.startswith("_"))


@dataclass
class Outcome:
    ran: list[tuple[str, float, int]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def run_all(*, full: bool, only: set[str] | None) -> Outcome:
    outcome = Outcome()
    for bench in BENCHES:
        args = bench.full if full else bench.quick
        label = " ".join([bench.name, *args])
        if only is not None and bench.name not in only:
            continue
        why = bench.by_hand or bench.needs()
        if why:
            outcome.skipped.append((label, why))
            print(f"\n=== {label}: skipped, {why}", flush=True)
            continue
        print(f"\n=== {label}", flush=True)
        started = time.perf_counter()
        status = subprocess.run([sys.executable, str(HERE / bench.script), *args]).returncode
        outcome.ran.append((label, time.perf_counter() - started, status))
    return outcome


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="each benchmark's own default length (long)")
    parser.add_argument("--only", default=None, metavar="NAME,...", help="only these, e.g. bench_engine,bench_live")
    args = parser.parse_args(argv)
    only = None if args.only is None else {n.strip().removesuffix(".py") for n in args.only.split(",") if n.strip()}
    outcome = run_all(full=args.full, only=only)
    print("\n=== summary")
    for label, seconds, status in outcome.ran:
        print(f"  ran      {label} ({seconds:.0f} s){'' if status == 0 else f': FAILED, exit {status}'}")
    for label, why in outcome.skipped:
        print(f"  skipped  {label}: {why}")
    for name in unlisted():
        print(f"  skipped  {name}: not in tests/bench/run_all.py's table yet (say what it needs there)")
    return 1 if any(status != 0 for _, _, status in outcome.ran) else 0


if __name__ == "__main__":
    sys.exit(main())
