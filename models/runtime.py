"""How torch runs in a process: the CPU thread count, set at a command's edge and given back.

Libraries (the engine, the training loop) never change it: a process-wide setting belongs to the command.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from .errors import positive_int


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` torch CPU threads (None: leave the setting alone), then
    restore the previous count, so a command's ``main`` can also run in-process (tests).

    Parameters
    ----------
    threads : int > 0 or None
        Intra-op threads, as ``torch.set_num_threads``.
    """
    if threads is None:
        yield
        return
    positive_int("--threads", threads)
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
