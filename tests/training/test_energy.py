"""Tests of the energy and CO2e tracker: units, trapezoid integration and counter differencing on
recorded traces, CO2e applied once, and the tracker running on this machine as it really is."""

from __future__ import annotations

import csv
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from spectro_fx.models.errors import ParameterError
from spectro_fx.training import energy as en
from spectro_fx.training.energy import (
    ComponentTrace,
    EnergyConfig,
    EnergyTracker,
    Phase,
    co2e_kg,
    counter_delta,
    counter_deltas,
    cumulative_trapezoid_energy_j,
    joules_to_kwh,
    microjoules_to_kwh,
    millijoules_to_kwh,
    milliwatts_to_watts,
    summarize_energy,
    trapezoid_energy_j,
)

# A power trace shaped like the one recorded on the lent H100 (75 W idle, ~283 W training),
# sampled about once a second with jitter, as NVML returns it (integer milliwatts).
H100_T_S = np.array([0.0, 1.02, 2.01, 3.05, 4.0, 5.03, 6.01, 7.02, 8.0, 9.04, 10.0])
H100_MW = np.array([75_210, 75_480, 190_330, 281_020, 283_410, 284_950, 282_700, 283_100, 281_800, 120_400, 76_050])


def _trapezoid_oracle(t, p):
    return float(np.sum(0.5 * (p[1:] + p[:-1]) * np.diff(t)))


# -- units ---------------------------------------------------------------------------------------


def test_unit_conversions():
    assert milliwatts_to_watts(283_410) == pytest.approx(283.41)
    np.testing.assert_allclose(milliwatts_to_watts(H100_MW), H100_MW / 1000.0)
    assert joules_to_kwh(3.6e6) == pytest.approx(1.0)
    assert millijoules_to_kwh(3.6e9) == pytest.approx(1.0)
    assert microjoules_to_kwh(3.6e12) == pytest.approx(1.0)
    # 283 W for one hour, read as an NVML mJ counter difference, is 0.283 kWh
    assert millijoules_to_kwh(283 * 3600 * 1000) == pytest.approx(0.283)
    assert microjoules_to_kwh(283 * 3600 * 1e6) == pytest.approx(0.283)


# -- trapezoid -----------------------------------------------------------------------------------


def test_trapezoid_on_exact_shapes():
    t = np.linspace(0.0, 10.0, 11)
    assert trapezoid_energy_j(t, np.full(11, 100.0)) == pytest.approx(1000.0)
    assert trapezoid_energy_j(t, 10.0 * t) == pytest.approx(500.0)  # a ramp is integrated exactly
    assert trapezoid_energy_j([0.0], [250.0]) == 0.0  # one reading spans no time


def test_trapezoid_on_recorded_h100_trace():
    p = milliwatts_to_watts(H100_MW.astype(float))
    cum = cumulative_trapezoid_energy_j(H100_T_S, p)
    assert cum[0] == 0.0
    assert np.all(np.diff(cum) >= 0)
    assert cum[-1] == pytest.approx(_trapezoid_oracle(H100_T_S, p), rel=1e-12)
    assert cum[-1] == pytest.approx(np.trapezoid(p, H100_T_S), rel=1e-12)
    assert cum[4] == pytest.approx(_trapezoid_oracle(H100_T_S[:5], p[:5]), rel=1e-12)


def test_trapezoid_bridges_failed_readings_and_never_invents_energy():
    t = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    p = np.array([np.nan, 100.0, np.nan, 300.0, 300.0])
    cum = cumulative_trapezoid_energy_j(t, p)
    assert math.isnan(cum[0])  # nothing read yet: not measured, not 0
    assert cum[1] == 0.0
    assert cum[2] == 0.0  # a failed reading carries the last value
    assert cum[3] == pytest.approx(0.5 * (100 + 300) * 2)
    assert cum[4] == pytest.approx(400 + 300)
    with pytest.raises(ParameterError, match="not measured"):
        trapezoid_energy_j(t, np.full(5, np.nan))


@pytest.mark.parametrize(
    "t, p, match",
    [
        ([0.0, 2.0, 1.0], [1.0, 1.0, 1.0], "must not decrease"),
        ([0.0, 1.0], [1.0, -5.0], ">= 0 W"),
        ([0.0, 1.0], [1.0], "equal length"),
    ],
)
def test_trapezoid_rejects_bad_traces(t, p, match):
    with pytest.raises(ParameterError, match=match):
        cumulative_trapezoid_energy_j(t, p)


