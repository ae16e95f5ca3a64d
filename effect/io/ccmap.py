"""MIDI CC maps: which knob (channel, CC number) moves which parameter, read from and written to TOML.

Shared by offline automation (MIDI files) and the live mode (python-rtmidi, learn mode).

File format (one ``[[binding]]`` table per knob)::

    # spectro-fx MIDI CC map
    [[binding]]
    parameter = "low_hz"   # a parameter name: region ones (low_hz, high_hz, period_s, duty, wet)
                           # or effect ones as "effect.param" (noise.amount); a bare effect
                           # parameter name is accepted when only one effect has it; a choice
                           # parameter (inpaint.method) takes the knob's value as an index
    cc = 74                # controller number 0..127
    channel = 1            # MIDI channel 1..16 as printed on hardware; omit for any channel
    curve = "log"          # "linear", "log" (for Hz) or "toggle" (>= 64 is max, else min);
                           # default: the parameter's own scale ("log" for low_hz/high_hz)
    min = 100.0            # optional value at CC 0 (default: the parameter's minimum)
    max = 8000.0           # optional value at CC 127 (default: the parameter's maximum)

Other top-level keys and tables are left to their users (the live mode may keep its own
settings there) and ignored here. Errors (malformed TOML, unknown parameter, bad cc or channel)
raise ParameterError naming the file, the line where TOML gives one, and what is accepted.
"""

from __future__ import annotations

import math
import os
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Mapping

from spectro_fx.models.atomic import atomic_path
from spectro_fx.models.errors import ParameterError

from ..core.effects import Parameter, available_effects
from ..core.params import REGION_PARAMETERS, resolve_name, upgrade_name

CURVES = ("linear", "log", "toggle")
BINDING_KEYS = ("parameter", "cc", "channel", "curve", "min", "max")


def known_parameters() -> dict[str, Parameter]:
    """Every parameter a map may name: region ones and those of all registered effects."""
    known = {p.name: p for p in REGION_PARAMETERS}
    for name, cls in available_effects().items():
        for p in cls.parameters:
            known[f"{name}.{p.name}"] = p
    return known


def _known(name: str, parameters: Mapping[str, Parameter]) -> bool:
    try:
        resolve_name(name, parameters)
    except ParameterError:
        return False
    return True


@dataclass(frozen=True)
class CCBinding:
    """One knob -> one parameter.

    Attributes
    ----------
    parameter : str
        Parameter name as written in the map.
    cc : int in [0, 127]
    channel : int in [1, 16] or None
        None listens on every channel.
    curve : {"linear", "log", "toggle"}
    minimum, maximum : float
        Parameter values at CC value 0 and 127 (maximum < minimum inverts the knob).
    """

    parameter: str
    cc: int
    channel: int | None
    curve: str
    minimum: float
    maximum: float

    def value(self, cc_value: int) -> float:
        """Parameter value for a CC value 0..127 (outside that range is clamped)."""
        v = min(max(int(cc_value), 0), 127) / 127.0
        if self.curve == "toggle":
            return self.maximum if cc_value >= 64 else self.minimum
        if self.curve == "log":
            return math.exp(math.log(self.minimum) + v * (math.log(self.maximum) - math.log(self.minimum)))
        return self.minimum + v * (self.maximum - self.minimum)

    def matches(self, channel: int, cc: int) -> bool:
        """``channel`` is 0-based as in MIDI messages (mido, rtmidi); the map stores 1..16."""
        return self.cc == cc and (self.channel is None or self.channel == channel + 1)

    def to_toml(self) -> str:
        lines = ["[[binding]]", f'parameter = "{self.parameter}"', f"cc = {self.cc}"]
        if self.channel is not None:
            lines.append(f"channel = {self.channel}")
        lines += [f'curve = "{self.curve}"', f"min = {self.minimum!r}", f"max = {self.maximum!r}"]
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class CCMap:
    """An ordered set of bindings; several may move on one knob."""

    bindings: tuple[CCBinding, ...] = ()
    source: str = "<map>"

    def handle(self, channel: int, cc: int, cc_value: int) -> list[tuple[str, float]]:
        """Parameter changes ``[(name, value)]`` for a CC message (``channel`` 0-based)."""
        return [(b.parameter, b.value(cc_value)) for b in self.bindings if b.matches(channel, cc)]

    def with_binding(self, binding: CCBinding) -> "CCMap":
        """A map where ``binding`` replaces any binding of the same knob and of the same parameter."""
        kept = tuple(
            b for b in self.bindings
            if not ((b.cc, b.channel) == (binding.cc, binding.channel) or b.parameter == binding.parameter)
        )
        return replace(self, bindings=kept + (binding,))

    def restricted_to(self, parameters: Mapping[str, Parameter]) -> tuple["CCMap", list[CCBinding]]:
        """Split into bindings whose parameter exists in ``parameters`` (e.g. an engine's, with
        its chain) and those that do not (an effect not in the chain)."""
        active = tuple(b for b in self.bindings if _known(b.parameter, parameters))
        inactive = [b for b in self.bindings if b not in active]
        return replace(self, bindings=active), inactive

    def to_toml(self) -> str:
        return "# spectro-fx MIDI CC map (see spectro_fx.effect.io.ccmap)\n\n" + "\n".join(
            b.to_toml() for b in self.bindings
        )


