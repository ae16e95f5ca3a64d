"""The project's exception types, one per kind of user mistake.

Every module raises these (never a bare ``Exception`` or an ``assert``) for bad input.
"""

from typing import Any


class ParameterError(ValueError):
    """A parameter, option or input value is outside what is accepted; the message names both."""


class ModelFileError(ParameterError):
    """A model file cannot be used: not TorchScript, not ours, wrong format version, missing parts."""


def positive_int(name: str, value: Any) -> int:
    """``value`` when it is an integer > 0 (a bool is not one); else ParameterError naming ``name``."""
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ParameterError(f"{name}={value!r} must be a positive integer")
    return value
