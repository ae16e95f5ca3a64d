"""How torch runs in a process: the CPU thread count, set at a command's edge and given back.

Libraries (the engine, the training loop) never change it: a process-wide setting belongs to the command.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from .errors import ParameterError, positive_int


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


def fast_precision() -> str:
    """The network precision that runs fastest on this CPU: ``"bfloat16"`` where it multiplies
    bfloat16 in hardware (AMX tiles or AVX512-BF16: Sapphire Rapids and later Xeons, Zen 4),
    ``"float32"`` elsewhere (there bfloat16 is converted in software and runs slower)."""
    import torch

    def supported(name: str) -> bool:
        check = getattr(torch.cpu, name, None)  # private torch helpers: absent means unknown
        try:
            return bool(check()) if check is not None else False
        except RuntimeError:
            return False

    return "bfloat16" if supported("_is_amx_tile_supported") or supported("_is_avx512_bf16_supported") else "float32"


PRECISION_CHOICES = ("auto", "float32", "bfloat16")


def resolve_precision(choice: str, *, offline: bool) -> str:
    """The network precision a command runs with for ``--precision CHOICE``: ``auto`` is
    :func:`fast_precision` for file rendering (``offline``) and ``float32`` live, where a
    block's few frames run no faster in bfloat16 (its per-call overhead eats the gain)."""
    if choice not in PRECISION_CHOICES:
        raise ParameterError(f"--precision {choice!r} must be one of {', '.join(PRECISION_CHOICES)}")
    if choice == "auto":
        return fast_precision() if offline else "float32"
    return choice
