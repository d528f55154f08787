"""What every entry point prepares before it runs a workflow: no network access, and the
ANTs tools of this environment on ``PATH``.

Called by the app, the training and cross-validation commands, the benchmarks and the
tests. It changes only environment variables, and only when called.

``keep_freed_memory`` is for processes that do the heavy work themselves (training, and
the app with one process).
"""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

#: glibc's ``mallopt`` parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4


def prepare_runtime() -> None:
    """Set the process environment the workflows need.

    - ``NIPYPE_NO_ET=1``: Nipype's online version check off (set before Nipype is imported);
    - ``TEMPLATEFLOW_AUTOUPDATE=0``: TemplateFlow never downloads (the templates ship with
      the package, see ``mixnet_bids.templates``);
    - this environment's ``bin`` folder first on ``PATH``: the ANTs console scripts
      installed beside the Python interpreter, also when the environment is not activated.
    """
    os.environ["NIPYPE_NO_ET"] = "1"
    os.environ.setdefault("TEMPLATEFLOW_AUTOUPDATE", "0")
    bindir = str(Path(sys.executable).parent)
    if bindir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")


def keep_freed_memory() -> bool:
    """Serve large arrays from the heap and keep freed memory for the next ones (glibc's
    ``mallopt``; False where there is no glibc).

    By default glibc maps every allocation above 32 MB afresh and unmaps it when freed, so
    each new volume, probability map or activation pays its page faults again. Kept, the
    memory is reused: a MixNetv3 training step took 0.49 s instead of 0.53-0.56 s (bfloat16,
    one thread), and a 1 mm T1w participant 58-59 s instead of 66-68 s, its peak RSS
    1.59 GiB instead of 1.21 GiB (the process keeps its peak). Not for Nipype's MultiProc
    workers: a worker would keep its largest step's memory while Nipype plans for it to be
    free.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(M_MMAP_MAX, 0) and libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return False
