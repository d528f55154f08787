"""The versions of the software a run uses: shown by ``--version`` and in the reports."""

from __future__ import annotations

import platform
import re
from importlib import metadata
from pathlib import Path

from mixnet_bids import __version__


def requirement_names() -> list[str]:
    """mixnet-bids' runtime requirements (requirements.txt), as distribution names."""
    try:
        requires = metadata.requires("mixnet-bids") or []
    except metadata.PackageNotFoundError:  # a source tree that is not installed
        return []
    return [re.match(r"[A-Za-z0-9._-]+", line)[0] for line in requires
            if "extra ==" not in line]


def software_versions() -> dict[str, str]:
    """``{name: version}`` of mixnet-bids, Python and every runtime requirement, as
    installed (e.g. ``torch: 2.13.0+cpu``)."""
    versions = {"mixnet-bids": __version__, "python": platform.python_version()}
    for name in requirement_names():
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def version_text() -> str:
    """What ``mixnet-bids --version`` prints: its version, then one line per dependency."""
    versions = software_versions()
    lines = [f"mixnet-bids {versions.pop('mixnet-bids')}", "running with:"]
    lines += [f"  {name} {version}" for name, version in versions.items()]
    return "\n".join(lines) + "\n"


def cpuinfo(field: str) -> str | None:
    """A field of the first CPU in /proc/cpuinfo (e.g. "model name", "flags"); None where
    there is none."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.split(":", 1)[0].strip() == field:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_name() -> str:
    """The CPU's model name (e.g. "AMD EPYC 9R14"), as the kernel reports it."""
    return cpuinfo("model name") or platform.processor() or platform.machine()
