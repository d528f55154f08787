"""Advisory locks that let several training processes share one machine or one run folder.

On a 2-core host, two single-thread trainers run 1.45 times the iterations per second of one
trainer on both cores (``benchmarks/train_processes.py``): a process waits for its batch on
one thread. So the cross-validation can run as one process per core, each training the next
plane that no other process holds (``make cv-background CV_JOBS=2``). A lock is a file
ending in ``.training.lock`` (git ignores them); the operating system releases it when its
process ends, however it ends, so a killed run never leaves anything locked.
"""

from __future__ import annotations

import errno
import fcntl
import logging
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

LOGGER = logging.getLogger(__name__)
SUFFIX = ".training.lock"


class Busy(RuntimeError):
    """Another process holds the lock."""


def hold_run(run_dir: Path) -> AbstractContextManager[None]:
    """Hold a plane's run folder while it trains (``Busy`` if another process does). Its
    lock is a file beside the folder, so that a run refused before it writes anything (e.g.
    a missing starting network) leaves no folder behind."""
    run_dir = Path(run_dir)
    return hold(run_dir.with_name(run_dir.name + SUFFIX),
                busy=f"{run_dir}: another process is training it; wait for it to finish, "
                     "or stop it first")


@contextmanager
def hold(lock: Path, wait: bool = False, busy: str = "") -> Iterator[None]:
    """Hold the lock file ``lock`` (its folder created if needed) while the block runs: wait
    for another holder to let go when ``wait``, else raise ``Busy`` with the message
    ``busy``. On a file system without locks (some network mounts) it warns and goes on
    unlocked, as runs did before there were locks."""
    lock = Path(lock)
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise Busy(busy or f"{lock}: another process holds it") from None
        except OSError as err:
            if err.errno not in (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            LOGGER.warning("%s: this file system does not lock files (%s); going on "
                           "unlocked: run one process per folder", lock, err.strerror)
        yield
