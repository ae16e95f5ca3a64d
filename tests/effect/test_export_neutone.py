"""`spectro-fx export --format neutone`: made in the side environment (.venv-neutone, `make
venv-neutone`) with neutone-sdk's own checks; a host that knows only torch streams it the way
Neutone FX does (knobs as a [4, frames] tensor per buffer) and hears what `spectro-fx --input ...
--output ...` renders; bad input is one line and writes nothing."""

import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from spectro_fx.effect.io.cli import main
from spectro_fx.effect.export.neutone_knobs import GATE_MAX_S, KNOBS, RANGES, knob_positions, knob_values

SIDE_ENV = Path(__file__).resolve().parents[2] / ".venv-neutone"

HOST = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import torch

    path, folder, out, plan = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    files = {"metadata.json": ""}
    module = torch.jit.load(path, _extra_files=files)
    metadata = json.loads(files["metadata.json"])
    outputs, delays = {}, {}
    for run in plan:
        x = torch.from_numpy(np.load(f"{folder}/{run['audio']}.npy"))  # [channels, frames], as the DAW hands them
        if run.get("poison"):
            x = x.clone()
            x[:, 1000:1100] = float("nan")
            x[:, 5000] = float("inf")
        sr, block = run["sr"], run["block"]
        module.set_daw_sample_rate_and_buffer_size(sr, block)
        module.reset()
        knobs = torch.tensor(run["knobs"], dtype=torch.float32)[:, None].expand(4, block)
        n = x.shape[1] // block * block
        with torch.no_grad():
            y = torch.cat([module.forward(x[:, i : i + block], knobs).clone() for i in range(0, n, block)], dim=1)
        assert y.shape == (x.shape[0], n) and bool(torch.isfinite(y).all()), run
        outputs[run["key"]] = y.numpy()
        delays[run["key"]] = int(module.calc_model_delay_samples()) + int(module.calc_buffering_delay_samples())
    np.savez(out, **outputs)
    print(json.dumps({
        "metadata": {k: v for k, v in metadata.items() if k != "sample_sound_files"},
        "samples": len(metadata["sample_sound_files"]),
        "delays": delays,
        "imported_spectro_fx": any(m.startswith("spectro_fx") for m in sys.modules),
    }))
    """
)


@pytest.fixture(scope="module")
def side_env():
    """The side environment's spectro-fx; a missing one fails (never skips) with what to run."""
    command = SIDE_ENV / "bin" / "spectro-fx"
    assert command.is_file(), f"{SIDE_ENV} is missing: run `make venv-neutone` (make test does)"
    return command


def _chirps(sr: int, seconds: float, rng) -> np.ndarray:
    """[frames, 2]: a rising chirp on the left, a falling one on the right, a little noise."""
    t = np.arange(int(seconds * sr)) / sr
    left = 0.3 * np.sin(2 * np.pi * (220 * t + 600 * t**2))
    right = 0.3 * np.sin(2 * np.pi * (3000 * t - 400 * t**2))
    return (np.stack([left, right], axis=1) + 0.03 * rng.standard_normal((t.size, 2))).astype(np.float32)


def _knobs_for(low_hz, high_hz, period_s, wet):
    """Knob positions worked out here from the knobs' descriptions (an oracle independent of
    neutone_knobs): centre log 20 Hz - 24 kHz, width linear in octaves over that range."""
    span = math.log(24000 / 20)
    centre = math.sqrt(low_hz * high_hz)
    return [math.log(centre / 20) / span, math.log(high_hz / low_hz) / span, period_s / 2.0, wet]


