"""`make bench` knows every benchmark: each script in tests/bench has a row in run_all's table."""

from pathlib import Path

from .scripts import load_script

BENCH = Path(__file__).resolve().parent / "bench"


def test_every_benchmark_is_in_the_make_bench_table():
    run_all = load_script(BENCH / "run_all.py")
    assert run_all.unlisted() == [], "add these to BENCHES in tests/bench/run_all.py, with what they need"
    for bench in run_all.BENCHES:
        assert (BENCH / bench.script).is_file(), bench.script
        why = bench.by_hand or bench.needs()
        assert why is None or isinstance(why, str) and why, bench.script
