"""Atomic file output: write to a temporary file beside the target, then rename over it.

A failed or killed write never leaves a half-written file where a user expects a result.
The one writer of the project: models, checkpoints, configs, reports, figures, CC maps.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s folder; rename it over ``path`` when the block
    succeeds, delete it when the block raises.

    Parameters
    ----------
    path : path-like
        The final file. Its folder is created if missing.
    suffix : str, optional
        Suffix of the temporary file (default: ``path``'s own, so writers that infer the
        format from the extension, like matplotlib, still work).

    Notes
    -----
    ``mkstemp`` creates 0600 files; the result gets the permissions a plainly created file
    would get (0666 less the umask), since model files, recordings and figures are shared.
    The data reach the disk (fsync) before the rename, so a crash leaves the old file or the
    new one. A process killed inside the block leaves ``.NAME.XXXX<suffix>`` behind; run
    folders pass ``suffix=".tmp"`` so such leftovers are recognisable.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or path.suffix or ".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        with open(tmp, "rb") as written:
            os.fsync(written.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", *, suffix: str | None = None, **kwargs: Any) -> Iterator[IO]:
    """Open a temporary file for writing (``mode`` "w" or "wb", ``kwargs`` as :func:`open`) and
    move it over ``path`` when the block succeeds; see :func:`atomic_path`."""
    if mode not in ("w", "wb"):
        raise ValueError(f"mode={mode!r} must be 'w' or 'wb'")
    if mode == "w":
        kwargs.setdefault("encoding", "utf-8")
    with atomic_path(path, suffix=suffix) as tmp, open(tmp, mode, **kwargs) as handle:
        yield handle
