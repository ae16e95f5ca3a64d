"""Engine parameters: the region's declarations and name resolution (per-hop smoothing: ``stream.Ramps``).

Region parameters and effect parameters (``effect.param``) share one namespace, thread-safe to set.
Names are resolved in one place, :func:`resolve_name`, for the engine, ``--set`` and CC maps alike.
"""

from __future__ import annotations

import threading
import warnings
from typing import Any, Iterable, Mapping, Sequence


from spectro_fx.models.errors import ParameterError

from .effects import RENAMED_EFFECTS, Effect, Parameter

REGION_PARAMETERS: tuple[Parameter, ...] = (
    Parameter(
        "low_hz", 20.0, 24000.0, 500.0, unit="Hz", scale="log", smoothing_s=0.05,
        help="lower edge of the regenerated frequency band",
    ),
    Parameter(
        "high_hz", 20.0, 24000.0, 4000.0, unit="Hz", scale="log", smoothing_s=0.05,
        help="upper edge of the regenerated frequency band (at or below low_hz: no band)",
    ),
    Parameter(
        "period_s", 0.0, 10.0, 0.0, unit="s",
        help="time gate period; 0 = the region is always on",
    ),
    Parameter(
        "duty", 0.0, 1.0, 0.5, unit="fraction",
        help="fraction of each gate period during which the region is on",
    ),
    Parameter(
        "wet", 0.0, 1.0, 1.0, unit="fraction", smoothing_s=0.03,
        help="wet/dry blend inside the region (0 = input untouched)",
    ),
)

RENAMED_PARAMETERS: dict[str, str] = {"mix": "wet"}
"""Old region parameter names, accepted with a warning until the next release."""


def upgrade_name(name: str) -> str:
    """``name``, or its new spelling when it is an old one (``mix`` -> ``wet``,
    ``mix.amount`` -> ``cross.amount``), with a FutureWarning that names the new one."""
    new = RENAMED_PARAMETERS.get(name)
    if new is None:
        effect, dot, rest = name.partition(".")
        if dot and effect in RENAMED_EFFECTS:
            new = f"{RENAMED_EFFECTS[effect]}.{rest}"
    if new is None:
        return name
    warnings.warn(
        f"parameter {name!r} is now called {new!r}; the old name is accepted until the next release",
        FutureWarning, stacklevel=3,
    )
    return new


def resolve_name(name: str, names: Iterable[str]) -> str:
    """The full name of parameter ``name`` among ``names`` (region names and ``effect.param``).

    An old spelling is upgraded (:func:`upgrade_name`); a bare effect parameter name is
    accepted when exactly one effect has it (``amount`` -> ``noise.amount``). Unknown and
    ambiguous names raise ParameterError listing the choices.
    """
    names = list(names)
    name = upgrade_name(name)
    if name in names:
        return name
    matches = [k for k in names if "." in k and k.split(".", 1)[1] == name]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise ParameterError(f"parameter {name!r} is ambiguous; say which: {', '.join(matches)}")
    raise ParameterError(f"unknown parameter {name!r}; valid: {', '.join(names)}")


class ParameterBank:
    """All parameters of an engine by name: region ones (``low_hz`` ...) and those of the
    effect chain (``noise.amount``; a bare ``amount`` is accepted when only one effect has it).

    ``set`` validates at once (raising ParameterError, warning when clamping) and queues the
    value; the audio thread takes the queue with ``take_pending`` at its next block.
    """

    def __init__(self, chain: Sequence[Effect]):
        self.chain = list(chain)
        self._parameters: dict[str, Parameter] = {p.name: p for p in REGION_PARAMETERS}
        self._owners: dict[str, Effect | None] = {p.name: None for p in REGION_PARAMETERS}
        for effect in self.chain:
            for p in effect.parameters:
                key = f"{effect.name}.{p.name}"
                self._parameters[key] = p
                self._owners[key] = effect
        self._values: dict[str, Any] = {k: p.default for k, p in self._parameters.items()}
        for effect in self.chain:
            for p in effect.parameters:
                self._values[f"{effect.name}.{p.name}"] = effect.values[p.name]
        self._pending: dict[str, Any] = {}
        self._lock = threading.Lock()

    def parameters(self) -> dict[str, Parameter]:
        return dict(self._parameters)

    def names(self) -> list[str]:
        return list(self._parameters)

    def resolve(self, name: str) -> str:
        """The full name of ``name`` (``amount`` -> ``noise.amount`` when unique; see
        :func:`resolve_name`)."""
        return resolve_name(name, self._parameters)

    def owner(self, key: str) -> Effect | None:
        return self._owners[key]

    def set(self, name: str, value: Any) -> tuple[str, Any]:
        """Validate and queue; returns ``(full_name, value_after_clamping)``."""
        key, coerced = self._check(name, value)
        with self._lock:
            self._values[key] = coerced
            self._pending[key] = coerced
        return key, coerced

    def set_many(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Validate all of ``values``, then queue them under one lock, so ``take_pending``
        returns all or none of them; returns ``{full_name: value_after_clamping}``."""
        checked = dict(self._check(name, value) for name, value in values.items())
        with self._lock:
            self._values.update(checked)
            self._pending.update(checked)
        return checked

    def _check(self, name: str, value: Any) -> tuple[str, Any]:
        key = self.resolve(name)
        parameter = self._parameters[key]
        coerced, clamped = parameter.coerce(value, owner=key.rsplit(".", 1)[0] if "." in key else "")
        if clamped:
            shown = repr(coerced) if isinstance(coerced, str) else f"{coerced:g}"
            warnings.warn(
                f"{key}={value} is outside [{parameter.minimum:g}, {parameter.maximum:g}] "
                f"{parameter.unit}; clamped to {shown}".replace(" ;", ";"),
                stacklevel=4,
            )
        return key, coerced

    def values(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._values)

    def take_pending(self) -> dict[str, Any]:
        with self._lock:
            pending, self._pending = self._pending, {}
        return pending


def parse_settings(settings: list[str]) -> dict[str, str]:
    """``["low_hz=300", ...]`` -> ``{"low_hz": "300"}`` (values are checked by the engine)."""
    values: dict[str, str] = {}
    for item in settings:
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise ParameterError(f"--set {item!r} must look like NAME=VALUE, e.g. --set low_hz=300")
        values[name.strip()] = value.strip()
    return values
