"""`spectro-fx-train export`: turn a training run folder into the model file the effect plays.

Includes the run's learned inpainting priors (``RUN/prior.pt`` and ``RUN/neural_prior.pt``, from `spectro-fx-train prior`) when present.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Optional

from spectro_fx.models.errors import ParameterError

from .prior import NEURAL_PRIOR_NAME, PRIOR_NAME, load_neural_prior, load_prior


def export_run(run_dir: str | Path, output: Optional[str | Path] = None, *, include_prior: bool = True) -> Path:
    """Export the checkpoint of ``run_dir`` to ``output`` (default ``RUN/model.pt``), atomically.

    The file's ``data_description`` names the training data; its metadata records the run
    folder, the step and the training config (its data folder and ``--init`` file by name only).
    """
    from spectro_fx.models.export import export_model

    from .fit import model_from_run

    run_dir = Path(run_dir)
    model, state = model_from_run(run_dir)
    k = model.cfg.codebook_size
    prior = None
    prior_path = run_dir / PRIOR_NAME
    if include_prior and prior_path.is_file():
        prior = load_prior(prior_path)
        if prior.class_log_prior.shape != (k,) or prior.feature_log_prob.shape[1:] != (k, k + 1):
            raise ParameterError(
                f"prior file {str(prior_path)!r} was fitted for another codebook size "
                f"(class_log_prior {tuple(prior.class_log_prior.shape)}, model K={k}); refit it with `spectro-fx-train prior`"
            )
    neural_prior = None
    if include_prior and (run_dir / NEURAL_PRIOR_NAME).is_file():
        neural_prior = load_neural_prior(run_dir / NEURAL_PRIOR_NAME)
    output = Path(output) if output is not None else run_dir / "model.pt"
    description = f"{state.get('data_description', '')}; trained {int(state['step'])} steps"
    train_config = json.loads(state["config"]) if "config" in state else {}
    # a model file travels: it names its data folder and its starting file, not where they lay
    for table, key in (("data", "path"), ("train", "init")):
        if train_config.get(table, {}).get(key):
            train_config[table][key] = Path(train_config[table][key]).name
    metadata = {
        "run": run_dir.name,
        "step": int(state["step"]),
        "train_config": train_config,
        "has_prior": prior is not None,
        "has_neural_prior": neural_prior is not None,
    }
    return export_model(model, output, data_description=description, prior=prior, neural_prior=neural_prior,
                        metadata=metadata)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "export",
        help="write the model file of a training run (what `spectro-fx --model` loads)",
        description=(
            "Write RUN's latest checkpoint as a TorchScript model file, with the learned "
            "inpainting priors RUN/prior.pt and RUN/neural_prior.pt when `spectro-fx-train prior RUN` made them."
        ),
    )
    p.add_argument("run_dir", metavar="RUN", help="run folder made by `spectro-fx-train fit`")
    p.add_argument("--output", "-o", default=None, help="model file to write (default RUN/model.pt)")
    p.add_argument("--no-prior", action="store_true", help="leave RUN/prior.pt and RUN/neural_prior.pt out")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    path = export_run(args.run_dir, args.output, include_prior=not args.no_prior)
    size_mb = path.stat().st_size / 1e6
    print(f"wrote {path} ({size_mb:.2f} MB)")
    return 0
