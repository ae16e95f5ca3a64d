"""spectro-fx: a VQ-VAE spectrogram effect with naive Bayes inpainting.

The subpackages live in the repository's top-level folders (effect/, models/, training/, assets/).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    # the installed distribution's version (pyproject.toml's), so `--version` cannot drift from it
    __version__ = version("spectro-fx")
except PackageNotFoundError:  # imported from a checkout that was never installed
    __version__ = "0+unknown"
