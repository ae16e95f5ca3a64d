"""`spectro-fx-train distill`: a smaller network for a model file that keeps its codes.

The student has the teacher's codemap (analysis, rows, columns, code vectors) and fewer channels.
Its encoder learns the teacher's unquantised latents (mean squared error, relative to their
variance), so that it finds the same codes in the teacher's codebook; its decoder learns the input
spectrogram from the teacher's codes (L1 on normalised log magnitude, as `fit`). The codebook,
the code usage and both inpainting priors are the teacher's, and carry over unchanged: they are
about codes, which stay the same.

With ``decoder_only`` the student is the teacher itself, its encoder frozen (its codes are the
teacher's, bit for bit) and its decoder trained on from the teacher's weights: the way to retrain
how a model file sounds without touching what its priors know. ``energy_weight`` adds a term on
each codemap cell's energy: an L1 loss on log magnitude decodes a cell whose exact partials the
codes do not hold as their median, below the input's energy (held-out notes lose 3-6 dB of a band
that way); the term asks the decoder to keep each cell's energy.
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
    decoder_only: bool = False,
    energy_weight: float = 0.0,
    progress: bool = True,
) -> dict[str, float]:
    """Train a student of the model file ``teacher_path`` on the audio under ``data`` for
    ``steps`` steps and write it to ``output`` (atomically, with the teacher's priors). Returns the
    last 100 steps' means: ``encoder`` (latent error relative to the latents' variance; 0 with
    ``decoder_only``), ``decoder`` (L1), ``energy`` (mean |natural log| of each codemap cell's
    decoded energy over the input's, :func:`~spectro_fx.training.fit.cell_energy_error`),
    ``level_db`` (the decoded crops' energy over the input's, dB) and ``codes`` (fraction of the
    student's codes equal to the teacher's).

    ``decoder_only``: the teacher's network trained on from its weights, encoder frozen (no
    ``overrides``). ``energy_weight`` >= 0: weight of the cell energy term beside the L1 (0: none;
    the bundled default's decoder was retrained with 0.1)."""
    from tqdm import tqdm

    from spectro_fx.models.export import export_model, load_model
    from spectro_fx.models.spectral import magnitude
    from spectro_fx.models.vqvae import VQVAE

    from .data import load_clips
    from .finetune import init_from_model_file
    from .fit import TrainConfig, cell_energy_error, crop_samples, lr_at

    if steps < 1 or batch_size < 1 or lr <= 0:
        raise ParameterError(f"steps={steps}, batch_size={batch_size}, lr={lr}: each must be positive")
    if not energy_weight >= 0.0:
        raise ParameterError(f"energy_weight={energy_weight} must be 0 or more")
    if decoder_only and overrides:
        raise ParameterError(f"--set {overrides[0]!r}: a decoder-only student keeps the teacher's network")
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
    if decoder_only:
        student.load_state_dict(teacher.state_dict())
        student.encoder.requires_grad_(False)
    codebook = teacher.quantizer.codebook.detach().float()
    n_samples = crop_samples(teacher_cfg, segment_frames)
    clips = load_clips(data, sr=teacher_cfg.stft.sr, min_samples=n_samples, progress=progress)
    if len(clips) == 0:
        raise ParameterError(f"--data {str(data)!r}: no clip of at least {n_samples} samples")
    audio = [torch.from_numpy(np.ascontiguousarray(clip, dtype=np.float32)) for clip in clips.audio]
    schedule = TrainConfig(lr=lr, steps=steps, warmup_steps=min(200, max(steps // 10, 1)))
    trained = list(student.decoder.parameters()) + ([] if decoder_only else list(student.encoder.parameters()))
    optimizer = torch.optim.Adam(trained, lr=lr)
    rng = np.random.default_rng(seed)
    recent: list[tuple[float, ...]] = []  # per step: encoder, decoder, energy, level_db, codes
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
        if decoder_only:
            encoder_loss, agree = torch.zeros(()), 1.0
        else:
            mine = student.encode_latent(mag)
            encoder_loss = F.mse_loss(mine, latent) / latent.var().clamp_min(1e-12)
            with torch.no_grad():
                agree = float((_nearest(mine, codebook) == codes).float().mean())
        decoded = student.decode_latent(quantized)
        decoder_loss = F.l1_loss(decoded, target)
        # without the term its figure is still reported, outside the graph the backward pass walks
        with torch.set_grad_enabled(energy_weight > 0):
            linear = student.normalizer.inverse(decoded)
            energy_loss = cell_energy_error(linear, mag, cfg)
        loss = encoder_loss + decoder_loss + (energy_weight * energy_loss if energy_weight > 0 else 0.0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            level = 10.0 * float(torch.log10((linear * linear).sum() / (mag * mag).sum().clamp_min(1e-30)))
        recent = (recent + [(encoder_loss.item(), decoder_loss.item(), energy_loss.item(), level, agree)])[-100:]
        if step % 25 == 0:
            bar.set_postfix(encoder=f"{recent[-1][0]:.4f}", decoder=f"{recent[-1][1]:.4f}",
                            energy=f"{recent[-1][2]:.3f}", level=f"{level:+.1f} dB", codes=f"{agree:.2f}")
    bar.close()
    figures = dict(zip(("encoder", "decoder", "energy", "level_db", "codes"), np.mean(recent, axis=0).tolist()))
    student.eval()
    # what the teacher's file says of its priors (and, for its own network, of its training) still holds
    kept = {key: value for key, value in source.metadata.items() if key != "format_version"}
    if decoder_only:
        description = f"{source.module.data_description}; its decoder {steps} more steps on {clips.description}"
    else:
        description = f"distilled from {Path(teacher_path).name} on {clips.description}"
        for key in ("run", "step", "train_config"):  # the teacher's run trained another network
            kept.pop(key, None)
    export_model(
        student, output, data_description=description, prior=source.prior(), neural_prior=source.neural_prior(),
        metadata={**kept, "distilled_from": Path(teacher_path).name, "distill_steps": steps,
                  "distill_codes_equal": round(figures["codes"], 4), "distill_decoder_only": decoder_only,
                  "distill_energy_weight": energy_weight},
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
            "--teacher default --data data/mix --set model.channels=[16,32,64] -o smaller.pt. With "
            "--decoder-only the teacher's own decoder is trained on (its codes stay bit for bit), e.g. "
            "--decoder-only --energy-weight 0.1 --steps 1500 for bands that keep the input's level."
        ),
    )
    p.add_argument("--teacher", default="default", help="a model file or a bundled model's name (default: default)")
    p.add_argument("--data", required=True, help="folder of audio files or rendered notes")
    p.add_argument("--output", "-o", required=True, help="model file to write")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="model.KEY=VALUE",
                   help="the student's network: " + ", ".join(f"model.{k}" for k in NETWORK_KEYS)
                   + " (repeatable; default: the teacher's, which only copies it)")
    p.add_argument("--decoder-only", action="store_true",
                   help="train the teacher's own decoder on from its weights, its encoder (so its codes) unchanged")
    p.add_argument("--energy-weight", type=float, default=0.0,
                   help="weight of a term that keeps each codemap cell's energy beside the L1 on log "
                        "magnitude, which decodes what the codes do not hold below the input's level "
                        "(default 0: none; the bundled default's decoder was retrained with 0.1)")
    p.add_argument("--steps", type=int, default=7500, help="optimiser steps (default 7500)")
    p.add_argument("--lr", type=float, default=None,
                   help="peak Adam learning rate (default 2e-3, or 5e-4 with --decoder-only)")
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
    lr = args.lr if args.lr is not None else (5e-4 if args.decoder_only else 2e-3)
    figures = distill(teacher, args.data, args.output, overrides=args.overrides, steps=args.steps, lr=lr,
                      batch_size=args.batch_size, seed=args.seed, decoder_only=args.decoder_only,
                      energy_weight=args.energy_weight)
    print(f"wrote {args.output}: student codes equal to the teacher's {figures['codes']:.1%} (last 100 steps), "
          f"encoder error {figures['encoder']:.4f}, decoder L1 {figures['decoder']:.4f}, "
          f"cell energy error {figures['energy']:.3f}, level {figures['level_db']:+.2f} dB against the input")
    return 0
