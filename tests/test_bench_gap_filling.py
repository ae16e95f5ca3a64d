"""The gap-filling benchmark's `--temperatures`: what it accepts, what it refuses, and which
settings each inpainter is measured at (the benchmark itself takes minutes: not run here)."""

from pathlib import Path

import pytest

from .scripts import load_script

SCRIPT = Path(__file__).resolve().parent / "bench" / "bench_gap_filling.py"


@pytest.fixture(scope="module")
def bench():
    return load_script(SCRIPT)


def test_temperatures_are_sorted_once_each(bench):
    assert bench.temperature_list("1, 0.25,0,0.25") == (0.0, 0.25, 1.0)
    assert bench.temperature_list("0.5") == (0.5,)


@pytest.mark.parametrize("text, bad", [("0,-0.5,1", "-0.5"), ("0,warm", "warm"), ("nan", "nan"), ("0,,1", "")])
def test_bad_temperatures_are_refused_by_name(bench, capsys, text, bad):
    with pytest.raises(SystemExit):
        bench.main(["--temperatures", text])
    error = capsys.readouterr().err
    assert f"temperature {bad!r} in {text!r} must be a number >= 0" in error


def test_sampling_methods_at_each_temperature_the_others_at_zero(bench):
    seeds = (1, 2)
    assert bench.settings("neural", (0.0, 0.5, 1.0), seeds) == [(0.0, (1,)), (0.5, (1, 2)), (1.0, (1, 2))]
    assert bench.settings("spatial r2 both", (0.5,), seeds) == [(0.5, (1, 2))]
    assert bench.settings("last column", (0.0, 0.5, 1.0), seeds) == [(0.0, (1,))]
    # the default is what make bench measured before the option: 0 with one seed, 1 with all
    assert bench.settings("neural", bench.TEMPERATURES, seeds) == [(0.0, (1,)), (1.0, (1, 2))]


def test_the_target_line_gives_the_open_band_against_the_input_and_against_the_codecs_own(bench):
    def figures(mel, recovered):
        return {"mel": mel, "recovered": recovered}

    summary = {("spatial r1 both", "output", 0.0): figures(10.0, 0.10), ("learned NB", "output", 0.0): figures(12.0, 0.05),
               ("neural", "output", 0.0): figures(6.0, 0.25), ("resynthesis", "-", 0.0): figures(0.0, 1.0)}
    open_levels = {("neural", "output", 0.0): -9.0, ("resynthesis", "-", 0.0): -6.5}
    [line] = bench.target_lines("notes", summary, open_levels)
    assert "mel 6.00 vs best NB 10.00 (spatial r1 both): +40 % lower" in line
    assert "codes recovered 0.250 vs 0.100 (spatial r1 both): 2.50x" in line
    assert line.endswith("open band -9.0 dB vs the input (target within 3 dB), -2.5 dB vs their resynthesis (-6.5 dB)")
    del open_levels[("resynthesis", "-", 0.0)]
    assert bench.target_lines("notes", summary, open_levels)[0].endswith("(target within 3 dB)")
    assert bench.target_lines("notes", summary, open_levels, "neural other") == []
