"""Worker processes keep freed memory for reuse instead of faulting it in every call."""

import subprocess
import sys

import pytest

CHILD = """
import resource
import sys
import numpy as np
from fedsim.memory import keep_freed_memory

if sys.argv[1] == "keep":
    assert keep_freed_memory()
faults = []
for _ in range(30):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    # Three temporaries of one W2 stack's size (3 MB each), freed together, as a call does.
    a, b, c = (np.ones((64, 100, 60)) for _ in range(3))
    del a, b, c
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(sum(faults[5:]))
"""


def _faults(mode: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, mode], capture_output=True, text=True, timeout=120, check=True
    )
    return int(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux's")
def test_repeated_large_temporaries_fault_no_pages_once_memory_is_kept():
    # glibc's adaptive thresholds return the freed 9 MB to the OS each time (about 2,200
    # pages faulted in again per iteration); kept, they are reused.
    assert _faults("default") > 25 * 2000
    assert _faults("keep") < 100
