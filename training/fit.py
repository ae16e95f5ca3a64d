"""`spectro-fx-train fit`: train the VQ-VAE on log-magnitude spectrograms, on one CPU/GPU or
under ``torchrun`` with DDP, with TensorBoard logs and atomic, resumable checkpoints.

``train(config, run_dir)`` runs the loop over a run state (:class:`_Run`): ``train_step``,
``log_window``, ``save_media`` and ``checkpoint`` (rank-0 work behind :func:`rank_zero`);
the CLI only resolves the config.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import json
import math
import os
import time
import tomllib
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, ContextManager, Optional

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from spectro_fx.models.atomic import atomic_path
from spectro_fx.models.config import VQVAEConfig
from spectro_fx.models.errors import ParameterError, non_negative_int, non_negative_number, positive_int, positive_number
from spectro_fx.models.vqvae import VQVAE

CONFIG_NAME = "config.json"
CHECKPOINT_NAME = "checkpoint.pt"
LOSSES = ("l1", "mse")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (the ``[train]`` table of a config file).

    Parameters
    ----------
    batch_size : int
        Crops per step and process (DDP: per rank).
    segment_frames : int
        STFT frames per crop, a multiple of the model's ``time_stride``
        (64 frames = 171 ms at 48 kHz with hop 128).
    steps : int
        Total optimiser steps.
    lr : float
        Peak Adam learning rate, reached after ``warmup_steps`` linear steps; then a cosine
        decay to ``lr * min_lr_ratio`` at ``steps``.
    loss : {"l1", "mse"}
        Reconstruction loss on normalised log magnitude.
    gain_db : float
        Each crop is scaled by a random gain uniform in +-gain_db dB, so the model does not
        learn one input level.
    grad_clip : float
        Global gradient-norm clip (0 disables).
    checkpoint_every, log_every, media_every : int
        Steps between checkpoints, scalar logs, and image/audio logs.
    seed : int
        Seeds model init, crops and augmentation; a run is repeatable from it.
    bf16 : bool
        bfloat16 autocast on CUDA (ignored on CPU).
    init : str
        A model file to start from (``fit --init``): its network weights and codebook replace the
        random initialisation (:func:`spectro_fx.training.finetune.init_from_model_file`); empty: start from scratch.
    energy_weight : float >= 0
        Weight of a term that keeps each codemap cell's energy (:func:`cell_energy_error`) beside
        the reconstruction loss; 0: none. An L1 on log magnitude decodes what the codes do not
        hold exactly as its median, below the input's energy. The bundled default's decoder was
        retrained with 0.1 (``spectro-fx-train distill --decoder-only``); held-out bands came 1-2
        dB nearer the input and the mel distances fell.
    """

    batch_size: int = 16
    segment_frames: int = 64
    steps: int = 4000
    lr: float = 2e-3
    warmup_steps: int = 200
    min_lr_ratio: float = 0.05
    weight_decay: float = 0.0
    loss: str = "l1"
    gain_db: float = 24.0
    grad_clip: float = 1.0
    checkpoint_every: int = 250
    log_every: int = 25
    media_every: int = 500
    seed: int = 0
    bf16: bool = False
    init: str = ""
    energy_weight: float = 0.0

    def __post_init__(self) -> None:
        for name in ("batch_size", "segment_frames", "steps", "checkpoint_every", "log_every", "media_every"):
            positive_int(f"train.{name}", getattr(self, name))
        non_negative_int("train.warmup_steps", self.warmup_steps)
        positive_number("train.lr", self.lr)
        if not 0 <= self.min_lr_ratio <= 1:
            raise ParameterError(f"train.min_lr_ratio={self.min_lr_ratio!r} must be in [0, 1]")
        if self.loss not in LOSSES:
            raise ParameterError(f"train.loss={self.loss!r} must be one of {', '.join(LOSSES)}")
        if not 0 <= self.gain_db <= 60:
            raise ParameterError(f"train.gain_db={self.gain_db!r} must be in [0, 60] dB")
        non_negative_number("train.grad_clip", self.grad_clip)
        non_negative_number("train.weight_decay", self.weight_decay)
        non_negative_number("train.energy_weight", self.energy_weight)


