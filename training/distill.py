"""`spectro-fx-train distill`: a smaller network for a model file that keeps its codes.

The student has the teacher's codemap (analysis, rows, columns, code vectors) and fewer channels.
Its encoder learns the teacher's unquantised latents (mean squared error, relative to their
variance), so that it finds the same codes in the teacher's codebook; its decoder learns the input
spectrogram from the teacher's codes (L1 on normalised log magnitude, as `fit`). The codebook,
the code usage and both inpainting priors are the teacher's, and carry over unchanged: they are
about codes, which stay the same.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from spectro_fx.models.errors import ParameterError

# what the student may change: its network's size, not the codemap the priors are about
NETWORK_KEYS = ("channels", "freq_kernels", "time_kernel", "n_res_blocks")
"""Keys of ``[model]`` a student may set with ``--set model.KEY=VALUE``."""


def student_config(teacher_cfg, overrides: list[str]):
    """The teacher's :class:`~spectro_fx.models.config.VQVAEConfig` with ``overrides``
    (``model.KEY=VALUE``, KEY in :data:`NETWORK_KEYS`) applied; the codemap must stay the teacher's."""
    from spectro_fx.models.config import VQVAEConfig

    from .fit import apply_overrides

    for item in overrides:
        key = item.split("=", 1)[0].strip()
        if not key.startswith("model.") or key[len("model."):] not in NETWORK_KEYS:
            raise ParameterError(f"--set {item!r}: a student may set only " + ", ".join(f"model.{k}" for k in NETWORK_KEYS))
    cfg = VQVAEConfig.from_dict(apply_overrides({"model": teacher_cfg.to_dict()}, overrides)["model"])
    same = {"rows": (cfg.n_rows, teacher_cfg.n_rows), "time stride": (cfg.time_stride, teacher_cfg.time_stride)}
    differ = [f"{name} {mine} (teacher {theirs})" for name, (mine, theirs) in same.items() if mine != theirs]
    if differ:
        raise ParameterError(f"the student's codemap must be the teacher's: {', '.join(differ)}")
    return cfg


