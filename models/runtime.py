"""How torch runs in a process: the CPU thread count, set at a command's edge and given back, and
how the C library's allocator keeps freed memory (for a file render).

Libraries (the engine, the training loop) never change either: a process-wide setting belongs to the command.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
from pathlib import Path
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


def available_cores() -> int:
    """The CPU cores this process may run on: its affinity (which ``taskset`` and containers
    narrow), at most its cgroup's CPU quota (:func:`cgroup_cpus`: a container given 2 CPUs of a
    64-core host sees all 64 in its affinity); the machine's count where the system cannot tell."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # (no affinity on macOS and Windows)
        cores = os.cpu_count() or 1
    quota = cgroup_cpus()
    return max(min(cores, quota) if quota is not None else cores, 1)


def cgroup_cpus(root: str = "/sys/fs/cgroup") -> int | None:
    """The CPU quota of this process's cgroup under ``root``, rounded up to whole CPUs (cgroup v2's
    ``cpu.max``, else v1's ``cpu/cpu.cfs_quota_us`` over its period); None without a quota or
    where the files are missing or unreadable."""
    base = Path(root)
    try:
        fields = (base / "cpu.max").read_text().split()
        quota, period = fields[0], fields[1]
    except (OSError, IndexError):
        try:
            quota = (base / "cpu" / "cpu.cfs_quota_us").read_text().strip()
            period = (base / "cpu" / "cpu.cfs_period_us").read_text().strip()
        except OSError:
            return None
    try:
        if quota in ("max", "-1") or int(quota) <= 0:
            return None
        return max(math.ceil(int(quota) / int(period)), 1)
    except (ValueError, ZeroDivisionError):
        return None


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
"""glibc's ``mallopt`` parameters (``malloc.h``)."""

KEPT_MMAP_THRESHOLD = 32 * 1024 * 1024
"""Blocks up to this size come from the heap, not a fresh ``mmap`` (glibc's largest setting)."""

KEPT_TRIM_THRESHOLD = 1024 * 1024 * 1024
"""Freed heap memory kept for reuse, not given back to the system, up to this much."""


def keep_freed_memory() -> bool:
    """Ask glibc's allocator to keep freed memory in this process for its next allocations.

    A file render allocates and frees arrays of several megabytes at every block (a block's
    activations, a region's code probabilities: thousands of cells by 1,024 codes); by default
    glibc maps each fresh and gives it back when freed, so every block pays the page faults and
    the zeroing again (measured: a 23 MB float64 sum took 6.3 ms into a new array, 2.5 ms in
    place). With blocks up to :data:`KEPT_MMAP_THRESHOLD` from the heap and up to
    :data:`KEPT_TRIM_THRESHOLD` of it kept, a render ran 8-11 % faster with ``--chain none`` and
    3-15 % with neural inpainting (docs/benchmarks.md, "Inpainting in a file render"); the
    process keeps its largest working set until it ends. For a command that ends after its work
    (``spectro-fx --input FILE --output FILE``), not for a library or a live set.

    Returns
    -------
    bool
        Whether the allocator took both settings (False where the C library has no ``mallopt``,
        e.g. macOS, or ignores it, e.g. musl).
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):  # (TypeError: Windows loads no library by None)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(M_MMAP_THRESHOLD, KEPT_MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, KEPT_TRIM_THRESHOLD) == 1


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
