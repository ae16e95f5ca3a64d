"""Package data: the default model file, the default MIDI CC map and the demo clip.

Use ``asset_path(name)`` to get a file's path on disk.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

DEFAULT_MODEL = "default_model.pt"
DEFAULT_MIDI_MAP = "default_midi_map.toml"
DEMO_CLIP = "demo.wav"


def asset_path(name: str) -> Path:
    """Path of a bundled asset file (the package is installed as plain files)."""
    return Path(str(resources.files(__name__).joinpath(name)))