@dataclass(frozen=True)
class DataConfig:
    """Which data to train on (the ``[data]`` table).

    Parameters
    ----------
    path : str
        NSynth-layout folder or folder of audio files.
    families, sources : list of str
        NSynth filters (empty: all).
    pitches, velocities : str
        Inclusive ranges such as "36-84" (empty: all).
    segment_s : float
        Plain audio folders are cut into segments of this length in seconds.
    """

    path: str = ""
    families: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    pitches: str = ""
    velocities: str = ""
    segment_s: float = 4.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "families", tuple(self.families))
        object.__setattr__(self, "sources", tuple(self.sources))
        positive_number("data.segment_s", self.segment_s, unit="seconds")


@dataclass(frozen=True)
class RunConfig:
    model: VQVAEConfig
    train: TrainConfig
    data: DataConfig

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.to_dict(),
            "train": {f.name: getattr(self.train, f.name) for f in fields(self.train)},
            "data": {f.name: _plain(getattr(self.data, f.name)) for f in fields(self.data)},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunConfig":
        unknown = sorted(set(data) - {"model", "train", "data"})
        if unknown:
            raise ParameterError(f"unknown config tables {unknown}; valid tables are model, train, data")
        return cls(
            model=VQVAEConfig.from_dict(data.get("model", {})),
            train=_build(TrainConfig, data.get("train", {}), "train"),
            data=_build(DataConfig, data.get("data", {}), "data"),
        )


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def _build(cls, table: dict[str, Any], prefix: str):
    names = {f.name: f for f in fields(cls)}
    unknown = sorted(set(table) - set(names))
    if unknown:
        raise ParameterError(f"unknown {prefix} keys {unknown}; valid keys are {', '.join(sorted(names))}")
    typed = {}
    for key, value in table.items():
        default = getattr(cls(), key) if key != "path" else ""
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise ParameterError(f"{prefix}.{key}={value!r} must be true or false")
        elif isinstance(default, float) and isinstance(value, int):
            value = float(value)
        typed[key] = value
    return cls(**typed)


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # a bare word is a string (e.g. train.loss=mse)


