"""Shared fixtures: the MRBrainS data folder beside the project (skip when absent)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("NIPYPE_NO_ET", "1")
# the ANTs console scripts live beside this interpreter, as the app arranges for its runs
os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent),
                                      os.environ.get("PATH", "")])

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MIXNET_SHARED", ROOT.parent / "shared"))
MRBRAINS = SHARED / "data" / "mrbrains18"


@pytest.fixture(scope="session")
def mrbrains_dir() -> Path:
    if not (MRBRAINS / "1" / "segm.nii.gz").is_file():
        pytest.skip(f"MRBrainS18 data not found at {MRBRAINS} (set MIXNET_SHARED or place "
                    "the team's shared folder beside the project)")
    return MRBRAINS
