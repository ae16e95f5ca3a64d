"""The training loop: config resolution, loss goes down, checkpoints and exact resume."""

import json
import os
import signal
import stat
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F

from spectro_fx.models.errors import ParameterError
from spectro_fx.models.spectral import magnitude
from spectro_fx.models.vqvae import VQVAE
from spectro_fx.training.cli import main
from spectro_fx.training.fit import (
    CHECKPOINT_NAME,
    RunConfig,
    TrainConfig,
    apply_overrides,
    load_checkpoint,
    load_config,
    lr_at,
    model_from_run,
    train,
)

SR = 16000


def write_tones(folder, rng, *, count=12, seconds=1.0):
    """Harmonic tones of random pitch and level: a tiny, learnable data set."""
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(SR * seconds)) / SR
    for i in range(count):
        f0 = rng.uniform(100, 1500)
        tone = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 5) if f0 * k < SR / 2)
        envelope = np.exp(-t * rng.uniform(0.5, 3))
        sf.write(folder / f"tone{i:02d}.wav", 0.1 * tone * envelope, SR)
    return folder


@pytest.fixture
def tones(tmp_path, rng):
    return write_tones(tmp_path / "tones", rng)


def tiny_run_config(tiny_config, data, **train):
    base = dict(batch_size=4, segment_frames=16, steps=10, lr=3e-3, warmup_steps=2, checkpoint_every=5,
                log_every=5, media_every=1000, gain_db=12.0)
    base.update(train)
    return RunConfig.from_dict({"model": tiny_config.to_dict(), "train": base, "data": {"path": str(data), "segment_s": 1.0}})


def test_config_overrides_and_validation(tmp_path, tiny_config):
    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text('[model]\ncodebook_size = 64\n[model.stft]\nsr = 16000\n[train]\nlr = 1e-3\n')
    config = load_config(cfg_file, ["train.loss=mse", "model.code_dim=8", "data.families=['bass']", "train.steps=7"])
    assert config.model.codebook_size == 64 and config.model.code_dim == 8 and config.model.stft.sr == 16000
    assert config.train.loss == "mse" and config.train.steps == 7 and config.data.families == ("bass",)
    assert RunConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ParameterError, match="unknown train keys"):
        load_config(None, ["train.learning_rate=1"])
    with pytest.raises(ParameterError, match="train.loss="):
        load_config(None, ["train.loss=huber"])
    with pytest.raises(ParameterError, match="train.energy_weight=-0.1"):
        load_config(None, ["train.energy_weight=-0.1"])
    with pytest.raises(ParameterError, match="table.key=value"):
        apply_overrides({}, ["lr"])
    with pytest.raises(ParameterError, match="does not exist"):
        load_config(tmp_path / "missing.toml")


