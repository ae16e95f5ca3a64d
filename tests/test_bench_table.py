"""`make bench` knows every benchmark: each script in tests/bench has a row in run_all's table."""

import importlib.util
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent / "bench"


def test_every_benchmark_is_in_the_make_bench_table():
    spec = importlib.util.spec_from_file_location("run_all", BENCH / "run_all.py")
    run_all = importlib.util.module_from_spec(spec)
    sys.modules["run_all"] = run_all  # dataclasses look their module up there
    try:
        spec.loader.exec_module(run_all)
    finally:
        del sys.modules["run_all"]
    assert run_all.unlisted() == [], "add these to BENCHES in tests/bench/run_all.py, with what they need"
    for bench in run_all.BENCHES:
        assert (BENCH / bench.script).is_file(), bench.script
        why = bench.by_hand or bench.needs()
        assert why is None or isinstance(why, str) and why, bench.script
