"""The project's exception types, one per kind of user mistake.

Every module raises these (never a bare ``Exception`` or an ``assert``) for bad input.
"""

import numbers
from typing import Any


class ParameterError(ValueError):
    """A parameter, option or input value is outside what is accepted; the message names both."""


class ModelFileError(ParameterError):
    """A model file cannot be used: not TorchScript, not ours, wrong format version, missing parts."""


def _shown(value: Any) -> str:
    """``value`` as a message shows it: numpy scalars as the plain number (4, not np.int64(4))."""
    if isinstance(value, numbers.Number) and hasattr(value, "item"):
        value = value.item()
    return repr(value)


def _refuse(name: str, value: Any, accepted: str, note: str) -> ParameterError:
    return ParameterError(f"{name}={_shown(value)} must be {accepted}" + (f" ({note})" if note else ""))


def positive_int(name: str, value: Any, *, unit: str = "") -> int:
    """``value`` as an int when it is an integer > 0 (numpy's too; a bool or a float is not one);
    else ParameterError naming ``name`` and, when given, the ``unit`` ("Hz", "frames")."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value <= 0:
        raise _refuse(name, value, "a positive integer", unit)
    return int(value)


def non_negative_int(name: str, value: Any) -> int:
    """``value`` as an int when it is an integer >= 0 (a seed, an epoch); else ParameterError naming ``name``."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 0:
        raise _refuse(name, value, "an integer >= 0", "")
    return int(value)


def positive_number(name: str, value: Any, *, unit: str = "") -> float:
    """``value`` as a float when it is a real number > 0 (NaN is not; a bool is not a number);
    else ParameterError naming ``name`` and, when given, the ``unit`` or what the value means."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not value > 0:
        raise _refuse(name, value, "> 0", unit)
    return float(value)


def non_negative_number(name: str, value: Any, *, unit: str = "") -> float:
    """``value`` as a float when it is a real number >= 0 (NaN is not); else ParameterError naming ``name``."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not value >= 0:
        raise _refuse(name, value, ">= 0", unit)
    return float(value)
