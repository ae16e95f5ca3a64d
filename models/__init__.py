"""Networks, vector quantizer, spectral features and the model file of spectro-fx.

Shared by the engine (which only loads model files) and the training tool.
"""

from .errors import ModelFileError, ParameterError
from .config import STFTConfig, VQVAEConfig

__all__ = ["ModelFileError", "ParameterError", "STFTConfig", "VQVAEConfig"]
