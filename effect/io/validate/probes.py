"""Instruments the checks put into the engine and the live path: a worker that can be parked,
the locks reachable from an object, an engine wrapper that notes held locks, a region probe effect."""

from __future__ import annotations

import threading
from typing import Any, Mapping

import numpy as np
import torch

from ...core.effects import Effect, Parameter


class ParkingQueue:
    """The live worker's parameter queue, with a place to park the worker: it drains the queue
    at the top of every loop, between engine calls, so parked there it holds nothing and runs
    nothing while the callback is measured alone."""

    def __init__(self) -> None:
        from ..midi import ParameterQueue

        self.queue = ParameterQueue()
        self.go = threading.Event()
        self.go.set()
        self.parked = threading.Event()

    def drain(self) -> list:
        if not self.go.is_set():
            self.parked.set()
            self.go.wait()
            self.parked.clear()
        return self.queue.drain()

    def park(self, timeout: float = 10.0) -> bool:
        self.parked.clear()
        self.go.clear()
        return self.parked.wait(timeout)

    def release(self) -> None:
        self.go.set()


def _is_lock(obj: Any) -> bool:
    return type(obj).__name__ in ("lock", "RLock") and type(obj).__module__ in ("_thread", "threading")


def reachable_locks(roots: Mapping[str, Any], *, depth: int = 5) -> list[tuple[str, Any]]:
    """Every lock reachable from ``roots`` through attributes and containers, by path
    (``engine._bank._lock``); a thread's own state lock (held while it lives) is left out."""
    thread_attrs = set(vars(threading.Thread()))
    found: list[tuple[str, Any]] = []
    seen: set[int] = set()
    frontier = list(roots.items())
    for _ in range(depth):
        nxt = []
        for path, obj in frontier:
            if id(obj) in seen or isinstance(obj, (np.ndarray, torch.Tensor, torch.nn.Module, str, bytes, int, float)):
                continue
            seen.add(id(obj))
            if _is_lock(obj):
                found.append((path, obj))
                continue
            if isinstance(obj, dict):
                nxt += [(f"{path}[{k!r}]", v) for k, v in list(obj.items())[:64]]
            elif isinstance(obj, (list, tuple, set)):
                nxt += [(f"{path}[{i}]", v) for i, v in enumerate(list(obj)[:64])]
            elif hasattr(obj, "__dict__") and not isinstance(obj, type):
                skip = thread_attrs if isinstance(obj, threading.Thread) else set()
                nxt += [(f"{path}.{k}", v) for k, v in vars(obj).items() if k not in skip]
        frontier = nxt
    return found


def _lock_held(lock: Any) -> bool:
    owned = getattr(lock, "_is_owned", None)
    return bool(owned()) if owned is not None else bool(lock.locked())


class LockProbe:
    """The engine as the worker sees it, noting every given lock that is held when an engine
    call starts (the worker is then the only thread that could hold one)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.locks: list[tuple[str, Any]] = []
        self.held: set[str] = set()
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    def process(self, block: np.ndarray) -> np.ndarray:
        self.calls += 1
        for path, lock in self.locks:
            if _lock_held(lock):
                self.held.add(path)
        return self.engine.process(block)


class RegionProbe(Effect):
    """A pass-through effect that notes, per column, whether the region the engine hands the
    chain is empty, and whether its own pair of parameters was ever seen half-applied."""

    name = "validate-probe"
    description = "validation probe: codes pass through unchanged"
    parameters = (
        Parameter("lo", 0.0, 100.0, 10.0, help="lower of a pair always set together, below hi"),
        Parameter("hi", 0.0, 100.0, 20.0, help="upper of the pair"),
    )

    def __init__(self) -> None:
        super().__init__()
        self.columns = 0
        self.empty_columns = 0
        self.torn_pairs = 0

    def process_codes(self, codes, region, ctx):
        self.columns += 1
        if not bool(region.any()):
            self.empty_columns += 1
        if not self.values["lo"] < self.values["hi"]:
            self.torn_pairs += 1
        return codes
