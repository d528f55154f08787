"""Training state in git: a run folder is committed as it goes, so the next machine
continues the run from a fresh clone (see docs/training.md)."""

from __future__ import annotations

import logging
import subprocess
import time
from pathlib import Path

LOGGER = logging.getLogger(__name__)


def _git(folder: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True)


def git_commit() -> str:
    """The commit of the code that runs ("unknown" outside a git checkout)."""
    try:
        result = _git(Path(__file__).parent, "rev-parse", "HEAD")
    except OSError:
        return "unknown"
    return result.stdout.strip() if result.returncode == 0 else "unknown"


def last_commit_time(path: Path) -> float:
    """Unix time of the last commit that touched ``path`` (0 when none, or not in git)."""
    path = Path(path).resolve()
    try:
        result = _git(path if path.is_dir() else path.parent, "log", "-1", "--format=%ct",
                      "--", str(path))
    except OSError:
        return 0.0
    stamp = result.stdout.strip()
    return float(stamp) if result.returncode == 0 and stamp else 0.0


def commit_state(paths: list[Path], message: str, attempts: int = 5) -> bool:
    """Commit ``paths`` (folders or files, and only them) to the git repository they are in;
    True when a commit was made.

    Other staged or unstaged changes of the repository are left as they are. A busy index
    (another git command running) is retried; any other failure is logged, and the run goes
    on: its state is still on disk.
    """
    paths = [Path(p).resolve() for p in paths]
    cwd = paths[0] if paths[0].is_dir() else paths[0].parent
    names = [str(p) for p in paths]
    error = ""
    for attempt in range(attempts):
        added = _git(cwd, "add", "--", *names)
        if added.returncode == 0:
            done = _git(cwd, "commit", "--quiet", "--message", message, "--", *names)
            if done.returncode == 0 or "nothing" in done.stdout + done.stderr:
                return done.returncode == 0
            error = done.stderr.strip()
        else:
            error = added.stderr.strip()
        if "index.lock" not in error:
            break
        time.sleep(2 * (attempt + 1))
    # leave nothing staged that someone else's next commit would take along
    _git(cwd, "reset", "--quiet", "--", *names)
    LOGGER.warning("could not commit %s to git: %s", ", ".join(names), error)
    return False
