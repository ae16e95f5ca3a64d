"""The public effect API: declared parameters, the Effect base class, its context and the registry.

Plugins (built-in ones in effect/plugins/ too) register through the ``spectro_fx.effects`` entry-point group.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

import numpy as np

from spectro_fx.models.errors import ParameterError

if TYPE_CHECKING:  # annotations only: importing the API (and `spectro-fx --help`) does not load torch
    import torch

ENTRY_POINT_GROUP = "spectro_fx.effects"

RENAMED_EFFECTS: dict[str, str] = {"mix": "cross"}
"""Old effect names, accepted in a chain (and in ``effect.param`` names) with a warning until
the next release."""


@dataclass(frozen=True)
class Parameter:
    """A declared, bindable parameter.

    ``kind`` is "float", "int", "bool" or "choice" (then ``choices`` lists the values, and a
    number, as a MIDI knob sends, is rounded to an index into them and clamped: a knob sweeps
    the choices in order). ``scale`` ("linear" or "log") is how a MIDI knob sweeps it.
    ``smoothing_s`` is the time a change takes to settle (0 for discrete parameters).
    """

    name: str
    minimum: float
    maximum: float
    default: Any
    unit: str = ""
    kind: str = "float"
    choices: tuple[str, ...] = ()
    scale: str = "linear"
    smoothing_s: float = 0.0
    help: str = ""

    def __post_init__(self) -> None:
        if self.kind == "choice" and (self.minimum, self.maximum) != (0, len(self.choices) - 1):
            # a knob's range is the index range: it must cover the choices exactly
            raise ParameterError(
                f"choice parameter {self.name!r} must declare minimum=0, maximum={len(self.choices) - 1} "
                f"(indices of {', '.join(self.choices)}), not {self.minimum:g}, {self.maximum:g}"
            )

    def coerce(self, value: Any, *, owner: str = "") -> tuple[Any, bool]:
        """Validate ``value``; returns ``(value, clamped)``. Out-of-range numbers are clamped
        (the caller warns); wrong types and unknown choices raise ParameterError."""
        label = f"{owner}.{self.name}" if owner else self.name
        if self.kind == "choice":
            if isinstance(value, str):
                if value not in self.choices:
                    raise ParameterError(
                        f"{label}={value!r} must be one of {', '.join(self.choices)} "
                        f"(or an index 0..{len(self.choices) - 1})"
                    )
                return value, False
            return self._choice_at(value, label)
        if self.kind == "bool":
            if isinstance(value, str):
                if value.lower() not in ("0", "1", "true", "false", "on", "off"):
                    raise ParameterError(f"{label}={value!r} must be true/false, on/off or 1/0")
                return value.lower() in ("1", "true", "on"), False
            return bool(value), False
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ParameterError(
                f"{label}={value!r} must be a number in [{self.minimum:g}, {self.maximum:g}] {self.unit}".rstrip()
            ) from None
        if math.isnan(number):
            raise ParameterError(f"{label}=nan must be a number in [{self.minimum:g}, {self.maximum:g}]")
        clamped = min(max(number, self.minimum), self.maximum)
        if self.kind == "int":
            clamped = int(round(clamped))
        return clamped, clamped != number

    def _choice_at(self, value: Any, label: str) -> tuple[str, bool]:
        """A number as an index into ``choices``: rounded, clamped into range."""
        last = len(self.choices) - 1
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or math.isnan(value):
            raise ParameterError(f"{label}={value!r} must be one of {', '.join(self.choices)} (or an index 0..{last})")
        index = min(max(int(round(float(value))), 0), last)
        return self.choices[index], not 0 <= float(value) <= last


@dataclass
class CodemapContext:
    """What an effect sees besides the codes it transforms.

    Attributes
    ----------
    model : torch.jit.ScriptModule
        The loaded model file's module (``codebook_size``, ``embed``, ``prior_*`` ...).
    history : torch.Tensor [channels, n_rows, n_history] int64
        Codes of earlier columns as the chain output them (regenerated codes included),
        oldest first. At the start of a stream the engine fills it with the codes of silence
        (what its zero-primed STFT saw before the first sample); other callers may pass zero
        columns.
    rng : np.random.Generator
        The engine's seeded generator: a seeded render is repeatable.
    aux_codes : torch.Tensor [channels, n_rows, n_new] int64 or None
        Codes of a second source for the same columns (``cross``), when an effect asks for one;
        an effect working on latents embeds them (``model.embed``).
    input_history : torch.Tensor [channels, n_rows, n_history] int64 or None
        Codes of the same earlier columns as the encoder gave them, before any effect (None:
        the caller keeps none; effects then use ``history``).
    first_column : int
        The stream's index of the first column of the codes an effect is given: the built-in
        effects key their random draws by it (with ``seed``), as the fused column step does.
    seed : int
        The engine's seed.
    """

    model: Any
    history: torch.Tensor
    rng: np.random.Generator
    aux_codes: torch.Tensor | None = None
    input_history: torch.Tensor | None = None
    first_column: int = 0
    seed: int = 0


class Effect:
    """Base class of codemap effects.

    Subclasses set ``name``, ``parameters`` and override ``process_codes`` and/or
    ``process_latent``. ``region`` is a bool tensor ``[n_rows, n_new]``: True where the
    effect applies. Effects must leave cells outside the region unchanged, and must be a
    bit-exact no-op when ``region`` is all False.

    A chain runs in two stages (:func:`stages`): every ``process_codes`` in chain order on the
    codemap, then every ``process_latent`` in chain order on its embedding, which the decoder
    reads. Float parameters declared with ``smoothing_s > 0`` are ramped by the engine, one
    value per column, in ``values``.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    parameters: ClassVar[tuple[Parameter, ...]] = ()
    needs_aux: ClassVar[bool] = False

    def __init__(self, **values: Any) -> None:
        self.values: dict[str, Any] = {p.name: p.default for p in self.parameters}
        for key, value in values.items():
            self.set(key, value)

    @classmethod
    def parameter(cls, name: str) -> Parameter:
        for p in cls.parameters:
            if p.name == name:
                return p
        valid = ", ".join(p.name for p in cls.parameters) or "(none)"
        raise ParameterError(f"effect {cls.name!r} has no parameter {name!r}; valid: {valid}")

    def set(self, name: str, value: Any) -> bool:
        """Set a parameter; returns True when the value was clamped into range."""
        value, clamped = self.parameter(name).coerce(value, owner=self.name)
        self.values[name] = value
        return clamped

    def reset(self) -> None:
        """Clear stream state (keeps parameters)."""

    def process_codes(self, codes: torch.Tensor, region: torch.Tensor, ctx: CodemapContext) -> torch.Tensor:
        """``codes`` [channels, n_rows, n_new] int64 -> same shape."""
        return codes

    def process_latent(self, latent: torch.Tensor, region: torch.Tensor, ctx: CodemapContext) -> torch.Tensor:
        """``latent`` [channels, code_dim, n_rows, n_new] float -> same shape."""
        return latent

    def process_columns(self, codes: torch.Tensor, region: torch.Tensor, ctx: CodemapContext) -> torch.Tensor | None:
        """Several new columns at once, ``codes`` [channels, n_rows, n_new] with ``ctx`` as
        before the first of them, giving exactly what :meth:`process_codes` gives one column
        at a time (random draws included), or None when the effect cannot (its columns read
        its own earlier output). The engine uses it, where it can, to save the per-column
        overhead of long blocks (offline rendering)."""
        return None


