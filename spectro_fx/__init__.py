"""spectro-fx: a VQ-VAE spectrogram effect with naive Bayes inpainting.

The subpackages live in the repository's top-level folders (effect/, models/, training/, assets/).
"""

__version__ = "0.1.0"
