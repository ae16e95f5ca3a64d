"""The project's exception types, one per kind of user mistake.

Every module raises these (never a bare ``Exception`` or an ``assert``) for bad input.
"""


class ParameterError(ValueError):
    """A parameter, option or input value is outside what is accepted; the message names both."""


class ModelFileError(ParameterError):
    """A model file cannot be used: not TorchScript, not ours, wrong format version, missing parts."""
