"""`spectro-fx-train prior`: fit the learned inpainting prior on a run's training codemaps.

Encodes the run's training audio with its checkpoint and counts neighbour codes (categorical naive Bayes) into ``RUN/prior.pt``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence

import numpy as np
import torch

from spectro_fx.models.atomic import atomic_path
from spectro_fx.models.errors import ParameterError
from spectro_fx.models.export import Prior
from spectro_fx.models.naive_bayes import DEFAULT_PRIOR_OFFSETS, fit_categorical_prior

PRIOR_NAME = "prior.pt"
"""The prior's file in a run folder: written by `spectro-fx-train prior`, read by `export`."""
PRIOR_KEYS = ("offsets", "class_log_prior", "feature_log_prob", "alpha")


def codemaps_of_audio(model, clips: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    """Codemaps of mono clips, as the engine would encode them.

    Parameters
    ----------
    model : spectro_fx.models.vqvae.VQVAE
        Trained model (its encoder and codebook are used; nothing is updated).
    clips : iterable of np.ndarray [n_samples] float
        Audio at the model's rate ``model.cfg.stft.sr``.

    Yields
    ------
    codemap : np.ndarray [n_rows, n_columns] int64
        One per clip long enough for one column (shorter clips are skipped).
    """
    from spectro_fx.models.export import ExportedVQVAE
    from spectro_fx.models.spectral import magnitude

    # the exported module's encode is exactly what the engine runs (no quantizer updates)
    encoder = ExportedVQVAE(model).eval()
    cfg = model.cfg
    with torch.no_grad():
        for clip in clips:
            audio = torch.as_tensor(np.asarray(clip, dtype=np.float32)).reshape(1, -1)
            usable = (audio.shape[-1] // cfg.stft.hop_length // cfg.time_stride) * cfg.time_stride
            if usable == 0:
                continue
            mag = magnitude(audio, cfg.stft)
            yield encoder.encode(mag[:, :, :usable].float())[0].numpy()


def fit_prior(
    model,
    clips: Iterable[np.ndarray],
    *,
    offsets: Sequence[tuple[int, int]] = DEFAULT_PRIOR_OFFSETS,
    alpha: float = 1.0,
) -> Prior:
    """Categorical NB prior P(code | neighbours at ``offsets``) on the codemaps of ``clips``.

    See :func:`spectro_fx.models.naive_bayes.fit_categorical_prior`; ``model`` and ``clips``
    as :func:`codemaps_of_audio`.
    """
    return fit_categorical_prior(
        codemaps_of_audio(model, clips), n_codes=model.cfg.codebook_size, offsets=offsets, alpha=alpha
    )


def save_prior(prior: Prior, path: str | os.PathLike) -> Path:
    """Write ``prior`` as a plain dict of tensors (loadable with ``weights_only=True``), atomically."""
    path = Path(path)
    data = {
        "offsets": prior.offsets.to(torch.long).clone(),
        "class_log_prior": prior.class_log_prior.float().clone(),
        "feature_log_prob": prior.feature_log_prob.float().clone(),
        "alpha": float(prior.alpha),
    }
    with atomic_path(path, suffix=".tmp") as tmp:
        torch.save(data, tmp)
    return path


def load_prior(path: str | os.PathLike) -> Prior:
    """Read a prior written by :func:`save_prior` (a dict with ``PRIOR_KEYS``)."""
    path = Path(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise ParameterError(f"prior file {str(path)!r} cannot be read: {exc}") from None
    missing = [k for k in PRIOR_KEYS if not isinstance(data, dict) or k not in data]
    if missing:
        raise ParameterError(f"prior file {str(path)!r} lacks {', '.join(missing)}")
    return Prior(
        offsets=torch.as_tensor(data["offsets"], dtype=torch.long),
        class_log_prior=torch.as_tensor(data["class_log_prior"], dtype=torch.float32),
        feature_log_prob=torch.as_tensor(data["feature_log_prob"], dtype=torch.float32),
        alpha=float(data["alpha"]),
    )


def parse_offsets(text: str) -> tuple[tuple[int, int], ...]:
    """``"-1:0,-2:0,0:-1"`` -> ``((-1, 0), (-2, 0), (0, -1))``, pairs of (d_column, d_row)."""
    pairs = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            dc, dr = (int(v) for v in item.split(":"))
        except ValueError:
            raise ParameterError(
                f"offsets={text!r}: {item!r} must be d_column:d_row, e.g. -1:0 (pairs separated by commas)"
            ) from None
        if (dc, dr) == (0, 0):
            raise ParameterError(f"offsets={text!r}: 0:0 is the cell itself, not a neighbour")
        pairs.append((dc, dr))
    if not pairs:
        raise ParameterError(f"offsets={text!r} must list at least one d_column:d_row pair")
    return tuple(pairs)


def fit_run_prior(
    run_dir: str | os.PathLike,
    *,
    alpha: float = 1.0,
    offsets: Sequence[tuple[int, int]] = DEFAULT_PRIOR_OFFSETS,
    data: Optional[str | os.PathLike] = None,
    progress: bool = False,
) -> tuple[Path, Prior, str]:
    """Fit the prior of a run folder on its training data (or ``data``) and write ``RUN/prior.pt``.

    Returns ``(path, prior, data_description)``.
    """
    from .fit import CONFIG_NAME, RunConfig, model_from_run, training_clips

    import json

    run_dir = Path(run_dir)
    model, _ = model_from_run(run_dir)
    config = RunConfig.from_dict(json.loads((run_dir / CONFIG_NAME).read_text()))
    cfg = model.cfg
    clips = training_clips(
        config, min_samples=cfg.time_stride * cfg.stft.hop_length, path=data, progress=progress, where=run_dir
    )
    prior = fit_prior(model, clips.audio, offsets=offsets, alpha=alpha)
    return save_prior(prior, run_dir / PRIOR_NAME), prior, clips.description


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "prior",
        help="fit the learned inpainting prior of a run (RUN/prior.pt)",
        description=(
            "Encode the run's training audio with its checkpoint and fit a categorical naive Bayes "
            "P(code | neighbouring codes) by counting, with Laplace smoothing. Writes RUN/prior.pt; "
            "`spectro-fx-train export RUN` puts it into the model file, where `inpaint` with "
            "method=learned samples it."
        ),
    )
    p.add_argument("run_dir", metavar="RUN", help="run folder written by `spectro-fx-train fit`")
    p.add_argument("--alpha", type=float, default=1.0, help="Laplace smoothing added to every neighbour count (> 0; default 1)")
    p.add_argument(
        "--offsets",
        default=",".join(f"{dc}:{dr}" for dc, dr in DEFAULT_PRIOR_OFFSETS),
        help=(
            "neighbours as d_column:d_row pairs (columns back in time are negative, rows up in "
            "frequency positive); write --offsets=-1:0,-2:0 (default %(default)s)"
        ),
    )
    p.add_argument("--data", default=None, help="audio folder to fit on instead of the run's training data")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    offsets = parse_offsets(args.offsets)
    path, prior, description = fit_run_prior(args.run_dir, alpha=args.alpha, offsets=offsets, data=args.data)
    used = int(torch.isfinite(prior.class_log_prior).sum())
    print(
        f"prior with {len(offsets)} neighbours, alpha={prior.alpha:g}, {used}/{prior.class_log_prior.numel()} "
        f"codes seen, fitted on {description}; written to {path}"
    )
    return 0
