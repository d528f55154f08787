"""Atomic file writes: a temporary file in the destination folder, then a rename."""

from __future__ import annotations

import ctypes
import errno
import os
import tempfile
from pathlib import Path
from typing import Callable


def atomic_write(dst: str | Path, write: Callable[[str], object]) -> Path:
    """Call ``write(tmp_path)`` and rename the result onto ``dst`` (same folder).

    Readers see the old file or the complete new one, never a partial file; on error the
    temporary file is removed and ``dst`` is untouched.
    """
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(dst.suffixes[-2:])  # keep .nii.gz so writers pick the format
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=suffix)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dst


def atomic_write_text(dst: str | Path, text: str) -> Path:
    return atomic_write(dst, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2  # linux/fs.h


def exchange(a: str | Path, b: str | Path) -> bool:
    """Swap two existing paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``).

    Readers see either both old or both new names, never a missing one. Returns False,
    touching nothing, when the kernel, C library or file system cannot do it (e.g. NFS);
    other errors raise ``OSError``.
    """
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(a), None, str(b))