@pytest.mark.slow
def test_neutone_export_passes_its_checks_and_streams_like_the_cli(side_env, tiny_model_path, tmp_path, rng):
    sr = 48000
    x = _chirps(sr, 1.5, rng)
    sf.write(tmp_path / "in.wav", x, sr, subtype="FLOAT")
    model = ["--model", str(tiny_model_path), "--chain", "inpaint", "--set", "inpaint.temperature=0"]
    exported = ["--set", "low_hz=300", "--set", "high_hz=6000", "--set", "period_s=0.5", "--set", "duty=0.75"]
    moved = ["--set", "low_hz=1000", "--set", "high_hz=4000", "--set", "period_s=0.5", "--set", "duty=0.75", "--set", "wet=0.5"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [str(side_env), "export", "--format", "neutone", "--output", str(tmp_path / "fx.nm"), *model, *exported],
        capture_output=True, text=True, timeout=900, cwd=tmp_path, env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "latency" in done.stdout and "Band centre" in done.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fx.nm", "in.wav"]  # the SDK's work folder is gone

    renders = {}
    for key, settings in (("exported", exported), ("moved", moved)):
        path = tmp_path / f"{key}.wav"
        # the exported module's network is float32 (a host's CPU may lack bfloat16): render so too
        assert main(["--input", str(tmp_path / "in.wav"), "--output", str(path), "--quiet", "--precision", "float32",
                     *model, *settings]) == 0
        renders[key], _ = sf.read(path, dtype="float32", always_2d=True)
    np.save(tmp_path / "in.npy", np.ascontiguousarray(x.T))
    np.save(tmp_path / "mono.npy", np.ascontiguousarray(x[:, :1].T))
    defaults = _knobs_for(300, 6000, 0.5, 1.0)
    plan = [
        {"key": "b512", "audio": "in", "sr": sr, "block": 512, "knobs": defaults},
        {"key": "b128", "audio": "in", "sr": sr, "block": 128, "knobs": defaults},
        {"key": "moved", "audio": "in", "sr": sr, "block": 2048, "knobs": _knobs_for(1000, 4000, 0.5, 0.5)},
        {"key": "mono", "audio": "mono", "sr": sr, "block": 256, "knobs": defaults},  # a mono track in the DAW
        {"key": "44k", "audio": "in", "sr": 44100, "block": 441, "knobs": defaults},
        {"key": "poison", "audio": "in", "sr": sr, "block": 512, "knobs": defaults, "poison": True},
    ]
    host = subprocess.run(
        [sys.executable, "-c", HOST, str(tmp_path / "fx.nm"), str(tmp_path), str(tmp_path / "y.npz"), json.dumps(plan)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env,
    )
    assert host.returncode == 0, host.stderr[-3000:]
    report = json.loads(host.stdout.strip().splitlines()[-1])
    assert report["imported_spectro_fx"] is False
    metadata = report["metadata"]
    assert metadata["model_type"] == "stereo-stereo" and metadata["native_sample_rates"] == [sr]
    assert metadata["native_buffer_sizes"] == []  # any buffer: no buffering delay at the model's rate
    assert [p["name"] for p in metadata["neutone_parameters"].values()] == [name for name, _ in KNOBS]
    assert np.allclose([p["default_value"] for p in metadata["neutone_parameters"].values()], defaults, atol=1e-6)
    assert report["samples"] == 3  # the SDK rendered its three samples through the effect

    outputs = np.load(tmp_path / "y.npz")
    latency = report["delays"]["b512"]
    assert report["delays"]["b128"] == report["delays"]["moved"] == report["delays"]["mono"] == latency > 0
    # at 44.1 kHz the SDK resamples and reports the same delay in the DAW's samples
    assert abs(report["delays"]["44k"] - latency * 44100 / sr) <= 2
    assert np.max(np.abs(renders["exported"] - x)) > 1e-3  # the region does change the sound
    assert np.max(np.abs(renders["moved"] - renders["exported"])) > 1e-3  # and the knobs move it
    for key, reference in (("b512", "exported"), ("b128", "exported"), ("moved", "moved"), ("mono", "exported")):
        y = outputs[key]
        aligned = y[:, latency:].T
        rendered = renders[reference][: len(aligned), : y.shape[0]]  # the mono track: the left channel's render
        error = aligned - rendered
        # -60 dB: the error's RMS 1000x below the signal's
        assert np.sqrt(np.mean(error**2)) < 1e-3 * np.sqrt(np.mean(rendered**2)), key
    assert np.sqrt(np.mean(outputs["44k"] ** 2)) > 0.1 * np.sqrt(np.mean(x**2))
    # NaN and infinite input samples are heard as silence (the host asserted a finite output):
    # the output away from them is the clean run's
    poisoned = outputs["poison"]
    assert np.allclose(poisoned[:, 24000:], outputs["b512"][:, 24000:], atol=1e-4)


@pytest.mark.slow
def test_neutone_export_beside_torchaudio_cuda_libraries_says_what_to_do(side_env, tiny_model_path, tmp_path):
    # torchaudio as pip installs it, with the CUDA-linked libraries that `make venv-neutone` set aside
    libraries = sorted((SIDE_ENV / "torchaudio-libs-removed").glob("*.so"))
    assert libraries, "make venv-neutone keeps torchaudio's compiled libraries in .venv-neutone/torchaudio-libs-removed"
    site = next(SIDE_ENV.glob("lib/python*/site-packages"))
    overlay = tmp_path / "overlay"
    shutil.copytree(site / "torchaudio", overlay / "torchaudio", ignore=shutil.ignore_patterns("__pycache__"))
    for library in libraries:
        shutil.copy(library, overlay / "torchaudio" / "lib")
    target = tmp_path / "fx.nm"
    done = subprocess.run(
        [str(side_env), "export", "--format", "neutone", "--output", str(target), "--model", str(tiny_model_path)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(overlay), "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 2, done.stderr[-3000:]
    err = done.stderr.strip().splitlines()
    assert len(err) == 1
    assert "libc10_cuda.so" in err[0] and f"delete {overlay / 'torchaudio' / 'lib'}/*.so" in err[0] and "make venv-neutone" in err[0]
    assert not target.exists()


def test_knob_positions_and_values_are_inverse():
    for low, high, period, wet in ((300, 3000, 0.0, 1.0), (20, 24000, 2.0, 0.0), (1000, 1000, 0.5, 0.3), (40, 16000, 1.0, 0.7)):
        knobs = knob_positions(low, high, period, wet)
        assert all(0.0 <= k <= 1.0 for k in knobs)
        assert np.allclose(knob_values(knobs, RANGES), [low, high, period, wet], rtol=1e-9)
        assert np.allclose(knobs, _knobs_for(low, high, period, wet), atol=1e-12)
    # no band (high at or below low) is width 0: both edges on the centre
    low, high, _, _ = knob_values(knob_positions(3000, 300, 0.0, 1.0), RANGES)
    assert low == pytest.approx(high) == pytest.approx(math.sqrt(300 * 3000))
    # out-of-range knob positions are clamped, as a host may send them
    assert knob_values([-1.0, 2.0, 5.0, -3.0], RANGES) == pytest.approx(knob_values([0.0, 1.0, 1.0, 0.0], RANGES))


def test_bad_neutone_export_is_one_line_and_writes_nothing(tiny_model_path, tmp_path, capsys):
    target = tmp_path / "fx.nm"
    base = ["export", "--format", "neutone", "--output", str(target), "--model", str(tiny_model_path)]
    assert main([*base, "--chain", "cross"]) == 2
    assert main([*base, "--chain", "mix"]) == 2  # the old name of cross
    assert main([*base, "--set", "lowhz=3"]) == 2
    assert main([*base, "--set", f"period_s={GATE_MAX_S + 1}"]) == 2
    assert main([*base, "--channels", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 5
    assert "--chain cross cannot be exported for Neutone FX" in err[0] and "--format nn" in err[0]
    assert "--chain cross cannot be exported for Neutone FX" in err[1]
    assert "unknown parameter 'lowhz'" in err[2] and "low_hz" in err[2]
    assert "period_s=3" in err[3] and "Gate knob" in err[3]
    assert "--channels 3" in err[4]
    assert list(tmp_path.iterdir()) == []


def test_neutone_export_without_the_sdk_says_what_to_do(tiny_model_path, tmp_path, capsys):
    # the main environment never holds neutone-sdk (it wants numpy < 2.3): the side one does
    assert importlib.util.find_spec("neutone_sdk") is None
    target = tmp_path / "fx.nm"
    assert main(["export", "--format", "neutone", "--output", str(target), "--model", str(tiny_model_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "neutone_sdk" in err[0] and "pip install 'spectro-fx[neutone]'" in err[0] and "make venv-neutone" in err[0]
    assert list(tmp_path.iterdir()) == []