def test_lr_schedule():
    cfg = TrainConfig(lr=1e-3, warmup_steps=10, steps=110, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(1e-4)
    assert lr_at(9, cfg) == pytest.approx(1e-3)
    assert lr_at(60, cfg) == pytest.approx(0.55e-3)
    assert lr_at(110, cfg) == pytest.approx(1e-4)


def fixed_batch(data, cfg):
    """The magnitude of every tone's first 20 hops, its last 16 frames."""
    audio = [sf.read(p, dtype="float32")[0][: 20 * cfg.stft.hop_length] for p in sorted(data.glob("*.wav"))]
    return magnitude(torch.from_numpy(np.stack(audio)), cfg.stft)[:, :, -16:]


def fixed_batch_loss(model, data, cfg):
    mag = fixed_batch(data, cfg)
    model.eval()
    with torch.no_grad():
        out = model(mag)
    return float(F.l1_loss(out.reconstruction, out.target))


def test_fit_lowers_loss(tmp_path, tiny_config, tones):
    config = tiny_run_config(tiny_config, tones, steps=60, checkpoint_every=60, log_every=10)
    torch.manual_seed(config.train.seed)
    before = fixed_batch_loss(VQVAE(tiny_config), tones, tiny_config)
    result = train(config, tmp_path / "run", progress=False)
    assert result["step"] == 60 and result["examples_per_s"] > 0
    trained, state = model_from_run(tmp_path / "run")
    after = fixed_batch_loss(trained, tones, tiny_config)
    assert after < 0.7 * before, (before, after)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert RunConfig.from_dict(saved) == config
    assert list((tmp_path / "run" / "tb").glob("events.out.tfevents.*"))
    assert "tones" in state["data_description"]
    # written by the one atomic writer: shared like any created file, not mkstemp's 0600
    umask = os.umask(0)
    os.umask(umask)
    for name in (CHECKPOINT_NAME, "config.json"):
        assert stat.S_IMODE((tmp_path / "run" / name).stat().st_mode) == 0o666 & ~umask, name
    assert not list((tmp_path / "run").glob(".*.tmp"))


def fixed_batch_level_db(model, data, cfg):
    """The decoded energy of a fixed batch over the input's, dB."""
    mag = fixed_batch(data, cfg)
    model.eval()
    with torch.no_grad():
        decoded = model.normalizer.inverse(model(mag).reconstruction)
    return float(10 * torch.log10((decoded**2).sum() / (mag**2).sum()))


def test_the_energy_term_brings_the_decoded_level_nearer_the_inputs(tmp_path, tiny_config, tones):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    levels = {}
    for weight in (0.0, 1.0):
        config = tiny_run_config(tiny_config, tones, steps=60, checkpoint_every=60, log_every=10, energy_weight=weight)
        torch.manual_seed(config.train.seed)
        train(config, tmp_path / f"run{weight}", progress=False)
        levels[weight] = fixed_batch_level_db(model_from_run(tmp_path / f"run{weight}")[0], tones, tiny_config)
        events = EventAccumulator(str(tmp_path / f"run{weight}" / "tb"))
        events.Reload()
        assert ("loss/cell_energy" in events.Tags()["scalars"]) == (weight > 0)  # logged where it is optimised
    assert abs(levels[1.0]) < abs(levels[0.0]) - 1.0, levels


def test_resume_continues_from_checkpoint_exactly(tmp_path, tiny_config, tones):
    # a constant learning rate after warm-up makes the schedule independent of train.steps,
    # so 5 steps + resume to 10 must equal 10 straight steps bit for bit
    constant = dict(min_lr_ratio=1.0, checkpoint_every=5)
    train(tiny_run_config(tiny_config, tones, steps=10, **constant), tmp_path / "straight", progress=False)
    train(tiny_run_config(tiny_config, tones, steps=5, **constant), tmp_path / "resumed", progress=False)
    assert load_checkpoint(tmp_path / "resumed" / CHECKPOINT_NAME)["step"] == 5
    assert main(["fit", "--run", str(tmp_path / "resumed"), "--resume", "--steps", "10", "--no-progress"]) == 0
    a = load_checkpoint(tmp_path / "straight" / CHECKPOINT_NAME)
    b = load_checkpoint(tmp_path / "resumed" / CHECKPOINT_NAME)
    assert a["step"] == b["step"] == 10
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert json.loads((tmp_path / "resumed" / "config.json").read_text())["train"]["steps"] == 10


def test_refuses_existing_run_without_resume(tmp_path, tiny_config, tones):
    train(tiny_run_config(tiny_config, tones, steps=2, checkpoint_every=2), tmp_path / "run", progress=False)
    with pytest.raises(ParameterError, match="--resume"):
        train(tiny_run_config(tiny_config, tones, steps=2), tmp_path / "run", progress=False)
    assert main(["fit", "--run", str(tmp_path / "new"), "--resume"]) == 2
    with pytest.raises(ParameterError, match="time_stride"):
        train(tiny_run_config(tiny_config, tones, segment_frames=6), tmp_path / "odd", progress=False)


@pytest.mark.slow
def test_kill_9_then_resume(tmp_path, tiny_config, tones):
    """A real SIGKILL mid-run loses at most checkpoint_every steps; --resume continues from there."""
    cfg_file = tmp_path / "tiny.toml"
    model = tiny_config.to_dict()
    stft = model.pop("stft")
    lines = ["[model]"] + [f"{k} = {json.dumps(v)}" for k, v in model.items()]
    lines += ["[model.stft]"] + [f"{k} = {json.dumps(v)}" for k, v in stft.items()]
    lines += ["[train]", "batch_size = 4", "segment_frames = 16", "checkpoint_every = 5", "log_every = 5", "media_every = 1000"]
    cfg_file.write_text("\n".join(lines) + "\n")
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "spectro_fx.training.cli", "fit", "--config", str(cfg_file), "--data", str(tones),
           "--run", str(run), "--steps", "100000", "--threads", "1", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            ckpt = run / CHECKPOINT_NAME
            if ckpt.exists() and load_checkpoint(ckpt)["step"] >= 10:
                break
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    saved = load_checkpoint(run / CHECKPOINT_NAME)["step"]
    assert saved >= 10 and saved % 5 == 0
    # a kill during torch.save leaves the temporary behind; make sure there is one either way
    (run / f".{CHECKPOINT_NAME}.torn0000.tmp").write_bytes(b"half a checkpoint")
    (run / ".energy.csv.torn0000.tmp").write_text("time,gpu")
    assert main(["fit", "--run", str(run), "--resume", "--steps", str(saved + 5), "--no-progress"]) == 0
    assert load_checkpoint(run / CHECKPOINT_NAME)["step"] == saved + 5
    assert not list(run.glob(".*.tmp"))


def test_init_from_model_file_fine_tunes_it(tmp_path, tiny_config, tones):
    from dataclasses import replace

    from spectro_fx.models.export import export_model, load_model
    from spectro_fx.training.finetune import init_from_model_file

    train(tiny_run_config(tiny_config, tones, steps=20, checkpoint_every=20), tmp_path / "base", progress=False)
    trained, _ = model_from_run(tmp_path / "base")
    path = export_model(trained, tmp_path / "base.pt")
    k = tiny_config.codebook_size

    # same codebook: the fresh model becomes the file's model, output for output
    fresh = VQVAE(tiny_config)
    init_from_model_file(fresh, path, cells_per_batch=1000)
    mag = torch.rand(2, tiny_config.stft.n_bins, 16) * 0.2
    with torch.no_grad():
        assert torch.equal(fresh.eval()(mag).reconstruction, trained.eval()(mag).reconstruction)
    assert torch.equal(fresh.quantizer.codebook, trained.quantizer.codebook)
    assert fresh.quantizer.cluster_size.sum().item() == pytest.approx(1000, rel=1e-4)

    # a grown codebook: the file's codes first, then near copies of the most used ones
    grown = VQVAE(replace(tiny_config, codebook_size=2 * k + 3))
    init_from_model_file(grown, path, cells_per_batch=1000)
    codebook = grown.quantizer.codebook
    assert torch.equal(codebook[:k], trained.quantizer.codebook)
    nearest = torch.cdist(codebook[k:], codebook[:k]).min(dim=1).values
    assert 0 < nearest.max() < 0.05 * codebook[:k].std() * codebook.shape[1] ** 0.5
    assert grown.quantizer.cluster_size.sum().item() == pytest.approx(1000, rel=1e-4)

    # fine-tuning through the CLI's route (train.init) starts where the file ends: at a tiny
    # learning rate two steps move no weight by more than a few lr
    config = tiny_run_config(tiny_config, tones, steps=2, lr=1e-9, warmup_steps=0, checkpoint_every=2)
    train(replace(config, train=replace(config.train, init=str(path))), tmp_path / "tuned", progress=False)
    tuned, _ = model_from_run(tmp_path / "tuned")
    source = load_model(path).module
    scripted = source.decoder.state_dict()
    for name, value in tuned.decoder.state_dict().items():
        assert torch.allclose(value, scripted[name], atol=1e-6), name
    # the codebook follows the data by EMA (decay 0.95): two steps move it a few per cent at most
    drift = (tuned.quantizer.codebook - source.codebook).abs().max()
    assert drift < 0.1 * source.codebook.abs().max()
    assert json.loads((tmp_path / "tuned" / "config.json").read_text())["train"]["init"] == str(path)


def test_init_refuses_another_network_and_bad_arguments(tmp_path, tiny_config, tones):
    from dataclasses import replace

    from spectro_fx.models.export import export_model
    from spectro_fx.training.finetune import init_from_model_file

    path = export_model(VQVAE(tiny_config).eval(), tmp_path / "m.pt")
    with pytest.raises(ParameterError, match=r"model\.channels: file \[4, 8\], config \[4, 16\]"):
        init_from_model_file(VQVAE(replace(tiny_config, channels=(4, 16))), path, cells_per_batch=10)
    with pytest.raises(ParameterError, match="smaller than the file's"):
        init_from_model_file(VQVAE(replace(tiny_config, codebook_size=2)), path, cells_per_batch=10)
    assert main(["fit", "--run", str(tmp_path / "r"), "--init", str(path), "--resume"]) == 2
    assert main(["fit", "--run", str(tmp_path / "r"), "--init", str(tmp_path / "missing.pt")]) == 2
    # a bundled model is found by name; the default config is not classic's network
    assert main(["fit", "--run", str(tmp_path / "r"), "--init", "classic", "--data", str(tones)]) == 2
    assert not (tmp_path / "r").exists()
