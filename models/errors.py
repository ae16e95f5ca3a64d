"""The project's exception types, one per kind of user mistake.

Every module raises these (never a bare ``Exception`` or an ``assert``) for bad input.
"""

import numbers
from typing import Any


class ParameterError(ValueError):
    """A parameter, option or input value is outside what is accepted; the message names both."""


class ModelFileError(ParameterError):
    """A model file cannot be used: not TorchScript, not ours, wrong format version, missing parts."""


def positive_int(name: str, value: Any, *, unit: str = "") -> int:
    """``value`` as an int when it is an integer > 0 (numpy's too; a bool or a float is not one);
    else ParameterError naming ``name`` and, when given, the ``unit`` ("Hz", "frames")."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value <= 0:
        raise ParameterError(f"{name}={value!r} must be a positive integer" + (f" ({unit})" if unit else ""))
    return int(value)


def non_negative_int(name: str, value: Any) -> int:
    """``value`` as an int when it is an integer >= 0 (a seed, an epoch); else ParameterError naming ``name``."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 0:
        raise ParameterError(f"{name}={value!r} must be an integer >= 0")
    return int(value)
