"""Atomic file writes: a temporary file in the destination folder, then a rename."""

from __future__ import annotations

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