def stages(chain: Sequence[Effect]) -> tuple[list[Effect], list[Effect]]:
    """The chain's code effects and latent effects, each in chain order (see :class:`Effect`).

    Codes are discrete and latents continuous: a latent change followed by a code effect would
    have to be re-quantised to the nearest codes first, which undoes it (a dropped channel
    snaps back to a whole code). So every code effect runs before every latent effect.
    """
    codes = [e for e in chain if type(e).process_codes is not Effect.process_codes]
    latent = [e for e in chain if type(e).process_latent is not Effect.process_latent]
    return codes, latent


def order_note(chain: Sequence[Effect]) -> str | None:
    """A sentence saying how the chain will run when that differs from the order given, else None."""
    codes, latent = stages(chain)
    first_latent = next((i for i, e in enumerate(chain) if e in latent and e not in codes), None)
    late_codes = [e.name for e in chain[first_latent + 1 :] if e in codes] if first_latent is not None else []
    if not late_codes:
        return None
    ran = [e.name for e in codes] + [e.name for e in latent if e not in codes]
    return (
        f"chain {','.join(e.name for e in chain)} runs as {','.join(ran)}: code effects ({', '.join(late_codes)}) "
        f"change the codemap before latent effects ({chain[first_latent].name}) change its embedding; "
        "the other way round, re-quantising would undo the latent change"
    )


def available_effects() -> dict[str, type[Effect]]:
    """All registered effect classes by name (entry points of ``spectro_fx.effects``; the
    installed packages are read once per process)."""
    return {ep.name: ep.load() for ep in _registered()}


@functools.lru_cache(maxsize=1)
def _registered() -> tuple:
    """The entry points of ``spectro_fx.effects``: reading every installed package's metadata
    takes about 6 ms, and an engine's start asks for them some ten times."""
    return tuple(entry_points(group=ENTRY_POINT_GROUP))


def make_chain(names: Sequence[str] | str) -> list[Effect]:
    """Instantiate effects by name, in order (``"inpaint,noise"`` or a list); an old name
    (:data:`RENAMED_EFFECTS`) is accepted with a FutureWarning naming the new one."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    registry = available_effects()
    chain = []
    for name in names:
        if name in RENAMED_EFFECTS and name not in registry:
            warnings.warn(
                f"effect {name!r} is now called {RENAMED_EFFECTS[name]!r}; the old name is accepted until the next release",
                FutureWarning, stacklevel=2,
            )
            name = RENAMED_EFFECTS[name]
        if name not in registry:
            raise ParameterError(f"unknown effect {name!r}; available: {', '.join(sorted(registry))}")
        chain.append(registry[name]())
    return chain
