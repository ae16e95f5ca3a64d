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


def test_the_cores_a_render_takes_are_bounded_by_the_cgroup_quota(tmp_path):
    """A container's CPU quota caps the cores (v2's cpu.max, v1's quota over its period, rounded
    up); no quota, a missing or a garbled file: no cap."""
    from spectro_fx.models.runtime import available_cores, cgroup_cpus

    v2 = tmp_path / "v2"
    v2.mkdir()
    for text, expected in (("200000 100000\n", 2), ("150000 100000", 2), ("max 100000", None), ("x y", None), ("", None)):
        (v2 / "cpu.max").write_text(text)
        assert cgroup_cpus(str(v2)) == expected, text
    v1 = tmp_path / "v1" / "cpu"
    v1.mkdir(parents=True)
    (v1 / "cpu.cfs_quota_us").write_text("350000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpus(str(tmp_path / "v1")) == 4
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpus(str(tmp_path / "v1")) is None
    assert cgroup_cpus(str(tmp_path / "nothing")) is None
    assert 1 <= available_cores()