def binding(
    parameter: str,
    cc: int,
    *,
    channel: int | None = None,
    curve: str | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    parameters: Mapping[str, Parameter] | None = None,
    where: str = "binding",
) -> CCBinding:
    """Build a validated binding (defaults from the parameter's declaration). An old parameter
    name is stored under its new one (with a warning), so a map saved again is upgraded."""
    parameters = known_parameters() if parameters is None else parameters
    if not isinstance(parameter, str):
        raise ParameterError(f"{where}: parameter={parameter!r} must be a name; valid: {', '.join(parameters)}")
    parameter = upgrade_name(parameter)
    try:
        declared = parameters[resolve_name(parameter, parameters)]
    except ParameterError as exc:
        raise ParameterError(f"{where}: {exc}") from None
    if not isinstance(cc, int) or isinstance(cc, bool) or not 0 <= cc <= 127:
        raise ParameterError(f"{where}: cc={cc!r} must be an integer in [0, 127]")
    if channel is not None and (not isinstance(channel, int) or isinstance(channel, bool) or not 1 <= channel <= 16):
        raise ParameterError(f"{where}: channel={channel!r} must be an integer in [1, 16] (or omitted for any)")
    if curve is None:
        curve = "toggle" if declared.kind == "bool" else ("log" if declared.scale == "log" else "linear")
    if curve not in CURVES:
        raise ParameterError(f"{where}: curve={curve!r} must be one of {', '.join(CURVES)}")
    bounds = []
    for key, given, default in (("min", minimum, declared.minimum), ("max", maximum, declared.maximum)):
        value = default if given is None else given
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ParameterError(f"{where}: {key}={value!r} must be a finite number")
        bounds.append(float(value))
    if curve == "log" and min(bounds) <= 0:
        raise ParameterError(
            f"{where}: curve='log' needs min and max > 0, got min={bounds[0]:g}, max={bounds[1]:g}"
        )
    return CCBinding(parameter, cc, channel, curve, bounds[0], bounds[1])


def parse_ccmap(text: str, *, source: str = "<string>", parameters: Mapping[str, Parameter] | None = None) -> CCMap:
    """Parse a CC map from TOML text; ``parameters`` defaults to :func:`known_parameters`."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ParameterError(f"{source}: not valid TOML: {exc}") from None
    entries = data.get("binding", [])
    if not isinstance(entries, list):
        raise ParameterError(f"{source}: 'binding' must be an array of tables ([[binding]])")
    parameters = known_parameters() if parameters is None else parameters
    bindings = []
    for i, entry in enumerate(entries):
        where = f"{source}: binding {i + 1}"
        if not isinstance(entry, dict):
            raise ParameterError(f"{where}: must be a table ([[binding]])")
        unknown = sorted(set(entry) - set(BINDING_KEYS))
        if unknown:
            raise ParameterError(f"{where}: unknown keys {unknown}; valid keys: {', '.join(BINDING_KEYS)}")
        if "parameter" not in entry or "cc" not in entry:
            raise ParameterError(f"{where}: needs 'parameter' and 'cc'")
        bindings.append(
            binding(
                entry["parameter"], entry["cc"], channel=entry.get("channel"), curve=entry.get("curve"),
                minimum=entry.get("min"), maximum=entry.get("max"), parameters=parameters, where=where,
            )
        )
    return CCMap(tuple(bindings), source=source)


def load_ccmap(path: str | os.PathLike, *, parameters: Mapping[str, Parameter] | None = None) -> CCMap:
    """Read a CC map file (see the module docstring for the format)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ParameterError(f"CC map {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ParameterError(f"CC map {path} cannot be read: {exc}") from None
    return parse_ccmap(text, source=str(path), parameters=parameters)


def save_ccmap(ccmap: CCMap, path: str | os.PathLike) -> Path:
    """Write a CC map atomically (temp file + rename)."""
    path = Path(path)
    with atomic_path(path, suffix=".tmp") as tmp:
        tmp.write_text(ccmap.to_toml(), encoding="utf-8")
    return path
