"""The `spectro-fx` command in-process: renders, lists, and one-line errors with exit code 2."""

import numpy as np
import pytest
import soundfile as sf

from spectro_fx.effect.io.cli import main


@pytest.fixture
def clip(tmp_path, rng):
    x = (0.1 * rng.standard_normal((9600, 2))).astype(np.float32)
    path = tmp_path / "in.wav"
    sf.write(str(path), x, 48000, subtype="FLOAT")
    return path, x


def test_render_with_settings(tiny_model_path, clip, tmp_path, capsys):
    path, x = clip
    out = tmp_path / "sub" / "out.wav"
    rc = main(["--input", str(path), "--output", str(out), "--model", str(tiny_model_path),
               "--chain", "noise", "--set", "wet=0", "--set", "noise.amount=0.9", "--seed", "2"])
    assert rc == 0
    y, sr = sf.read(str(out), dtype="float32", always_2d=True)
    np.testing.assert_array_equal(y, x)
    err = capsys.readouterr().err
    assert "latency 895 samples (18.65 ms at 48000 Hz)" in err and "wrote" in err


@pytest.mark.parametrize("choice", ["auto", "float32", "bfloat16"])
def test_precision_is_chosen_and_said(tiny_model_path, clip, tmp_path, capsys, choice):
    """--precision auto renders in what the CPU multiplies fastest; the start line names it."""
    from spectro_fx.models.runtime import fast_precision

    path, x = clip
    out = tmp_path / "out.wav"
    rc = main(["--input", str(path), "--output", str(out), "--model", str(tiny_model_path), "--precision", choice])
    assert rc == 0
    expected = fast_precision() if choice == "auto" else choice
    assert f"Hz ({expected}); chain none" in capsys.readouterr().err
    y, _ = sf.read(str(out), dtype="float32", always_2d=True)
    assert y.shape == x.shape and np.isfinite(y).all()


def test_auto_precision_is_float32_live_and_a_typo_is_named():
    from spectro_fx.models.errors import ParameterError
    from spectro_fx.models.runtime import fast_precision, resolve_precision

    assert resolve_precision("auto", offline=False) == "float32"
    assert resolve_precision("auto", offline=True) == fast_precision() in ("float32", "bfloat16")
    assert resolve_precision("bfloat16", offline=False) == "bfloat16"
    with pytest.raises(ParameterError, match="--precision 'bf16' must be one of auto, float32, bfloat16"):
        resolve_precision("bf16", offline=True)


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--set", "gain=3"], "spectro-fx: error: unknown parameter 'gain'; valid: low_hz"),
        (["--set", "low_hz"], "spectro-fx: error: --set 'low_hz' must look like NAME=VALUE"),
        (["--chain", "fuzz"], "spectro-fx: error: unknown effect 'fuzz'"),
        (["--map", "m.toml"], "spectro-fx: error: --map is used with --automation"),
    ],
)
def test_errors_are_one_line_with_exit_code_2(tiny_model_path, clip, tmp_path, capsys, extra, message):
    path, _ = clip
    out = tmp_path / "out.wav"
    rc = main(["--input", str(path), "--output", str(out), "--model", str(tiny_model_path), "--quiet", *extra])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith(message) and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()


def test_foreign_model(clip, tmp_path, capsys):
    path, _ = clip
    bogus = tmp_path / "model.pt"
    bogus.write_bytes(b"not a model")
    assert main(["--input", str(path), "--output", str(tmp_path / "o.wav"), "--model", str(bogus)]) == 2
    assert "is not a spectro-fx model file" in capsys.readouterr().err
    assert not (tmp_path / "o.wav").exists()


def test_list_and_help(capsys):
    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    assert "low_hz" in out and "noise.amount" in out
    # choice parameters list their values, not the numeric index range
    assert "inpaint.method         spatial|learned" in out
    # every built-in effect runs fused in the column step
    for name in ("none", "noise", "inpaint", "dropout", "cross"):
        assert any(line.startswith(f"effect {name} (") and "fused in the column step" in line for line in out.splitlines())
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "--automation" in capsys.readouterr().out


def test_a_render_runs_on_every_core_or_on_threads_and_live_refuses_threads(tiny_model_path, clip, tmp_path, capsys):
    """A file render takes every core this process may use (or ``--threads N``), says how many,
    gives the same samples up to float32 rounding, and leaves the caller's torch threads as they
    were; live, ``--threads`` is refused by name before anything opens."""
    import torch

    from spectro_fx.models.runtime import available_cores

    path, _ = clip
    before = torch.get_num_threads()
    outs = {}
    for threads in (None, 1):
        out = tmp_path / f"out_{threads}.wav"
        extra = [] if threads is None else ["--threads", str(threads)]
        rc = main(["--input", str(path), "--output", str(out), "--model", str(tiny_model_path), "--chain", "noise",
                   "--set", "noise.amount=0.5", "--precision", "float32", *extra])
        assert rc == 0 and torch.get_num_threads() == before
        n = available_cores() if threads is None else threads
        assert f"real time, {n} thread{'s' if n > 1 else ''})" in capsys.readouterr().err
        outs[threads], _ = sf.read(str(out), dtype="float32", always_2d=True)
    np.testing.assert_allclose(outs[None], outs[1], atol=1e-6)
    assert main(["--input", "mic", "--threads", "2"]) == 2
    assert "--threads 2 is for rendering a file (give --output)" in capsys.readouterr().err
    assert main(["--input", str(path), "--output", str(tmp_path / "x.wav"), "--threads", "0"]) == 2
    assert "--threads=0 must be a positive integer" in capsys.readouterr().err
    assert not (tmp_path / "x.wav").exists()