# -- counters ------------------------------------------------------------------------------------

RAPL_MAX_UJ = 262_143_328_850.0  # max_energy_range_uj of a Xeon package zone


def test_rapl_counter_wraps_around():
    readings = np.array([RAPL_MAX_UJ - 3e6, RAPL_MAX_UJ - 1e6, 4e6, 9e6])
    d = counter_deltas(readings, wrap_at=RAPL_MAX_UJ)
    np.testing.assert_allclose(d.deltas, [0.0, 2e6, 1e6 + 4e6, 5e6])
    assert (d.n_wraps, d.n_resets) == (1, 0)
    assert microjoules_to_kwh(d.deltas.sum()) == pytest.approx(12.0 / 3.6e6)  # 12 J
    assert counter_delta(RAPL_MAX_UJ - 10, 5, wrap_at=RAPL_MAX_UJ) == (15, "wrap")


def test_nvml_counter_reset_counts_energy_since_reset():
    # the mJ counter restarts from 0 when the driver reloads; no wrap value is known
    d = counter_deltas([1_000.0, 5_000.0, 300.0, 900.0])
    np.testing.assert_allclose(d.deltas, [0, 4000, 300, 600])
    assert (d.n_wraps, d.n_resets) == (0, 1)


def test_counter_failed_reading_loses_nothing():
    d = counter_deltas([0.0, np.nan, 3000.0, 3500.0])
    np.testing.assert_allclose(d.deltas, [0, 0, 3000, 500])


def test_counter_rejects_impossible_readings():
    with pytest.raises(ParameterError, match="exceeds its wrap value"):
        counter_delta(10.0, RAPL_MAX_UJ + 1, wrap_at=RAPL_MAX_UJ)
    with pytest.raises(ParameterError, match=">= 0"):
        counter_delta(-1.0, 5.0)


# -- CO2e and the report -------------------------------------------------------------------------


def _gpu_power_trace() -> ComponentTrace:
    return ComponentTrace(
        name="gpu0", kind="gpu", description="recorded H100 trace", status="measured", method="power",
        power_w=milliwatts_to_watts(H100_MW.astype(float)),
    )


def test_co2e_formula():
    assert co2e_kg(2.0, pue=1.5, carbon_intensity_kg_per_kwh=0.5) == pytest.approx(1.5)
    assert co2e_kg(1.0, pue=1.58, carbon_intensity_kg_per_kwh=0.477) == pytest.approx(0.75366)
    with pytest.raises(ParameterError, match="pue=0.5"):
        co2e_kg(1.0, pue=0.5, carbon_intensity_kg_per_kwh=0.477)


@pytest.mark.parametrize("pue, ci", [(1.0, 1.0), (1.58, 0.477), (2.0, 0.25)])
def test_pue_and_intensity_applied_once(pue, ci):
    cfg = EnergyConfig(pue=pue, carbon_intensity_kg_per_kwh=ci)
    phases = [Phase("epoch 0", 0, 0, 5), Phase("epoch 1", 1, 5, 10)]
    rep = summarize_energy(H100_T_S, [_gpu_power_trace()], config=cfg, phases=phases)
    e_kwh = joules_to_kwh(_trapezoid_oracle(H100_T_S, H100_MW / 1000.0))
    total = rep["total"]
    assert total["energy_kwh"] == pytest.approx(e_kwh, rel=1e-12)
    assert total["co2e_kg"] == pytest.approx(e_kwh * pue * ci, rel=1e-12)
    assert total["facility_energy_kwh"] == pytest.approx(e_kwh * pue, rel=1e-12)
    assert rep["components"][0]["energy_kwh"] == pytest.approx(e_kwh, rel=1e-12)  # components stay IT energy
    assert sum(ph["co2e_kg"] for ph in rep["phases"]) == pytest.approx(total["co2e_kg"], rel=1e-12)
    assert sum(ph["energy_kwh"] for ph in rep["phases"]) == pytest.approx(e_kwh, rel=1e-12)
    assert f"x {pue:g} x {ci:g}" in total["formula"]
    assert rep["method"]["pue"] == pue and rep["method"]["carbon_intensity_kg_per_kwh"] == ci


