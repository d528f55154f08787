"""requirements.lock (``make lock``) pins one exact version of every package, agrees with
the ranges of requirements.txt, holds the CPU build of torch, and is complete: every
dependency of a locked package is locked at a version it accepts."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]


def requirement_lines(path: Path) -> list[str]:
    lines = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
    return [line for line in lines if line]


def locked() -> dict[str, Version]:
    pins = {}
    for line in requirement_lines(ROOT / "requirements.lock"):
        match = re.fullmatch(r"([A-Za-z0-9._-]+)==([^\s;]+)", line)
        assert match, f"requirements.lock: {line!r} is not an exact pin (name==version)"
        pins[canonicalize_name(match[1])] = Version(match[2])
    return pins


def test_lock_says_how_it_was_made():
    assert "#    make lock" in (ROOT / "requirements.lock").read_text()


def test_every_requirement_is_locked_within_its_range():
    pins = locked()
    for line in requirement_lines(ROOT / "requirements.txt"):
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} of requirements.txt is not locked"
        assert requirement.specifier.contains(pins[name], prereleases=True), \
            f"requirements.lock: {name}=={pins[name]} is outside {line!r}"


def test_torch_is_the_cpu_build():
    pins = locked()
    assert pins["torch"].local == "cpu", pins["torch"]
    cuda = [name for name in pins if name.startswith(("nvidia-", "triton"))]
    assert not cuda, cuda


def test_every_dependency_of_a_locked_package_is_locked():
    """Checked with the metadata of the installed packages that have their locked version
    (`make install` installs exactly the lock)."""
    pins = locked()
    environment = default_environment()
    checked = 0
    for name, version in pins.items():
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        if Version(dist.version) != version:
            continue
        checked += 1
        for text in dist.requires or []:
            requirement = Requirement(text)
            if requirement.marker and not requirement.marker.evaluate(
                    {**environment, "extra": ""}):
                continue
            dependency = canonicalize_name(requirement.name)
            assert dependency in pins, f"{name} needs {requirement}, which is not locked"
            assert requirement.specifier.contains(pins[dependency], prereleases=True), \
                f"{name} needs {requirement}; the lock has {dependency}=={pins[dependency]}"
    assert checked >= len(requirement_lines(ROOT / "requirements.txt"))
