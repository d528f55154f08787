"""Advisory locks that let several training processes share one machine or one run folder.

On a 2-core host, two single-thread trainers run 1.45 times the iterations per second of one
trainer on both cores (``benchmarks/train_processes.py``): a process waits for its batch on
one thread. So the cross-validation can run as one process per core, each training the next
plane that no other process holds (``make cv-background CV_JOBS=2``). The lock of a folder is
``<folder>/training.lock`` (git ignores it); the operating system releases it when its
process ends, however it ends, so a killed run never leaves a folder locked.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_NAME = "training.lock"


class Busy(RuntimeError):
    """Another process holds the folder."""


@contextmanager
def hold(folder: Path, wait: bool = False) -> Iterator[None]:
    """Hold ``folder`` (created if needed) for this process while the block runs: wait for
    another holder to let go when ``wait``, else raise ``Busy``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK_NAME, "a", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise Busy(f"{folder}: another process is training it (it holds "
                       f"{folder / LOCK_NAME}); wait for it, or stop it first") from None
        yield