def test_counter_preferred_over_power_and_cross_checked():
    # counter says 10 % more than the power integral: the counter wins, the gap is reported
    p = milliwatts_to_watts(H100_MW.astype(float))
    cum_mj = np.concatenate([[0.0], np.cumsum(0.5 * (p[1:] + p[:-1]) * np.diff(H100_T_S))]) * 1.1 * 1e3
    counter = 5e9 + cum_mj  # counters start wherever the driver left them
    trace = ComponentTrace(
        name="gpu0", kind="gpu", description="H100", status="measured", method="counter",
        power_w=p, counter=counter, counter_unit_j=1e-3,
    )
    rep = summarize_energy(H100_T_S, [trace], config=EnergyConfig())
    comp = rep["components"][0]
    assert comp["energy_kwh"] == pytest.approx(millijoules_to_kwh(cum_mj[-1]), rel=1e-9)
    assert comp["power_integral_kwh"] == pytest.approx(comp["energy_kwh"] / 1.1, rel=1e-9)
    assert comp["power_integral_vs_counter"] == pytest.approx(1 / 1.1 - 1, rel=1e-6)


def test_nothing_measured_is_null_not_zero():
    missing = [{"name": "gpu", "kind": "gpu", "reason": "no NVML"}, {"name": "dram", "kind": "dram", "reason": "no RAPL"}]
    rep = summarize_energy([0.0, 1.0, 2.0], [], config=EnergyConfig(), phases=[Phase("epoch 0", 0, 0, 2)], not_measured=missing)
    assert rep["total"]["energy_kwh"] is None and rep["total"]["co2e_kg"] is None
    assert rep["total"]["reason"]
    assert rep["phases"][0]["energy_kwh"] is None
    assert [m["status"] for m in rep["not_measured"]] == ["not measured"] * 2
    assert all(m["energy_kwh"] is None and m["reason"] for m in rep["not_measured"])
    assert "not measured" in en.format_summary(rep)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"pue": 0.9}, "pue=0.9"),
        ({"carbon_intensity_kg_per_kwh": -0.1}, "carbon_intensity_kg_per_kwh=-0.1"),
        ({"interval_s": 0.0}, "interval_s=0.0"),
        ({"tdp_estimate_w": 0.0}, "tdp_estimate_w=0.0"),
        ({"pue": float("nan")}, "pue=nan"),
    ],
)
def test_bad_settings_are_refused(kwargs, match, tmp_path):
    with pytest.raises(ParameterError, match=match):
        EnergyTracker(tmp_path, **kwargs)


def test_run_dir_must_be_a_folder(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ParameterError, match="not a folder"):
        EnergyTracker(f)


# -- the tracker on this machine -----------------------------------------------------------------


def _nvml_works() -> bool:
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # any failure means: no GPU energy here
        return False
    pynvml.nvmlShutdown()
    return True


