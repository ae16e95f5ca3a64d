"""The same `fit` command under torchrun: 2 CPU processes on the gloo backend."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from spectro_fx.training.fit import CHECKPOINT_NAME, load_checkpoint

from .test_fit import write_tones


@pytest.mark.slow
def test_torchrun_two_processes_gloo(tmp_path, tiny_config):
    tones = write_tones(tmp_path / "tones", np.random.default_rng(5), count=16, seconds=0.5)
    model = tiny_config.to_dict()
    stft = model.pop("stft")
    lines = ["[model]"] + [f"{k} = {json.dumps(v)}" for k, v in model.items()]
    lines += ["[model.stft]"] + [f"{k} = {json.dumps(v)}" for k, v in stft.items()]
    lines += ["[train]", "batch_size = 4", "segment_frames = 16", "steps = 6", "checkpoint_every = 3",
              "log_every = 3", "media_every = 3", "warmup_steps = 1"]
    cfg = tmp_path / "tiny.toml"
    cfg.write_text("\n".join(lines) + "\n")
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "spectro_fx.training.cli", "fit", "--config", str(cfg), "--data", str(tones),
           "--run-dir", str(run), "--device", "cpu", "--threads", "1", "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # rank 0 alone reports and writes
    assert proc.stdout.count("trained to step 6") == 1
    state = load_checkpoint(run / CHECKPOINT_NAME)
    assert state["step"] == 6
    assert len(list((run / "tb").glob("events.out.tfevents.*"))) == 1
    # 2 ranks x batch 4 per step: the quantizer saw both ranks' vectors (EMA all-reduced)
    assert torch.isfinite(state["model"]["quantizer.codebook"]).all()
    assert bool(state["model"]["quantizer.initted"])