def apply_overrides(config: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.path=value`` overrides (TOML values) to a nested config dict."""
    config = copy.deepcopy(config)
    for item in overrides:
        if "=" not in item:
            raise ParameterError(f"--set {item!r} must look like table.key=value, e.g. train.lr=1e-3")
        key, text = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if len(parts) < 2:
            raise ParameterError(f"--set {item!r}: the key must name a table, e.g. model.codebook_size")
        node = config
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ParameterError(f"--set {item!r}: {part!r} is not a table")
        node[parts[-1]] = _parse_value(text.strip())
    return config


def load_config(path: Optional[str | os.PathLike], overrides: list[str] = ()) -> RunConfig:
    """Read a TOML config (tables model, model.stft, train, data), apply overrides, validate."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ParameterError(f"config file {str(path)!r} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ParameterError(f"config file {str(path)!r} is not valid TOML: {exc}") from None
    return RunConfig.from_dict(apply_overrides(data, list(overrides)))


def training_clips(
    config: RunConfig, *, min_samples: int, path: Optional[str | os.PathLike] = None, progress: bool = False,
    where: Optional[Path] = None,
):
    """The clips of ``config.data`` (or of the folder ``path``, with the same filters) at the
    model's rate, each at least ``min_samples`` long: what `fit` trains on and `prior` counts."""
    from .data import load_clips, note_filter_from_args

    path = path if path is not None else config.data.path
    if not path:
        run = f"run folder {str(where)!r}" if where is not None else "the config"
        raise ParameterError(f"{run} names no training data; pass --data DIR")
    note_filter = note_filter_from_args(
        families=list(config.data.families),
        sources=list(config.data.sources),
        pitches=config.data.pitches,
        velocities=config.data.velocities,
    )
    return load_clips(
        path, sr=config.model.stft.sr, min_samples=min_samples, note_filter=note_filter,
        segment_s=config.data.segment_s, progress=progress,
    )


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate of optimiser step ``step`` (0-based): linear warm-up, then cosine decay."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(cfg.steps - cfg.warmup_steps, 1)
    progress = min((step - cfg.warmup_steps) / span, 1.0)
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + (cfg.lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def crop_samples(model_cfg: VQVAEConfig, segment_frames: int) -> int:
    """Samples of a crop: ``segment_frames`` full frames plus the lead-in their first window needs."""
    stft = model_cfg.stft
    lead = -(-(stft.n_fft - stft.hop_length) // stft.hop_length)
    return (segment_frames + lead) * stft.hop_length


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write a checkpoint (tensors and plain values, see :func:`load_checkpoint`) atomically."""
    path = Path(path)
    with atomic_path(path, suffix=".tmp") as tmp:
        torch.save(state, tmp)
    return path


def _remove_stale_temps(run_dir: Path) -> None:
    """Delete the temporaries a killed run left half-written in its folder.

    Every file of a run folder (checkpoint, config, energy CSV and report) is written to a
    ``.NAME[.XXXX].tmp`` beside it and renamed; a SIGKILL between the two leaves the temporary
    behind. Called before this run writes anything (the energy tracker starts later), so
    such files are torn leftovers, never results.
    """
    for stale in run_dir.glob(".*.tmp"):
        stale.unlink(missing_ok=True)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint written by :func:`train` (tensors and plain values only)."""
    path = Path(path)
    if not path.is_file():
        raise ParameterError(f"checkpoint {str(path)!r} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise ParameterError(f"checkpoint {str(path)!r} cannot be read: {exc}") from None


def model_from_run(run_dir: str | os.PathLike) -> tuple[VQVAE, dict[str, Any]]:
    """Rebuild the trained model of a run folder from its config and checkpoint (eval mode)."""
    run_dir = Path(run_dir)
    config_path = run_dir / CONFIG_NAME
    if not config_path.is_file():
        raise ParameterError(f"{str(run_dir)!r} is not a run folder: no {CONFIG_NAME} (create one with `fit`)")
    config = RunConfig.from_dict(json.loads(config_path.read_text()))
    state = load_checkpoint(run_dir / CHECKPOINT_NAME)
    model = VQVAE(config.model)
    model.load_state_dict(state["model"])
    model.eval()
    return model, state


class _Distributed:
    """Rank, world size and device of this process; DDP is on when torchrun set WORLD_SIZE > 1."""

    def __init__(self, device: Optional[str]):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cuda":
            if not torch.cuda.is_available():
                raise ParameterError("device='cuda' but no CUDA device is available; use --device cpu")
            torch.cuda.set_device(local)
            self.device = torch.device("cuda", local)
        elif device == "cpu":
            self.device = torch.device("cpu")
        else:
            raise ParameterError(f"device={device!r} must be 'cpu' or 'cuda'")
        self.enabled = self.world > 1
        if self.enabled and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            value = value.detach().clone()
            dist.all_reduce(value)
            value /= self.world
        return value

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


def _spectrogram_image(target: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """[1, 2 * n_bins, frames] picture: input above, reconstruction below, low frequencies down."""
    pair = torch.cat([recon.flip(0), target.flip(0)], dim=0).float()
    low, high = pair.min(), pair.max()
    return ((pair - low) / (high - low + 1e-8))[None]


def rank_zero(work: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``work(run, ...)`` on rank 0 only (files, TensorBoard, the progress bar); other ranks
    return None. Work that takes part in collectives (all-reduce) must not be behind it."""

    @functools.wraps(work)
    def on_rank_zero(run: "_Run", *args: Any, **kwargs: Any) -> Any:
        return work(run, *args, **kwargs) if run.ddp.main else None

    return on_rank_zero


@dataclass
class _Window:
    """Training figures summed since the last log line."""

    usage: torch.Tensor  # [K] code counts
    recon: float = 0.0
    commit: float = 0.0
    energy: float = 0.0  # the cell energy term (train.energy_weight > 0)
    perplexity: float = 0.0
    steps: int = 0


@dataclass
class _Run:
    """Everything a training run holds between steps; the loop's functions take and update it."""

    config: RunConfig
    run_dir: Path
    ddp: "_Distributed"
    dataset: Any
    sampler: Any
    per_epoch: int
    data_description: str
    model: VQVAE
    net: torch.nn.Module
    optimizer: torch.optim.Optimizer
    step: int
    window: _Window
    writer: Any = None
    energy: Any = None
    bar: Any = None
    last_restarts: int = 0
    last_loss: float = float("nan")
    examples: int = 0
    started: float = field(default_factory=time.perf_counter)

    def due(self, every: int) -> bool:
        """True at every ``every``-th step and at the last one."""
        return self.step % every == 0 or self.step == self.config.train.steps


def batch_of(dataset, sampler, *, step: int, per_epoch: int, rank: int, tcfg: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank ``rank``'s crops of step ``step`` ``[batch, samples]``, with and without their random gain.

    The crops depend only on the seed, the step and the rank (a resumed run sees the batches
    an uninterrupted one would have seen)."""
    epoch, within = divmod(step, per_epoch)
    sampler.set_epoch(epoch)
    dataset.set_epoch(epoch)
    order = list(iter(sampler))[within * tcfg.batch_size : (within + 1) * tcfg.batch_size]
    audio = torch.stack([dataset[i] for i in order])
    gen = torch.Generator().manual_seed(tcfg.seed * 1_000_003 + step * 997 + rank)
    gain_db = (torch.rand(audio.shape[0], 1, generator=gen) * 2 - 1) * tcfg.gain_db
    return audio * 10 ** (gain_db / 20), audio


def _start(config: RunConfig, run_dir: Path, ddp: "_Distributed", *, resume: bool, progress: bool, tracker) -> _Run:
    """Check the run folder, load the data, build (or restore) model and optimiser, open the logs."""
    from .data import CropDataset

    cfg, tcfg = config.model, config.train
    checkpoint_path = run_dir / CHECKPOINT_NAME
    state = None
    if resume:
        state = load_checkpoint(checkpoint_path)
    elif checkpoint_path.exists():
        raise ParameterError(
            f"run folder {str(run_dir)!r} already holds a checkpoint; pass --resume to continue it "
            "or choose a new run folder"
        )
    torch.manual_seed(tcfg.seed)
    model = VQVAE(cfg).to(ddp.device)
    if state is None and tcfg.init:
        from .finetune import init_from_model_file

        # before anything is written: a file that does not fit leaves no run folder behind
        init_from_model_file(model, tcfg.init, cells_per_batch=tcfg.batch_size * cfg.n_rows * tcfg.segment_frames // cfg.time_stride)
    _write_config(ddp, config, run_dir)

    n_samples = crop_samples(cfg, tcfg.segment_frames)
    clips = training_clips(config, min_samples=n_samples, progress=progress and ddp.main)
    dataset = CropDataset(clips, n_samples=n_samples, seed=tcfg.seed)
    clips.audio = []  # the dataset keeps a float16 copy; drop the float32 one
    sampler = torch.utils.data.DistributedSampler(
        dataset, num_replicas=ddp.world, rank=ddp.rank, shuffle=True, seed=tcfg.seed, drop_last=True
    )
    per_epoch = len(sampler) // tcfg.batch_size
    if per_epoch == 0:
        raise ParameterError(
            f"{len(dataset)} clips give no full batch of train.batch_size={tcfg.batch_size} "
            f"per process ({ddp.world} processes); lower the batch size or add data"
        )

    optimizer = torch.optim.AdamW(model.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    step = 0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step = int(state["step"])
        torch.set_rng_state(state["torch_rng"])
    net: torch.nn.Module = model
    if ddp.enabled:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[ddp.device.index] if ddp.device.type == "cuda" else None
        )
    run = _Run(
        config=config, run_dir=run_dir, ddp=ddp, dataset=dataset, sampler=sampler, per_epoch=per_epoch,
        data_description=clips.description, model=model, net=net, optimizer=optimizer, step=step,
        window=_Window(usage=torch.zeros(cfg.codebook_size, device=ddp.device)),
        last_restarts=int(model.quantizer.restarts),
    )
    _open_logs(run, progress=progress)
    from .energy import EnergyTracker

    run.energy = tracker if isinstance(tracker, EnergyTracker) else None  # gets the TB writer and epoch/step marks
    if run.energy is not None:
        run.energy.writer = run.writer
    return run


@rank_zero
def _open_logs(run: _Run, *, progress: bool) -> None:
    from torch.utils.tensorboard import SummaryWriter

    run.writer = SummaryWriter(str(run.run_dir / "tb"), purge_step=run.step if run.step else None)
    if progress:
        from tqdm import tqdm

        run.bar = tqdm(total=run.config.train.steps, initial=run.step, desc="fit", unit="step", dynamic_ncols=True)


def _write_config(ddp: "_Distributed", config: RunConfig, run_dir: Path) -> None:
    if ddp.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        _remove_stale_temps(run_dir)
        with atomic_path(run_dir / CONFIG_NAME, suffix=".tmp") as tmp:
            tmp.write_text(json.dumps(config.to_dict(), indent=2, sort_keys=True))


def train_step(run: _Run):
    """One optimiser step on this rank's batch; returns the model output and the batch audio."""
    from spectro_fx.models.spectral import magnitude

    cfg, tcfg = run.config.model, run.config.train
    if run.energy is not None and (run.step % run.per_epoch == 0 or run.energy.current_epoch is None):
        run.energy.mark_epoch(run.step // run.per_epoch)
    audio, _ = batch_of(run.dataset, run.sampler, step=run.step, per_epoch=run.per_epoch, rank=run.ddp.rank, tcfg=tcfg)
    audio = audio.to(run.ddp.device)
    with torch.no_grad():
        mag = magnitude(audio, cfg.stft)[:, :, -tcfg.segment_frames :].float()
    for group in run.optimizer.param_groups:
        group["lr"] = lr_at(run.step, tcfg)
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if tcfg.bf16 and run.ddp.device.type == "cuda"
        else contextlib.nullcontext()
    )
    loss_fn = F.l1_loss if tcfg.loss == "l1" else F.mse_loss
    with autocast:
        out = run.net(mag)
        recon_loss = loss_fn(out.reconstruction.float(), out.target.float())
        loss = recon_loss + out.commitment_loss
        energy_loss = torch.zeros(())
        if tcfg.energy_weight > 0:
            energy_loss = cell_energy_error(run.model.normalizer.inverse(out.reconstruction.float()), mag, cfg)
            loss = loss + tcfg.energy_weight * energy_loss
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if tcfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), tcfg.grad_clip)
    run.optimizer.step()
    run.step += 1
    if run.energy is not None:
        run.energy.mark_step(run.step)
    run.examples += audio.shape[0] * run.ddp.world
    window = run.window
    window.usage += torch.bincount(out.codes.flatten(), minlength=cfg.codebook_size).float()
    window.recon += float(recon_loss.detach())
    window.energy += float(energy_loss.detach())
    window.commit += float(out.commitment_loss.detach())
    window.perplexity += float(out.perplexity)
    window.steps += 1
    if run.bar is not None:
        run.bar.update(1)
    return out, audio


def cell_energy_error(decoded: torch.Tensor, mag: torch.Tensor, cfg: VQVAEConfig) -> torch.Tensor:
    """Mean over codemap cells of |log(decoded energy + e) - log(input energy + e)|: ``decoded``
    and ``mag`` linear magnitude [B, n_bins, frames] (frames a multiple of the time stride), a
    cell a row's bins (``freq_stride``; the top row's padding counts as silence) over a column's
    frames; ``e`` is 1e-6 per bin and frame, so that cells near silence weigh little."""
    rows, ts = cfg.n_rows, cfg.time_stride
    per_row = cfg.padded_bins // rows

    def cells(m: torch.Tensor) -> torch.Tensor:
        power = F.pad(m * m, (0, 0, 0, cfg.padded_bins - m.shape[1]))
        b, _, frames = power.shape
        return power.reshape(b, rows, per_row, frames // ts, ts).sum(dim=(2, 4))

    floor = 1e-6 * per_row * ts
    return (torch.log(cells(decoded) + floor) - torch.log(cells(mag) + floor)).abs().mean()


def log_window(run: _Run) -> None:
    """Average the figures since the last log over all ranks (every rank takes part), write
    them (rank 0) and start a new window."""
    window = run.window
    usage = run.ddp.mean(window.usage)
    means = {k: float(run.ddp.mean(torch.tensor(getattr(window, k) / window.steps)))
             for k in ("recon", "commit", "energy", "perplexity")}
    run.last_loss = means["recon"]
    restarts = int(run.model.quantizer.restarts)
    _write_scalars(run, means, usage, restarts)
    run.last_restarts = restarts
    run.window = _Window(usage=torch.zeros_like(window.usage))


@rank_zero
def _write_scalars(run: _Run, means: dict[str, float], usage: torch.Tensor, restarts: int) -> None:
    cfg, step, writer = run.config.model, run.step, run.writer
    writer.add_scalar("loss/reconstruction", means["recon"], step)
    writer.add_scalar("loss/commitment", means["commit"], step)
    weight = run.config.train.energy_weight
    if weight > 0:
        writer.add_scalar("loss/cell_energy", means["energy"], step)
    writer.add_scalar("loss/total", means["recon"] + means["commit"] + weight * means["energy"], step)
    writer.add_scalar("codebook/perplexity", means["perplexity"], step)
    writer.add_scalar("codebook/unused_codes", int((usage == 0).sum()), step)
    writer.add_scalar(
        "codebook/dead_codes", int((run.model.quantizer.cluster_size < cfg.restart_threshold).sum()), step
    )
    writer.add_scalar("codebook/restarts", restarts - run.last_restarts, step)
    writer.add_scalar("train/lr", lr_at(step - 1, run.config.train), step)
    writer.add_scalar("train/examples_per_s", run.examples / (time.perf_counter() - run.started), step)
    if run.bar is not None:
        run.bar.set_postfix(loss=f"{means['recon']:.4f}", ppl=f"{means['perplexity']:.0f}")


@rank_zero
def save_media(run: _Run, out, audio: torch.Tensor) -> None:
    """The first crop's spectrogram and audio, input and reconstruction, to TensorBoard."""
    from spectro_fx.models.spectral import stft

    from .evaluate import resynthesize

    sr = run.config.model.stft.sr
    target = out.target[0].detach().float().cpu()
    recon = out.reconstruction[0].detach().float().cpu()
    run.writer.add_image("spectrogram/reconstruction_above_input", _spectrogram_image(target, recon), run.step)
    clip = audio[0].detach().cpu().double().numpy()
    magnitude = run.model.normalizer.inverse(recon).numpy()
    wet = resynthesize(magnitude, stft(clip, run.config.model.stft), run.config.model.stft).astype(np.float32)
    peak = max(float(np.abs(wet).max()), float(np.abs(clip).max()), 1e-6)
    run.writer.add_audio("audio/reconstruction", torch.from_numpy(wet / peak)[None], run.step, sample_rate=sr)
    run.writer.add_audio(
        "audio/input", torch.from_numpy((clip[-len(wet) :] / peak).astype(np.float32))[None], run.step, sample_rate=sr
    )


@rank_zero
def checkpoint(run: _Run) -> None:
    """Everything a resumed run needs, atomically, in ``RUN/checkpoint.pt``."""
    save_checkpoint(
        {
            "step": run.step,
            "model": run.model.state_dict(),
            "optimizer": run.optimizer.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "config": json.dumps(run.config.to_dict()),
            "data_description": run.data_description,
        },
        run.run_dir / CHECKPOINT_NAME,
    )


def train(
    config: RunConfig,
    run_dir: str | os.PathLike,
    *,
    resume: bool = False,
    device: Optional[str] = None,
    progress: bool = True,
    tracker: Optional[ContextManager] = None,
) -> dict[str, Any]:
    """Train (or continue training) the VQ-VAE of ``config`` into ``run_dir``.

    Writes ``run_dir/config.json`` (the resolved config), ``run_dir/checkpoint.pt`` every
    ``train.checkpoint_every`` steps and at the end, and TensorBoard events in ``run_dir/tb``.
    Under ``torchrun`` every rank runs this; rank 0 alone writes files.

    Parameters
    ----------
    tracker : context manager, optional
        Entered around the optimisation loop only (e.g. an energy meter), on every rank.

    Returns
    -------
    dict with the final ``step``, ``loss`` (mean reconstruction loss of the last log window),
    ``examples_per_s`` (all ranks together) and ``data_description``.
    """
    run_dir = Path(run_dir)
    cfg, tcfg = config.model, config.train
    if tcfg.segment_frames % cfg.time_stride:
        raise ParameterError(
            f"train.segment_frames={tcfg.segment_frames} must be a multiple of time_stride={cfg.time_stride}"
        )
    if not config.data.path:
        raise ParameterError("no training data: pass --data DIR (or set data.path in the config)")
    ddp = _Distributed(device)
    try:
        run = _start(config, run_dir, ddp, resume=resume, progress=progress, tracker=tracker)
        run.model.train()
        with tracker if tracker is not None else contextlib.nullcontext():
            while run.step < tcfg.steps:
                out, audio = train_step(run)
                if run.due(tcfg.log_every):
                    log_window(run)
                if run.due(tcfg.media_every):
                    save_media(run, out, audio)
                if run.due(tcfg.checkpoint_every):
                    checkpoint(run)
        elapsed = time.perf_counter() - run.started
        _close_logs(run)
        if ddp.enabled:
            dist.barrier()
        return {
            "step": run.step,
            "loss": run.last_loss,
            "examples_per_s": run.examples / elapsed if elapsed > 0 else float("nan"),
            "seconds": elapsed,
            "data_description": run.data_description,
        }
    finally:
        ddp.close()


@rank_zero
def _close_logs(run: _Run) -> None:
    if run.bar is not None:
        run.bar.close()
    run.writer.close()


def default_config_path() -> Path:
    return Path(__file__).parent / "configs" / "default.toml"


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "fit",
        help="train a VQ-VAE on a folder of notes or audio",
        description=(
            "Train the VQ-VAE. The config is a TOML file with tables [model] (and [model.stft]), "
            "[train] and [data]; --set overrides single keys (train.lr=1e-3, model.codebook_size=128). "
            "The resolved config goes to RUN/config.json, checkpoints to RUN/checkpoint.pt, "
            "TensorBoard logs to RUN/tb. Under `torchrun --nproc_per_node=N` it trains with DDP."
        ),
    )
    p.add_argument("--config", default=None, help="TOML config (default: the shipped configs/default.toml)")
    p.add_argument("--data", default=None, help="NSynth-layout folder or folder of audio files")
    p.add_argument("--run-dir", "--run", dest="run_dir", required=True, help="run folder for config, checkpoints and logs (under torchrun spell it --run-dir: torchrun reads --run as its own --run-path)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--resume", action="store_true", help="continue from RUN/checkpoint.pt with RUN/config.json")
    p.add_argument(
        "--init", default=None, metavar="MODEL",
        help="fine-tune: start from this model file's (or bundled model's: default, low-delay, classic) weights "
        "and codebook; the config must describe its network, model.codebook_size may grow",
    )
    p.add_argument("--steps", type=int, default=None, help="total steps (same as --set train.steps=N)")
    p.add_argument("--seed", type=int, default=None, help="seed (same as --set train.seed=N)")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads per process")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    from .energy import add_energy_arguments

    add_energy_arguments(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    overrides = list(args.overrides)
    if args.steps is not None:
        overrides.append(f"train.steps={args.steps}")
    if args.seed is not None:
        overrides.append(f"train.seed={args.seed}")
    if args.init is not None:
        if args.resume:
            raise ParameterError("--init starts a new run from a model file; --resume continues a run: pass one of them")
        from spectro_fx.assets import model_path

        try:
            init = model_path(args.init)  # a file, or a bundled model by name
        except FileNotFoundError as exc:
            raise ParameterError(f"--init: {exc}") from None
        overrides.append(f"train.init={json.dumps(str(init.resolve()))}")
    if args.data is not None:
        overrides.append(f"data.path={json.dumps(str(Path(args.data).resolve()))}")
    run_dir = Path(args.run_dir)
    if args.resume:
        saved = run_dir / CONFIG_NAME
        if not saved.is_file():
            raise ParameterError(f"--resume: {str(run_dir)!r} has no {CONFIG_NAME}; start the run without --resume")
        if args.config is not None:
            warnings.warn("--resume uses the run's saved config; --config is ignored", stacklevel=2)
        config = RunConfig.from_dict(apply_overrides(json.loads(saved.read_text()), overrides))
    else:
        config = load_config(args.config or default_config_path(), overrides)
    from .energy import tracker_from_args

    # NVML and RAPL see whole devices, so one tracker (rank 0) measures this node's GPUs for all ranks
    tracker = tracker_from_args(args, run_dir) if int(os.environ.get("RANK", "0")) == 0 else None
    if tracker is not None and int(os.environ.get("WORLD_SIZE", "1")) > int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1"))):
        tracker.note("multi-node run: only the node running rank 0 is measured")
    result = train(config, run_dir, resume=args.resume, device=args.device, progress=not args.no_progress, tracker=tracker)
    if tracker is not None and tracker.report is not None:
        print((Path(run_dir) / "energy_summary.txt").read_text(), end="")
    if int(os.environ.get("RANK", "0")) == 0:
        print(
            f"trained to step {result['step']}: reconstruction loss {result['loss']:.4f}, "
            f"{result['examples_per_s']:.1f} examples/s; checkpoint in {run_dir / CHECKPOINT_NAME}"
        )
    return 0