def _rapl_package_readable(root: Path = Path("/sys/class/powercap")) -> bool:
    for zone in root.glob("intel-rapl:*") if root.is_dir() else []:
        try:
            if (zone / "name").read_text().startswith("package-"):
                (zone / "energy_uj").read_text()
                return True
        except OSError:
            continue
    return False


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _train_tiny_vqvae(tracker: EnergyTracker, cfg, *, epochs: int, steps: int) -> None:
    from spectro_fx.models.vqvae import VQVAE

    model = VQVAE(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    frames = 16 * cfg.time_stride
    mag = torch.rand(4, cfg.stft.n_fft // 2 + 1, frames) ** 2
    step = 0
    for epoch in range(epochs):
        tracker.mark_epoch(epoch)
        for _ in range(steps):
            out = model(mag)
            loss = torch.mean((out.reconstruction - out.target) ** 2) + out.commitment_loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            tracker.mark_step(step)


def test_tracker_around_cpu_training_reports_what_this_machine_has(tmp_path, tiny_config):
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path / "tb"))
    with EnergyTracker(tmp_path, interval_s=0.05, writer=writer) as tracker:
        _train_tiny_vqvae(tracker, tiny_config, epochs=2, steps=3)
    writer.close()
    rep = json.loads((tmp_path / "energy_report.json").read_text())
    assert rep == json.loads(json.dumps(tracker.report))
    assert rep["completed"] is True
    assert [ph["label"] for ph in rep["phases"]] == ["setup", "epoch 0", "epoch 1"]
    names_missing = {m["name"] for m in rep["not_measured"]}
    kinds_measured = {c["kind"] for c in rep["components"] if c["status"] == "measured"}
    # what the report says must match what this machine has, checked independently
    if _nvml_works():
        assert "gpu" in kinds_measured
    else:
        assert "gpu" in names_missing and "gpu" not in kinds_measured
    if _rapl_package_readable():
        assert "cpu" in kinds_measured
    else:
        assert {"cpu-package", "dram"} <= names_missing and "cpu" not in kinds_measured
    for miss in rep["not_measured"]:
        assert miss["energy_kwh"] is None and miss["reason"]
    if not kinds_measured:
        assert rep["total"]["energy_kwh"] is None and rep["total"]["co2e_kg"] is None
    rows = _read_csv(tmp_path / "energy.csv")
    totals = [r for r in rows if r["device"] == "total"]
    assert len(totals) == rep["samples"] >= 4  # start, 2 epoch marks, stop at least
    if rep["total"]["energy_kwh"] is None:
        assert all(r["cumulative_kwh"] == "" and r["status"] == "not measured" for r in totals)
    assert {r["step"] for r in totals} >= {"3", "6"}
    assert (tmp_path / "energy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = (tmp_path / "energy_summary.txt").read_text()
    assert "epoch 1" in summary
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def _fake_powercap(root: Path) -> dict[str, Path]:
    """A powercap tree laid out as Linux does (top-level links to every zone), with counters the
    test sets by hand: package-0 with core and dram sub-zones, and psys."""
    zones = {
        "intel-rapl:0": ("package-0", RAPL_MAX_UJ),
        "intel-rapl:0:0": ("core", RAPL_MAX_UJ),
        "intel-rapl:0:1": ("dram", 65_712_999_613.0),
        "intel-rapl:1": ("psys", RAPL_MAX_UJ),
    }
    out = {}
    for zone, (name, max_uj) in zones.items():
        d = root / zone
        d.mkdir(parents=True)
        (d / "name").write_text(name + "\n")
        (d / "max_energy_range_uj").write_text(f"{max_uj:.0f}\n")
        (d / "energy_uj").write_text("0\n")
        out[name] = d / "energy_uj"
    return out


def test_rapl_zones_counted_once_and_wrap_handled(tmp_path):
    files = _fake_powercap(tmp_path / "powercap")

    def set_uj(name, value):
        files[name].write_text(f"{value:.0f}\n")

    set_uj("package-0", RAPL_MAX_UJ - 1e6)
    set_uj("dram", 1e6)
    set_uj("core", 1e6)
    set_uj("psys", 1e6)
    run = tmp_path / "run"
    # a long interval: only the start, mark and stop samples happen, at known counter values
    with EnergyTracker(run, interval_s=3600, rapl_root=tmp_path / "powercap", tdp_estimate_w=95) as tracker:
        set_uj("package-0", 0.5e6)  # wrapped: 1.5 J
        set_uj("dram", 1.25e6)
        set_uj("core", 9e9)  # inside the package: must not be added
        set_uj("psys", 9e9)  # the whole platform: must not be added
        tracker.mark_epoch(0)
        interim = json.loads((run / "energy_report.json").read_text())
        assert interim["completed"] is False and interim["phases"][0]["label"] == "setup"
        set_uj("package-0", 2.5e6)  # 2 J
        set_uj("dram", 1.5e6)
        tracker.mark_epoch(1)
        set_uj("package-0", 3.0e6)  # 0.5 J
    rep = tracker.report
    comps = {c["name"]: c for c in rep["components"]}
    assert set(comps) == {"cpu-package0", "dram0"}  # no core, no psys, no TDP estimate
    assert comps["cpu-package0"]["energy_j"] == pytest.approx(4.0)
    assert comps["cpu-package0"]["counter_wraps"] == 1
    assert comps["dram0"]["energy_j"] == pytest.approx(0.5)
    assert [ph["label"] for ph in rep["phases"]] == ["setup", "epoch 0", "epoch 1"]
    np.testing.assert_allclose(
        [ph["energy_kwh"] * 3.6e6 for ph in rep["phases"]], [1.5 + 0.25, 2.0 + 0.25, 0.5], rtol=1e-9
    )
    assert rep["total"]["energy_kwh"] == pytest.approx(4.5 / 3.6e6)
    assert rep["total"]["includes_estimate"] is False
    assert any("tdp_estimate_w=95 not used" in n for n in rep["notes"])
    assert not rep["not_measured"] or all(m["kind"] == "gpu" for m in rep["not_measured"])
    # the running CSV ends on the same totals the report gives
    last_total = [r for r in _read_csv(run / "energy.csv") if r["device"] == "total"][-1]
    assert float(last_total["cumulative_kwh"]) == pytest.approx(rep["total"]["energy_kwh"], rel=1e-6)
    assert float(last_total["cumulative_co2e_kg"]) == pytest.approx(rep["total"]["co2e_kg"], rel=1e-6)


def test_unreadable_rapl_is_not_measured(tmp_path):
    (tmp_path / "powercap").mkdir()
    rep = EnergyTracker(interval_s=3600, rapl_root=tmp_path / "powercap").start().stop()
    missing = {m["name"]: m for m in rep["not_measured"]}
    assert "no intel-rapl zone" in missing["cpu-package"]["reason"]
    assert missing["dram"]["energy_kwh"] is None


def test_tdp_estimate_only_when_asked_and_marked(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    empty_root = tmp_path / "no-powercap"
    writer = SummaryWriter(str(tmp_path / "tb"))
    with EnergyTracker(tmp_path / "run", interval_s=0.05, tdp_estimate_w=65.0, writer=writer,
                       rapl_root=empty_root) as tracker:
        tracker.mark_epoch(0)
        x = torch.randn(128, 128)
        for _ in range(20):
            x = torch.tanh(x @ x.T / 128)
        tracker.mark_epoch(1)
        live = tracker.snapshot()
        assert live["completed"] is False and live["total"]["estimated_energy_kwh"] > 0
    writer.close()
    rep = tracker.report
    est = [c for c in rep["components"] if c["name"] == "cpu-tdp-estimate"]
    assert len(est) == 1 and est[0]["status"] == "estimate" and "ESTIMATE" in est[0]["description"]
    assert est[0]["energy_j"] == pytest.approx(65.0 * rep["duration_s"], rel=1e-9)
    assert rep["total"]["includes_estimate"] is True
    assert rep["total"]["estimated_energy_kwh"] == pytest.approx(joules_to_kwh(65.0 * rep["duration_s"]), rel=1e-9)
    assert "cpu-package" in {m["name"] for m in rep["not_measured"]}  # the measurement is still missing
    assert rep["total"]["co2e_kg"] == pytest.approx(rep["total"]["energy_kwh"] * 1.58 * 0.477, rel=1e-12)
    assert "ESTIMATED" in (tmp_path / "run" / "energy_summary.txt").read_text()

    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"energy/power_w/cpu-tdp-estimate", "energy/cumulative_kwh/total", "energy/co2e_kg/total",
            "energy/epoch_kwh", "energy/epoch_co2e_kg"} <= tags
    assert not any("gpu" in tag for tag in tags)  # nothing logged for what is not measured
    last_co2 = acc.Scalars("energy/co2e_kg/total")[-1].value
    assert last_co2 == pytest.approx(rep["total"]["co2e_kg"], rel=1e-5)
    epochs = acc.Scalars("energy/epoch_kwh")
    assert [e.step for e in epochs] == [0, 1]  # the last one is logged at stop
    for logged, phase in zip(epochs, rep["phases"][1:]):
        assert logged.value == pytest.approx(phase["energy_kwh"], rel=1e-5)

    # without the option there is no estimate at all
    rep2 = EnergyTracker(interval_s=3600, rapl_root=empty_root).start().stop()
    assert not [c for c in rep2["components"] if c["kind"] == "cpu"]


def test_report_written_when_tracked_code_fails(tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        with EnergyTracker(tmp_path, interval_s=3600, tdp_estimate_w=10.0) as tracker:
            tracker.mark_epoch(0)
            raise RuntimeError("boom")
    rep = json.loads((tmp_path / "energy_report.json").read_text())
    assert rep["completed"] is True
    assert any("RuntimeError: boom" in n for n in rep["notes"])


def test_cli_options(tmp_path):
    import argparse

    parser = argparse.ArgumentParser()
    en.add_energy_arguments(parser)
    args = parser.parse_args([])
    assert (args.pue, args.carbon_intensity, args.energy_interval, args.tdp_estimate_w) == (1.58, 0.477, 1.0, None)
    args = parser.parse_args(["--pue", "1.2", "--carbon-intensity", "0.1", "--energy-interval", "0.5",
                              "--tdp-estimate-w", "95"])
    tracker = en.tracker_from_args(args, tmp_path)
    assert tracker.config == EnergyConfig(interval_s=0.5, pue=1.2, carbon_intensity_kg_per_kwh=0.1, tdp_estimate_w=95.0)
    with pytest.raises(ParameterError, match="pue=0.5"):
        en.tracker_from_args(parser.parse_args(["--pue", "0.5"]), tmp_path)


def test_bad_counter_readings_are_skipped_not_fatal(tmp_path):
    files = _fake_powercap(tmp_path / "powercap")
    files["package-0"].write_text("1000000\n")
    with EnergyTracker(interval_s=3600, rapl_root=tmp_path / "powercap") as tracker:
        files["package-0"].write_text("garbage\n")  # a torn or odd read
        tracker.mark_epoch(0)
        files["package-0"].write_text(f"{RAPL_MAX_UJ + 5:.0f}\n")  # beyond the counter's range
        tracker.mark_epoch(1)
        files["package-0"].write_text("3000000\n")
    comp = {c["name"]: c for c in tracker.report["components"]}["cpu-package0"]
    assert comp["failed_reads"] == 2
    assert comp["energy_j"] == pytest.approx(2.0)  # nothing lost across the failed readings


def test_second_session_keeps_the_first_sessions_files(tmp_path):
    first = EnergyTracker(tmp_path, interval_s=3600, tdp_estimate_w=10.0).start().stop()
    second = EnergyTracker(tmp_path, interval_s=3600, tdp_estimate_w=10.0).start().stop()
    kept = sorted(p.name for p in tmp_path.glob("energy_report.*.json"))
    assert len(kept) == 1
    assert json.loads((tmp_path / kept[0]).read_text())["started_utc"] == first["started_utc"]
    assert json.loads((tmp_path / "energy_report.json").read_text())["started_utc"] == second["started_utc"]
    assert len(list(tmp_path.glob("energy.*.csv"))) == 1
    assert any("earlier session" in n for n in second["notes"])


@pytest.mark.slow
def test_fit_writes_energy_report_per_epoch(tmp_path, tiny_config, rng, capsys):
    """`spectro-fx-train fit` runs the tracker around its loop: files in the run folder, one
    phase per epoch, options honoured, TensorBoard scalars next to the losses."""
    import soundfile as sf
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from spectro_fx.training.cli import main

    sr = tiny_config.stft.sr
    data = tmp_path / "tones"
    data.mkdir()
    t = np.arange(sr) / sr
    for i in range(6):  # 6 one-second clips, batch 2: 3 steps per epoch
        sf.write(data / f"tone{i}.wav", 0.1 * np.sin(2 * np.pi * rng.uniform(200, 2000) * t), sr)

    def flat(prefix, table):
        for key, value in table.items():
            if isinstance(value, dict):
                yield from flat(f"{prefix}{key}.", value)
            else:
                yield f"{prefix}{key}={json.dumps(value)}"

    sets = [*flat("model.", tiny_config.to_dict()),
            *flat("train.", dict(batch_size=2, segment_frames=16, warmup_steps=1, checkpoint_every=100,
                                 log_every=2, media_every=1000)),
            "data.segment_s=1.0"]
    run = tmp_path / "run"
    argv = ["fit", "--data", str(data), "--run", str(run), "--steps", "7", "--no-progress", "--device", "cpu",
            "--energy-interval", "0.05", "--pue", "1.2", "--carbon-intensity", "0.3", "--tdp-estimate-w", "15"]
    for item in sets:
        argv += ["--set", item]
    assert main(argv) == 0
    rep = json.loads((run / "energy_report.json").read_text())
    assert rep["completed"] is True
    assert [ph["label"] for ph in rep["phases"]] == ["setup", "epoch 0", "epoch 1", "epoch 2"]
    assert (rep["method"]["pue"], rep["method"]["carbon_intensity_kg_per_kwh"]) == (1.2, 0.3)
    assert rep["total"]["co2e_kg"] == pytest.approx(rep["total"]["energy_kwh"] * 1.2 * 0.3, rel=1e-12)
    assert rep["total"]["includes_estimate"] is (not _rapl_package_readable())
    if not _nvml_works():
        assert "gpu" in {m["name"] for m in rep["not_measured"]}
    for name in ("energy.csv", "energy_summary.txt", "energy.png"):
        assert (run / name).stat().st_size > 0
    steps = {r["step"] for r in _read_csv(run / "energy.csv")}
    assert "7" in steps
    assert "Total IT energy" in capsys.readouterr().out
    acc = EventAccumulator(str(run / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"loss/reconstruction", "energy/cumulative_kwh/total", "energy/epoch_kwh"} <= tags
    assert [e.step for e in acc.Scalars("energy/epoch_kwh")] == [0, 1, 2]


def test_fit_refuses_bad_energy_options(tmp_path, capsys):
    from spectro_fx.training.cli import main

    assert main(["fit", "--data", str(tmp_path), "--run", str(tmp_path / "run"), "--pue", "0.8"]) == 2
    assert "pue=0.8" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


class _StandInNvml:
    """Replays what NVML returns on the lent GPU machines (no NVIDIA driver here, so the GPU code
    path cannot run for real in this suite; tests/bench/gpu_energy_check.py runs it on a GPU).
    GPU 0 has the total-energy counter (Volta and newer), GPU 1 only power, as older boards."""

    class NVMLError(Exception):
        pass

    def __init__(self):
        self.refs = 0
        self.t0 = time.monotonic()
        self.watts = [283.0, 75.0]

    def nvmlInit(self):
        self.refs += 1

    def nvmlShutdown(self):
        self.refs -= 1

    def nvmlDeviceGetCount(self):
        return 2

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlDeviceGetUUID(self, h):
        return ["GPU-aaaa1111-0000", "GPU-bbbb2222-0000"][h]

    def nvmlDeviceGetName(self, h):
        return [b"NVIDIA H100 80GB HBM3", "Tesla P100-PCIE-16GB"][h]  # old bindings return bytes

    def nvmlDeviceGetPowerUsage(self, h):
        return int(self.watts[h] * 1000)  # mW

    def nvmlDeviceGetTotalEnergyConsumption(self, h):
        if h == 1:
            raise self.NVMLError("Not Supported")
        elapsed = time.monotonic() - self.t0
        return int(7.5e9 + self.watts[h] * elapsed * 1000)  # mJ since the driver loaded


@pytest.mark.parametrize("visible, expected", [(None, {"gpu0", "gpu1"}), ("1", {"gpu1"}), ("GPU-aaaa", {"gpu0"}), ("", set())])
def test_nvml_path_with_recorded_responses(tmp_path, monkeypatch, visible, expected):
    nvml = _StandInNvml()
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    with EnergyTracker(tmp_path, interval_s=0.05, rapl_root=tmp_path / "none") as tracker:
        tracker.mark_epoch(0)
        time.sleep(0.3)
    rep = tracker.report
    assert nvml.refs == 0  # every nvmlInit balanced
    comps = {c["name"]: c for c in rep["components"]}
    assert set(comps) == expected
    if "gpu0" in comps:
        c = comps["gpu0"]
        assert "counter" in c["method"] and "H100" in c["description"]
        assert c["mean_power_w"] == pytest.approx(283.0, rel=0.02)  # mJ counter -> J -> kWh right
        assert c["power_integral_kwh"] == pytest.approx(c["energy_kwh"], rel=0.02)
    if "gpu1" in comps:
        c = comps["gpu1"]
        assert "trapezoid" in c["method"] and "P100" in c["description"]
        assert c["energy_j"] == pytest.approx(75.0 * rep["duration_s"], rel=1e-9)  # mW -> W right
    if not expected:
        assert "gpu" in {m["name"] for m in rep["not_measured"]}
        assert rep["total"]["energy_kwh"] is None
    else:
        assert rep["total"]["co2e_kg"] == pytest.approx(rep["total"]["energy_kwh"] * 1.58 * 0.477, rel=1e-12)
        rows = [r for r in _read_csv(tmp_path / "energy.csv") if r["device"] in expected]
        assert {r["device"] for r in rows} == expected and all(r["power_w"] for r in rows)
