"""`spectro-fx export --format nn`: a host that knows only torch (an nn~ emulation) loads the file,
reads its conventions, streams 4096- and 8192-frame blocks at batch 1 and 4, sets every attribute,
and hears what `spectro-fx --input ... --output ...` renders; bad input is one line, nothing written."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import soundfile as sf

from spectro_fx.effect.io.cli import main

HOST = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import torch

    path, audio, out = sys.argv[1], sys.argv[2], sys.argv[3]
    module = torch.jit.load(path)
    x = torch.from_numpy(np.load(audio))  # [channels in, frames]
    report = {
        "forward_params": module.forward_params.tolist(),
        "methods": module.get_methods(),
        "attributes": module.get_attributes(),
        "latency": int(module.latency_samples),
    }
    for name in module.get_attributes():  # nn~ sets attributes by name at load and on messages
        assert getattr(module, "set_" + name)(getattr(module, "get_" + name)()) == 0, name
    outputs = {}
    for batch in (1, 4):
        for block in (4096, 8192):
            module.reset()
            signal = x[None].expand(batch, -1, -1)
            with torch.no_grad():
                y = torch.cat([module(signal[:, :, i : i + block]) for i in range(0, x.shape[1], block)], dim=2)
            assert y.shape == (batch, report["forward_params"][2], x.shape[1]) and y.dtype == torch.float32
            outputs[f"b{batch}_{block}"] = y.numpy()
    np.savez(out, **outputs)
    report["imported_spectro_fx"] = any(m.startswith("spectro_fx") for m in sys.modules)
    print(json.dumps(report))
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("chain", ["inpaint", "cross"])
def test_nn_host_emulation_hears_the_cli_render(tiny_model_path, tmp_path, rng, chain):
    """With cross the file takes a second input channel, the second source: the host's render
    of [input, second source] equals `spectro-fx --chain cross --cross-with` (the bundled model:
    a tiny one gives one code everywhere, so the second source would change nothing)."""
    sr = 48000
    t = np.arange(3 * 8192) / sr
    x = (0.3 * np.sin(2 * np.pi * (220 * t + 600 * t**2)) + 0.03 * rng.standard_normal(t.shape)).astype(np.float32)
    sf.write(tmp_path / "in.wav", x, sr, subtype="FLOAT")
    settings = ["--set", "low_hz=300", "--set", "high_hz=6000"]
    if chain == "inpaint":
        common = ["--model", str(tiny_model_path), "--chain", "inpaint", *settings, "--set", "inpaint.temperature=0"]
        inputs = x[None]
    else:
        second = (0.3 * np.sign(np.sin(2 * np.pi * 110 * t))).astype(np.float32)
        sf.write(tmp_path / "second.wav", second, sr, subtype="FLOAT")
        common = ["--model", "default", "--chain", "cross", *settings, "--set", "cross.mode=latent"]
        inputs = np.stack([x, second])
    assert main(["export", "--format", "nn", "--output", str(tmp_path / "fx.ts"), *common]) == 0
    # the exported module's network is float32 (a host's CPU may lack bfloat16): render so too
    render = ["--input", str(tmp_path / "in.wav"), "--output", str(tmp_path / "out.wav"), "--quiet", "--precision", "float32", *common]
    if chain == "cross":
        render += ["--cross-with", str(tmp_path / "second.wav")]
    assert main(render) == 0
    rendered, _ = sf.read(tmp_path / "out.wav", dtype="float32")
    np.save(tmp_path / "in.npy", inputs)
    host = subprocess.run(
        [sys.executable, "-c", HOST, str(tmp_path / "fx.ts"), str(tmp_path / "in.npy"), str(tmp_path / "y.npz")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert host.returncode == 0, host.stderr
    report = json.loads(host.stdout.strip().splitlines()[-1])
    assert report["forward_params"] == [len(inputs), 1, 1, 1] and report["methods"] == ["forward"]
    assert "low_hz" in report["attributes"] and f"{chain}_{'amount' if chain == 'cross' else 'temperature'}" in report["attributes"]
    assert report["imported_spectro_fx"] is False
    latency = report["latency"]
    outputs = np.load(tmp_path / "y.npz")
    change = rendered - x
    assert np.max(np.abs(change)) > 1e-3  # the region does change the sound
    for key in outputs.files:
        y = outputs[key]
        for row in range(y.shape[0]):
            aligned = y[row, 0, latency:]
            error = aligned - rendered[: len(aligned)]
            # -60 dB: the error's RMS 1000x below the signal's
            assert np.sqrt(np.mean(error**2)) < 1e-3 * np.sqrt(np.mean(rendered**2)), key


def test_bad_export_is_one_line_and_writes_nothing(tiny_model_path, tmp_path, capsys):
    target = tmp_path / "fx.ts"
    base = ["export", "--format", "nn", "--output", str(target), "--model", str(tiny_model_path)]
    assert main([*base, "--chain", "reverb"]) == 2
    assert main([*base, "--set", "lowhz=3"]) == 2
    assert main([*base, "--chain", "inpaint", "--set", "inpaint.context=output"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3
    assert "'reverb'" in err[0]
    assert "unknown parameter 'lowhz'" in err[1] and "low_hz" in err[1]
    assert "context='output'" in err[2]
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(SystemExit):
        main(["export", "--format", "vst", "--output", str(target)])
    assert list(tmp_path.iterdir()) == []


def test_export_help_explains_itself(capsys):
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    text = capsys.readouterr().out
    assert "nn~" in text and "forward_params" in text and "--set" in text
    assert "Neutone FX" in text and "Band centre" in text and "spectro-fx[neutone]" in text
