"""`spectro-fx validate`: the default model passes (the CI run), and models and chains made to
fail (NaN weights, a decoder that outputs subnormals, a slow effect, damaged files) are caught by the check named."""

from __future__ import annotations

import json
import math
import threading
import time

import numpy as np
import pytest
import torch

from spectro_fx.effect.io.cli import main
from spectro_fx.effect import Effect
from spectro_fx.effect.io.validate import (
    BLOCKS,
    CHANNELS,
    CHECKS,
    RATES,
    Validator,
    LockProbe,
    processing_runs,
    reachable_locks,
)
from spectro_fx.models.errors import ParameterError
from spectro_fx.models.export import export_model, load_model


def _tiny_config(**overrides):
    from spectro_fx.models import STFTConfig, VQVAEConfig

    return VQVAEConfig(
        stft=STFTConfig(sr=48000, n_fft=512, hop_length=128, win_length=512),
        channels=(4, 8), freq_strides=(4, 2), time_strides=(2, 2), freq_kernels=(8, 4),
        time_kernel=3, n_res_blocks=1, code_dim=8, codebook_size=32, **overrides,
    )


def _export(path, cfg, poison):
    """A tiny model with fitted codebook, its weights changed by ``poison(model)``, exported."""
    from spectro_fx.models.spectral import magnitude
    from spectro_fx.models.vqvae import VQVAE

    torch.manual_seed(0)
    model = VQVAE(cfg).train()
    t = torch.arange(24000) / 48000
    y = torch.stack([0.3 * torch.sin(2 * math.pi * f * t) for f in (220.0, 880.0)])
    mag = magnitude(y, cfg.stft)
    with torch.no_grad():
        model(mag[:, :, : mag.shape[2] // cfg.time_stride * cfg.time_stride])
        model.eval()
        poison(model)
    return load_model(export_model(model, path))


def _findings(report, name):
    result = next(r for r in report.results if r.name == name)
    return result.passed, " | ".join(result.findings)


@pytest.mark.slow
def test_default_model_passes_every_check_at_strictness_1(tmp_path, capsys):
    """The CI run: `spectro-fx validate` on the default model, all six checks. The realtime
    check's verdict is this machine's speed, not the model's soundness (the project's VM has run
    the default's stereo engine at 0.73 and at 1.11 CPU s per audio s on different days), so a
    timed verdict is no test here: it must have measured every block size and, if it fails, say
    only that the engine cannot keep up (its duration and loads are figures of tests/bench)."""
    report_path = tmp_path / "report.json"
    status = main(["validate", "--strictness", "1", "--json", str(report_path), "--quiet"])
    out = capsys.readouterr().out
    print(out)
    report = json.loads(report_path.read_text())
    failed = [(c["name"], c["findings"]) for c in report["checks"] if not c["passed"] and c["name"] != "realtime"]
    assert not failed
    assert [c["name"] for c in report["checks"]] == list(CHECKS)
    assert all(f"PASS  {name}" in out for name in CHECKS if name != "realtime")
    realtime_check = next(c for c in report["checks"] if c["name"] == "realtime")
    assert status == (0 if realtime_check["passed"] else 1)
    if not realtime_check["passed"]:
        assert realtime_check["findings"] and all("cannot keep up" in f for f in realtime_check["findings"])
    processing = next(c for c in report["checks"] if c["name"] == "processing")["figures"]
    assert {r[0] for r in processing["runs"]} == set(RATES) and {r[1] for r in processing["runs"]} == set(BLOCKS)
    assert processing["dry_path_exact"] == len(processing["runs"])
    realtime = next(c for c in report["checks"] if c["name"] == "realtime")["figures"]
    assert set(realtime["timing"]) == {"64", "128", "256"}


def test_nan_weights_are_caught_by_model_file_and_processing(tmp_path):
    def poison(model):
        weight = next(p for n, p in model.decoder.head[-1].named_parameters() if n.endswith("weight"))
        weight.view(-1)[0] = float("nan")

    model = _export(tmp_path / "nan.pt", _tiny_config(), poison)
    report = Validator(model, strictness=1).run(["model-file", "processing"])
    assert not report.passed
    passed, findings = _findings(report, "model-file")
    assert not passed and "non-finite magnitudes" in findings
    passed, findings = _findings(report, "processing")
    # the engine keeps NaN out of the audio; the validator still says the model made it
    assert not passed and "the model decoded" in findings and "non-finite" in findings


def test_a_decoder_that_outputs_subnormals_is_caught(tmp_path):
    cfg = _tiny_config(log_floor=1e-45)

    def poison(model):
        last = model.decoder.head[-1]
        for p in last.parameters():
            p.zero_()
        bias = next(p for n, p in last.named_parameters() if n.endswith("bias"))
        bias.fill_((math.log(1e-39) - cfg.log_offset) / cfg.log_scale)  # decodes every cell to 1e-39

    model = _export(tmp_path / "subnormal.pt", cfg, poison)
    report = Validator(model, strictness=1).run(["model-file", "processing"])
    passed, findings = _findings(report, "model-file")
    assert not passed and "subnormal magnitudes" in findings
    # the engine's output has none: silence in plays silence out (the loudness guard), and a
    # played signal swamps 1e-39; the model file check is where a decoder like this shows
    passed, findings = _findings(report, "processing")
    assert "subnormal" not in findings


class SlowEffect(Effect):
    """Spends 25 ms of CPU per codemap column (a column lasts 10.7 ms at 48 kHz)."""

    name = "slow"
    description = "a codes pass-through that computes for 25 ms per column"

    def process_codes(self, codes, region, ctx):
        started = time.thread_time()
        while time.thread_time() - started < 0.025:
            pass
        return codes


@pytest.mark.slow
def test_a_slow_chain_is_caught_by_realtime(tiny_model):
    report = Validator(tiny_model, chain=[SlowEffect()], strictness=1).run(["realtime"])
    passed, findings = _findings(report, "realtime")
    assert not passed and "cannot keep up live" in findings
    timing = report.results[0].figures["timing"]
    assert timing[256]["load"] > 1.0


def test_a_fast_chain_passes_realtime_with_figures(tiny_model):
    report = Validator(tiny_model, chain="noise", strictness=1).run(["realtime"])
    result = report.results[0]
    assert result.passed, result.findings
    for block in (64, 128, 256):
        t = result.figures["timing"][block]
        assert t["p50_ms"] <= t["p99_ms"] <= t["max_ms"] and t["period_ms"] == pytest.approx(1000 * block / 48000, abs=1e-3)
    live = result.figures["live_path"]
    assert all(v["wet_blocks"] > 0 and v["locks_held"] == [] and v["retained_bytes"] == 0 for v in live.values())
    # the locks the probe watched include the engine's own and the parameter bank's
    assert any(path.endswith("_apply_lock") for path in live[256]["locks_checked"])
    assert any(path.endswith("_bank._lock") for path in live[256]["locks_checked"])


def test_lock_probe_sees_a_lock_held_across_an_engine_call(tiny_model):
    from spectro_fx.effect.core.engine import Engine

    engine = Engine(tiny_model, sr=48000, channels=1)
    probe = LockProbe(engine)
    held = threading.Lock()
    probe.locks = [("held", held)] + reachable_locks({"engine": engine})
    block = np.zeros((64, 1), np.float32)
    probe.process(block)
    assert probe.held == set()
    with held:
        probe.process(block)
    assert probe.held == {"held"}
    assert probe.latency_samples == engine.latency_samples  # everything else is the engine's


@pytest.mark.parametrize(
    "damage",
    ["truncated", "bit flipped", "foreign"],
)
def test_a_damaged_model_file_is_one_line_and_a_nonzero_exit(tmp_path, tiny_model_path, capsys, damage):
    data = bytearray(tiny_model_path.read_bytes())
    bad = tmp_path / f"{damage.replace(' ', '_')}.pt"
    if damage == "truncated":
        bad.write_bytes(bytes(data[: len(data) // 2]))
    elif damage == "bit flipped":
        import struct
        import zipfile

        info = next(i for i in zipfile.ZipFile(tiny_model_path).infolist() if "/data/" in i.filename and i.file_size > 64)
        name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26 : info.header_offset + 30])
        start = info.header_offset + 30 + name_len + extra_len
        data[start + 17] ^= 0x04  # one bit of one weight: torch.jit.load alone would load it
        bad.write_bytes(bytes(data))
    else:
        bad.write_text("definitely not a model\n")
    status = main(["validate", "--model", str(bad), "--quiet"])
    captured = capsys.readouterr()
    assert status == 1
    assert "Traceback" not in captured.out + captured.err
    fail = [line for line in captured.out.splitlines() if line.startswith("FAIL")]
    assert len(fail) == 1 and "model-file" in fail[0] and str(bad) in fail[0]


def test_model_file_check_refuses_every_damaged_copy(tiny_model):
    report = Validator(tiny_model, strictness=2).run(["model-file"])
    result = report.results[0]
    assert result.passed, result.findings
    assert result.figures["damaged_refused"] == result.figures["damaged_copies"] >= 15


def test_state_check_passes_and_pairs_from_another_thread_stay_whole(tiny_model):
    report = Validator(tiny_model, chain="noise", strictness=1).run(["state"])
    result = report.results[0]
    assert result.passed, result.findings
    assert result.figures["sets"] > 50 and result.figures["columns"] > 40
    assert result.figures["empty_columns"] == 0


def test_hostile_input_on_a_tiny_model(tiny_model):
    report = Validator(tiny_model, chain="noise", strictness=1).run(["hostile-input"])
    result = report.results[0]
    assert result.passed, result.findings
    assert result.figures["cases"] == 9
    # the allowed time is latency + one column = 895 + 512 samples at 48 kHz
    assert 0 < result.figures["worst_recovery_ms"] <= 1000 * (895 + 512) / 48000


def test_automation_is_repeatable_and_seeded(tiny_model):
    first = Validator(tiny_model, chain="inpaint,noise", strictness=1, seed=3).run(["automation"]).results[0]
    second = Validator(tiny_model, chain="inpaint,noise", strictness=1, seed=3).run(["automation"]).results[0]
    assert first.passed, first.findings
    assert first.figures == second.figures
    assert "inpaint.method" in first.figures["parameters"] and "noise.amount" in first.figures["parameters"]


def test_processing_runs_cover_the_matrix():
    one = processing_runs(strictness=1, seed=0)
    assert len(one) == 10
    assert {r[0] for r in one} == set(RATES) and {r[1] for r in one} == set(BLOCKS) and {r[2] for r in one} == set(CHANNELS)
    full = processing_runs(strictness=10, seed=0)
    assert len(set(full)) == len(RATES) * len(BLOCKS) * len(CHANNELS) == 100
    four = processing_runs(strictness=4, seed=1)
    assert four == processing_runs(strictness=4, seed=1) != processing_runs(strictness=4, seed=2)


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--strictness", "11"], "--strictness=11"),
        (["--only", "speed"], "unknown check 'speed'"),
        (["--chain", "reverb"], "unknown effect 'reverb'"),
        (["--set", "low_hz"], "NAME=VALUE"),
    ],
)
def test_bad_arguments_are_one_line(tiny_model_path, capsys, argv, match):
    status = main(["validate", "--model", str(tiny_model_path), "--quiet", *argv])
    err = capsys.readouterr().err
    assert status == 2
    assert match in err and len(err.strip().splitlines()) == 1


def test_validator_refuses_bad_strictness(tiny_model):
    with pytest.raises(ParameterError, match="strictness=0"):
        Validator(tiny_model, strictness=0)
