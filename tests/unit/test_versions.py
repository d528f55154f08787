"""The versions a run reports: mixnet-bids, Python and every runtime requirement."""

import platform
import re
from importlib import metadata
from pathlib import Path

from mixnet_bids.versions import software_versions

ROOT = Path(__file__).resolve().parents[2]


def test_every_runtime_requirement_is_listed_with_its_installed_version():
    versions = software_versions()
    required = [re.match(r"[A-Za-z0-9._-]+", line)[0] for line in
                (ROOT / "requirements.txt").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    assert required
    for name in required:
        assert versions[name] == metadata.version(name), name
    assert versions["python"] == platform.python_version()
    assert versions["mixnet-bids"] == metadata.version("mixnet-bids")
    assert versions["torch"].startswith("2.13.0")
