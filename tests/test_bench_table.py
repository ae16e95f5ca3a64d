"""`make bench` knows every benchmark: each script in tests/bench has a row in run_all's table; the
benchmarks' host cache factor."""

from pathlib import Path

import numpy as np
import pytest

from .scripts import load_script

BENCH = Path(__file__).resolve().parent / "bench"


def test_every_benchmark_is_in_the_make_bench_table():
    run_all = load_script(BENCH / "run_all.py")
    assert run_all.unlisted() == [], "add these to BENCHES in tests/bench/run_all.py, with what they need"
    for bench in run_all.BENCHES:
        assert (BENCH / bench.script).is_file(), bench.script
        why = bench.by_hand or bench.needs()
        assert why is None or isinstance(why, str) and why, bench.script


def test_the_host_cache_factor_measures_a_ratio_and_refuses_bad_settings():
    speed = load_script(BENCH / "_engine_speed.py")
    factor = speed.cold_cache_factor(megabytes=0.05, period_s=0.001, calls=5, rounds=1)
    assert np.isfinite(factor) and factor > 0.0
    with pytest.raises(ValueError, match="megabytes=0"):
        speed.cold_cache_factor(megabytes=0)
    with pytest.raises(ValueError, match="calls=0"):
        speed.cold_cache_factor(calls=0)
    assert speed.cold_cache_line(0.001).startswith("host cache: a 2 MB matrix product called every 1.00 ms costs ")
