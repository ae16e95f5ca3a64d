"""The same `fit` command under torchrun: 2 CPU processes on the gloo backend equal one process
trained on their combined batch."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from spectro_fx.training.cli import main
from spectro_fx.training.fit import CHECKPOINT_NAME, load_checkpoint

from .test_fit import write_tones


@pytest.mark.slow
def test_torchrun_two_processes_equal_one_process_on_the_combined_batch(tmp_path, tiny_config):
    """Two ranks of batch 4 must train exactly as one process of batch 8 does: gradients are
    averaged by DDP and the quantizer's EMA statistics are summed over the ranks. Both start
    from one checkpoint whose codebook is already initialised (first-batch initialisation
    samples one rank's vectors, by design), and without random gain (drawn per rank), so the
    two runs see the same crops; rank r takes every second crop of the one-process batch."""
    tones = write_tones(tmp_path / "tones", np.random.default_rng(5), count=16, seconds=0.5)
    model = tiny_config.to_dict()
    stft = model.pop("stft")
    lines = ["[model]"] + [f"{k} = {json.dumps(v)}" for k, v in model.items()]
    lines += ["[model.stft]"] + [f"{k} = {json.dumps(v)}" for k, v in stft.items()]
    lines += ["[train]", "batch_size = 8", "segment_frames = 16", "steps = 1", "checkpoint_every = 3",
              "log_every = 3", "media_every = 3", "warmup_steps = 1", "gain_db = 0.0", "min_lr_ratio = 1.0"]
    cfg = tmp_path / "tiny.toml"
    cfg.write_text("\n".join(lines) + "\n")
    start = tmp_path / "start"
    common = ["--device", "cpu", "--threads", "1", "--no-progress"]
    assert main(["fit", "--config", str(cfg), "--data", str(tones), "--run-dir", str(start), *common]) == 0
    shutil.copytree(start, tmp_path / "one")
    shutil.copytree(start, tmp_path / "two")

    assert main(["fit", "--resume", "--run-dir", str(tmp_path / "one"), "--steps", "6", *common]) == 0
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "spectro_fx.training.cli", "fit", "--resume", "--run-dir", str(tmp_path / "two"), "--steps", "6",
           "--set", "train.batch_size=4", *common]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # rank 0 alone reports and writes
    assert proc.stdout.count("trained to step 6") == 1
    events = [len(list((run / "tb").glob("events.out.tfevents.*"))) for run in (start, tmp_path / "two")]
    assert events[1] == events[0] + 1

    before = load_checkpoint(start / CHECKPOINT_NAME)["model"]
    one = load_checkpoint(tmp_path / "one" / CHECKPOINT_NAME)
    two = load_checkpoint(tmp_path / "two" / CHECKPOINT_NAME)
    assert one["step"] == two["step"] == 6
    assert bool(two["model"]["quantizer.initted"])
    for key in ("quantizer.codebook", "quantizer.cluster_size", "quantizer.embed_avg"):
        # the EMA moved (so an equality below is not the untouched start) ...
        assert (one["model"][key] - before[key]).abs().max() > 1e-3, key
    for key, value in one["model"].items():
        # ... and two ranks' EMA and gradients equal one process's on the combined batch
        torch.testing.assert_close(two["model"][key], value, rtol=1e-4, atol=1e-5, msg=key)
