"""The process settings of the entry points."""

import os
import subprocess
import sys

import pytest

#: allocate 64 MB, free it, allocate 64 MB again: the page faults of the second allocation
PROBE = """
import resource, sys
import numpy as np
from mixnet_bids.runtime import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
np.ones(2**24, np.float32)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
a = np.ones(2**24, np.float32)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _huge_pages_always() -> bool:
    path = "/sys/kernel/mm/transparent_hugepage/enabled"
    return os.path.exists(path) and "[always]" in open(path).read()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt (Linux)")
@pytest.mark.skipif(_huge_pages_always(), reason="transparent huge pages set to 'always': "
                    "the kernel maps 2 MiB pages, so the default allocation faults little too")
def test_kept_memory_is_reused_without_new_page_faults():
    # 4 KiB pages, as glibc maps them (numpy would otherwise ask for 2 MiB ones)
    env = {**os.environ, "NUMPY_MADVISE_HUGEPAGE": "0"}
    faults = {mode: int(subprocess.run([sys.executable, "-c", PROBE, mode], env=env,
                                       check=True, capture_output=True, text=True).stdout)
              for mode in ("default", "keep")}
    # 64 MiB in 4 KiB pages: 16,384 faults when mapped afresh, none when reused
    assert faults["default"] > 10_000 and faults["keep"] < 1_000, faults
