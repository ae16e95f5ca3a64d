"""Fixtures of the training tests: one torch thread, as `--threads 1` gives a command."""

import pytest

from spectro_fx.models.runtime import torch_threads


@pytest.fixture(autouse=True)
def _one_torch_thread():
    # tiny models gain nothing from a second thread, and on a loaded 2-core machine the
    # threads' spin-waits made each step seconds slower
    with torch_threads(1):
        yield
