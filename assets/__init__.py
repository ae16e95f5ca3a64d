"""Package data: the bundled model files, the default MIDI CC map and the demo clip.

Use ``asset_path(name)`` to get a file's path on disk, ``model_path(model)`` for a model given as a
file or by the name of a bundled model.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

DEFAULT_MODEL = "default_model.pt"
# models that `--model NAME` finds without a path (README, "The bundled models")
BUNDLED_MODELS = {"default": DEFAULT_MODEL, "low-delay": "low_delay_model.pt", "classic": "classic_model.pt"}
MODEL_HELP = f"model file, or a bundled model by name: {', '.join(BUNDLED_MODELS)} (default: default)"
DEFAULT_MIDI_MAP = "default_midi_map.toml"
DEMO_CLIP = "demo.wav"


def asset_path(name: str) -> Path:
    """Path of a bundled asset file (the package is installed as plain files)."""
    return Path(str(resources.files(__name__).joinpath(name)))


def model_path(model: str | os.PathLike | None) -> Path:
    """The file of ``model``: an existing path as given, else a bundled model's name (None: the default).

    Raises FileNotFoundError naming the value and the bundled names when neither fits.
    """
    if model is not None:
        path = Path(model)
        if path.exists():
            return path
        if str(model) not in BUNDLED_MODELS:
            raise FileNotFoundError(
                f"model file {model} does not exist; give a model file or a bundled model: {', '.join(BUNDLED_MODELS)}"
            )
    model = "default" if model is None else str(model)
    bundled = asset_path(BUNDLED_MODELS[model])
    if not bundled.is_file():
        raise FileNotFoundError(f"the bundled model {model!r} ({bundled}) is not installed; reinstall spectro-fx")
    return bundled
