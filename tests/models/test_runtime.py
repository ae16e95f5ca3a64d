"""Process-wide settings a command makes: the allocator keeping freed memory for a file render."""

import platform
import subprocess
import sys

import pytest

CHILD = """
import sys
import numpy as np
from spectro_fx.models.runtime import keep_freed_memory

def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20

kept = keep_freed_memory() if sys.argv[1] == "keep" else False
before = rss_mb()
block = np.ones(20 * 2**20 // 8)  # a render block's array: 20 MB, touched
del block
print(kept, rss_mb() - before)
"""


def _child(mode: str) -> tuple[bool, float]:
    done = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, timeout=120, check=True)
    kept, grown = done.stdout.split()
    return kept == "True", float(grown)


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt on Linux")
def test_freed_memory_is_kept_for_the_next_block_only_when_asked():
    """By default glibc maps a 20 MB array afresh and gives it back when freed (every block pays
    the page faults again); after ``keep_freed_memory`` the freed memory stays for reuse."""
    kept, grown = _child("keep")
    plain, plain_grown = _child("plain")
    assert kept and not plain
    assert plain_grown < 5.0 < 15.0 < grown