def distill(
    teacher_path: str | os.PathLike,
    data: str | os.PathLike,
    output: str | os.PathLike,
    *,
    overrides: list[str],
    steps: int = 7500,
    lr: float = 2e-3,
    batch_size: int = 16,
    segment_frames: int = 64,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, float]:
    """Train a student of the model file ``teacher_path`` on the audio under ``data`` for
    ``steps`` steps and write it to ``output`` (atomically, with the teacher's priors). Returns the
    last 100 steps' means: ``encoder`` (latent error relative to the latents' variance),
    ``decoder`` (L1) and ``codes`` (fraction of the student's codes equal to the teacher's)."""
    from tqdm import tqdm

    from spectro_fx.models.export import export_model, load_model
    from spectro_fx.models.spectral import magnitude
    from spectro_fx.models.vqvae import VQVAE

    from .data import load_clips
    from .finetune import init_from_model_file
    from .fit import TrainConfig, crop_samples, lr_at

    if steps < 1 or batch_size < 1 or lr <= 0:
        raise ParameterError(f"steps={steps}, batch_size={batch_size}, lr={lr}: each must be positive")
    source = load_model(teacher_path)
    teacher_cfg = source.config
    if segment_frames < teacher_cfg.time_stride or segment_frames % teacher_cfg.time_stride:
        raise ParameterError(f"segment_frames={segment_frames} must be a positive multiple of the time stride "
                             f"{teacher_cfg.time_stride}")
    cfg = student_config(teacher_cfg, overrides)
    torch.manual_seed(seed)
    teacher = VQVAE(teacher_cfg)
    init_from_model_file(teacher, teacher_path, cells_per_batch=batch_size * teacher_cfg.n_rows * 32)
    teacher.eval().requires_grad_(False)
    student = VQVAE(cfg)
    student.quantizer.load_state_dict(teacher.quantizer.state_dict())  # the codebook and its usage
    codebook = teacher.quantizer.codebook.detach().float()
    n_samples = crop_samples(teacher_cfg, segment_frames)
    clips = load_clips(data, sr=teacher_cfg.stft.sr, min_samples=n_samples, progress=progress)
    if len(clips) == 0:
        raise ParameterError(f"--data {str(data)!r}: no clip of at least {n_samples} samples")
    audio = [torch.from_numpy(np.ascontiguousarray(clip, dtype=np.float32)) for clip in clips.audio]
    schedule = TrainConfig(lr=lr, steps=steps, warmup_steps=min(200, max(steps // 10, 1)))
    optimizer = torch.optim.Adam(list(student.encoder.parameters()) + list(student.decoder.parameters()), lr=lr)
    rng = np.random.default_rng(seed)
    recent: list[tuple[float, float, float]] = []
    bar = tqdm(range(steps), desc="distill", unit="step", disable=not progress)
    for step in bar:
        picks = rng.integers(0, len(audio), batch_size)
        starts = [int(rng.integers(0, len(audio[i]) - n_samples + 1)) for i in picks]
        crops = torch.stack([audio[i][s : s + n_samples] for i, s in zip(picks, starts)])
        gain = torch.from_numpy(10 ** (rng.uniform(-24.0, 24.0, (batch_size, 1)) / 20)).float()  # as `fit`
        with torch.no_grad():
            mag = magnitude(crops * gain, teacher_cfg.stft)[:, :, -segment_frames:].float()
            latent = teacher.encode_latent(mag)
            codes = _nearest(latent, codebook)
            quantized = codebook[codes].permute(0, 3, 1, 2)
            target = teacher.normalizer(mag)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, schedule)
        mine = student.encode_latent(mag)
        encoder_loss = F.mse_loss(mine, latent) / latent.var().clamp_min(1e-12)
        decoder_loss = F.l1_loss(student.decode_latent(quantized), target)
        optimizer.zero_grad(set_to_none=True)
        (encoder_loss + decoder_loss).backward()
        optimizer.step()
        with torch.no_grad():
            agree = float((_nearest(mine, codebook) == codes).float().mean())
        recent = (recent + [(encoder_loss.item(), decoder_loss.item(), agree)])[-100:]
        if step % 25 == 0:
            bar.set_postfix(encoder=f"{recent[-1][0]:.4f}", decoder=f"{recent[-1][1]:.4f}", codes=f"{agree:.2f}")
    bar.close()
    figures = dict(zip(("encoder", "decoder", "codes"), np.mean(recent, axis=0).tolist()))
    student.eval()
    export_model(
        student, output, data_description=f"distilled from {Path(teacher_path).name} on {clips.description}",
        prior=source.prior(), neural_prior=source.neural_prior(),
        metadata={"distilled_from": Path(teacher_path).name, "distill_steps": steps,
                  "distill_codes_equal": round(figures["codes"], 4)},
    )
    return figures


def _nearest(latent: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """The nearest code of each cell of ``latent`` [B, D, rows, columns] -> ``[B, rows, columns]``."""
    b, d, r, c = latent.shape
    return torch.cdist(latent.permute(0, 2, 3, 1).reshape(-1, d), codebook).argmin(dim=1).reshape(b, r, c)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "distill",
        help="a smaller network for a model file that keeps its codes and priors",
        description=(
            "Train a student with fewer channels to find the teacher's codes (its encoder) and to "
            "decode them (its decoder), on the audio under --data, and write it as a model file "
            "with the teacher's codebook and inpainting priors. Example: spectro-fx-train distill "
            "--teacher default --data data/mix --set model.channels=[16,32,64] -o smaller.pt"
        ),
    )
    p.add_argument("--teacher", default="default", help="a model file or a bundled model's name (default: default)")
    p.add_argument("--data", required=True, help="folder of audio files or rendered notes")
    p.add_argument("--output", "-o", required=True, help="model file to write")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="model.KEY=VALUE",
                   help="the student's network: " + ", ".join(f"model.{k}" for k in NETWORK_KEYS)
                   + " (repeatable; default: the teacher's, which only copies it)")
    p.add_argument("--steps", type=int, default=7500, help="optimiser steps (default 7500)")
    p.add_argument("--lr", type=float, default=2e-3, help="peak Adam learning rate (default 2e-3)")
    p.add_argument("--batch-size", type=int, default=16, help="crops per step (default 16)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from spectro_fx.assets import model_path

    try:
        teacher = model_path(args.teacher)  # a file, or a bundled model by name
    except FileNotFoundError as exc:
        raise ParameterError(f"--teacher: {exc}") from None
    figures = distill(teacher, args.data, args.output, overrides=args.overrides,
                      steps=args.steps, lr=args.lr, batch_size=args.batch_size, seed=args.seed)
    print(f"wrote {args.output}: student codes equal to the teacher's {figures['codes']:.1%} (last 100 steps), "
          f"encoder error {figures['encoder']:.4f}, decoder L1 {figures['decoder']:.4f}")
    return 0
