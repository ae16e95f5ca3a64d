"""The paper's configuration as a weak anchor (issue 3), trained on the same notes for the same
wall time as the default model and scored like it on held-out TimGM6mb notes.

Variants (our causal conv VQ-VAE and EMA codebook in both; the paper's own network and its
codebook that kept autograd history are not reproduced):
- ``published``: 16 kHz, n_fft 512, K=31, D=64, linear power spectrogram (|X|^2) under MSE,
  Adam at lr 1e-6, no gain augmentation;
- ``fixed``: the same sizes with our fixes: normalised log magnitude under L1, Adam at lr 1e-3,
  random +-24 dB gain.
Scores: the mel distance and the rest of `spectro-fx-train evaluate`'s table, audio at 16 kHz,
resynthesis with the input's phase. Prints figures; asserts nothing.

Run (one variant per process, so two can share the 2 cores)::

    OMP_NUM_THREADS=1 .venv/bin/python tests/bench/bench_paper_anchor.py --variant published \\
        --train-data DIR --heldout DIR --minutes 27 [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from spectro_fx.models.config import STFTConfig, VQVAEConfig
from spectro_fx.models.spectral import istft, magnitude, stft
from spectro_fx.models.vqvae import VQVAE
from spectro_fx.training.data import CropDataset, load_clips
from spectro_fx.training.evaluate import evaluate_clips, format_table

SEGMENT_FRAMES = 64
BATCH = 16


class PowerSpectrogram(torch.nn.Module):
    """The paper's input and target: linear power |X|^2 (no log, no scaling)."""

    def forward(self, mag: torch.Tensor) -> torch.Tensor:
        return mag.clamp_min(0.0) ** 2

    def inverse(self, power: torch.Tensor) -> torch.Tensor:
        return power.clamp_min(0.0).sqrt()


def paper_config() -> VQVAEConfig:
    return VQVAEConfig(stft=STFTConfig(sr=16000, n_fft=512, hop_length=128, win_length=512),
                       codebook_size=31, code_dim=64)


def build(variant: str) -> tuple[VQVAE, torch.optim.Optimizer, callable, float]:
    torch.manual_seed(0)
    model = VQVAE(paper_config())
    if variant == "published":
        model.normalizer = PowerSpectrogram()
        return model, torch.optim.Adam(model.parameters(), lr=1e-6), F.mse_loss, 0.0
    return model, torch.optim.Adam(model.parameters(), lr=1e-3), F.l1_loss, 24.0


def resynthesis(model: VQVAE):
    cfg = model.cfg.stft
    block = cfg.hop_length * model.cfg.time_stride

    def reconstruct(audio: np.ndarray):
        n = len(audio)
        spec = stft(np.pad(np.asarray(audio, dtype=np.float64), (0, -n % block)), cfg)
        with torch.inference_mode():
            out = model(torch.from_numpy(np.abs(spec)).float()[None])
            mag = model.normalizer.inverse(out.reconstruction)[0].double().numpy()
        mag = np.where(np.isfinite(mag), mag, 0.0)
        return istft(mag * np.exp(1j * np.angle(spec)), cfg)[:n].astype(np.float32), out.codes[0].numpy()

    return reconstruct


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", choices=("published", "fixed"), required=True)
    parser.add_argument("--train-data", required=True, help="training notes (the default model's, any rate)")
    parser.add_argument("--heldout", required=True, help="held-out notes (TimGM6mb, as bench_quality renders them)")
    parser.add_argument("--minutes", type=float, default=27.0, help="training wall time (default model: about 27)")
    parser.add_argument("--stride", type=int, default=1, help="score every N-th held-out note")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    torch.set_num_threads(1)
    model, optimizer, loss_fn, gain_db = build(args.variant)
    cfg = model.cfg
    clips = load_clips(args.train_data, sr=cfg.stft.sr)
    n_samples = (SEGMENT_FRAMES - 1) * cfg.stft.hop_length + cfg.stft.win_length
    data = CropDataset(clips, n_samples=n_samples, seed=0)
    rng = np.random.default_rng(0)
    model.train()
    started, step, losses = time.perf_counter(), 0, []
    while time.perf_counter() - started < 60 * args.minutes:
        data.set_epoch(step)
        audio = torch.stack([data[int(i)] for i in rng.integers(0, len(data), BATCH)])
        if gain_db:
            audio = audio * 10 ** (torch.from_numpy(rng.uniform(-gain_db, gain_db, (BATCH, 1))).float() / 20)
        mag = magnitude(audio, cfg.stft)
        mag = mag[:, :, : mag.shape[2] // cfg.time_stride * cfg.time_stride]
        out = model(mag)
        loss = loss_fn(out.reconstruction, out.target) + out.commitment_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        step += 1
    trained_s = time.perf_counter() - started
    model.eval()
    heldout = load_clips(args.heldout, sr=cfg.stft.sr)
    heldout.audio, heldout.names = heldout.audio[:: args.stride], heldout.names[:: args.stride]
    row = evaluate_clips(heldout, resynthesis(model), codebook_size=cfg.codebook_size)
    name = f"paper config, {args.variant}"
    print(f"{name}: {step} steps in {trained_s / 60:.1f} min (batch {BATCH} x {SEGMENT_FRAMES} frames, 1 thread); "
          f"loss first 100 steps {np.mean(losses[:100]):.4g}, last 100 {np.mean(losses[-100:]):.4g}; "
          f"{len(heldout)} held-out notes at {cfg.stft.sr} Hz")
    print(format_table({name: row}))
    if args.json:
        args.json.write_text(json.dumps({"variant": args.variant, "steps": step, "minutes": trained_s / 60,
                                         "metrics": row.metrics, "codebook": row.codebook}, indent=2) + "\n")


if __name__ == "__main__":
    main()
