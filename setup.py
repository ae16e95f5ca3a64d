"""Package discovery under one namespace, which pyproject.toml cannot say by itself.

pyproject.toml maps ``spectro_fx.<name>`` to the folder ``<name>`` (``[tool.setuptools.package-dir]``);
setuptools' ``find_packages`` lists every subpackage under each mapped folder, so a new one ships
without a list to keep up to date. Everything else about the package is in pyproject.toml.
"""

import tomllib
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent
PACKAGE_DIR = tomllib.loads((HERE / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]

setup(
    packages=sorted(
        {name for name in PACKAGE_DIR}
        | {f"{name}.{sub}" for name, folder in PACKAGE_DIR.items() for sub in find_packages(HERE / folder)}
    ),
)
