"""Atomic file output: write to a temporary file beside the target, then rename over it.

A failed or killed write never leaves a half-written file where a user expects a result.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


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
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or path.suffix or ".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
