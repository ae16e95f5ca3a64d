"""The scripted column step kept on disk between runs, so a second start skips scripting it.

Scripting the default model's step takes most of a second; loading the saved one takes a sixth.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

CACHE_ENV = "SPECTRO_FX_CACHE"
"""The folder the steps are kept in (default: ``$XDG_CACHE_HOME/spectro-fx``, else
``~/.cache/spectro-fx``); ``off`` keeps nothing on disk."""

KEEP = 8
"""Saved steps kept (the most recently used); each is about the size of its model file."""

_SOURCES = ("effect/core", "models")
"""The packages whose code a scripted step holds (any change there makes a new key)."""


def cache_folder() -> Path | None:
    """Where steps are kept, or None when :data:`CACHE_ENV` is ``off``."""
    chosen = os.environ.get(CACHE_ENV, "")
    if chosen.lower() == "off":
        return None
    if chosen:
        return Path(chosen) / "steps"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "spectro-fx" / "steps"


def model_fingerprint(model: Any) -> str:
    """A digest of what a step takes from ``model`` (a :class:`ModelFile`): its weights, tables and
    config, not its layers' stream state (which changes as a stream runs through the file's module)."""
    digest = hashlib.blake2b(digest_size=16)
    module = model.module
    for name, tensor in module.state_dict().items():
        if name.endswith("cache") or name.endswith("tail_rows"):
            continue
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy().data if tensor.numel() else b"")
    attributes = {name: repr(getattr(module, name)) for name in ("has_prior", "prior_alpha", "has_neural_prior")
                  if hasattr(module, name)}
    digest.update(json.dumps([repr(model.config), attributes], sort_keys=True).encode())
    return digest.hexdigest()


def _source_fingerprint() -> str:
    root = Path(__file__).resolve().parents[2]
    digest = hashlib.blake2b(digest_size=16)
    digest.update(torch.__version__.encode())
    for package in _SOURCES:
        for path in sorted((root / package).rglob("*.py")):
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


_SOURCE_KEY: list[str] = []


def source_fingerprint() -> str:
    """A digest of the code a scripted step is made of, and the torch version (once per process)."""
    if not _SOURCE_KEY:
        _SOURCE_KEY.append(_source_fingerprint())
    return _SOURCE_KEY[0]


def cached_script(make: Callable[[], torch.nn.Module], *, model: Any, settings: dict) -> torch.jit.ScriptModule:
    """``torch.jit.script(make())``, or the same step saved by an earlier run (same model
    content, ``settings``, code and torch). A missing, damaged or unwritable cache only costs
    the scripting: a file that does not load is scripted anew and replaced, and a save is
    written whole or not at all."""
    folder = cache_folder()
    path = None
    if folder is not None:
        key = hashlib.blake2b(
            json.dumps([model_fingerprint(model), source_fingerprint(), settings], sort_keys=True).encode(), digest_size=16
        ).hexdigest()
        path = folder / f"step-{key}.pt"
        if path.is_file():
            try:
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message="`torch.jit.load` is deprecated", category=DeprecationWarning)
                    step = torch.jit.load(str(path), map_location="cpu")
                os.utime(path)  # most recently used: kept longest
                return step
            except Exception:  # noqa: BLE001 - any unreadable file: script anew (below) and replace it
                pass
    with warnings.catch_warnings():  # torch 2.10+ calls TorchScript deprecated; it is what nn~ loads
        warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated", category=DeprecationWarning)
        step = torch.jit.script(make())
    if path is not None:
        _save(step, path)
    return step


def _save(step: torch.jit.ScriptModule, path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, partial = tempfile.mkstemp(dir=path.parent, prefix=".partial-", suffix=".pt")
        os.close(handle)
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="`torch.jit.save` is deprecated", category=DeprecationWarning)
                torch.jit.save(step, partial)
            os.replace(partial, path)
        finally:
            if os.path.exists(partial):
                os.unlink(partial)
        saved = sorted(path.parent.glob("step-*.pt"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in saved[KEEP:]:
            old.unlink(missing_ok=True)
    except OSError:  # a read-only or full disk: this run scripted its step; the next one will again
        pass
