"""Shared fixtures: the MRBrainS data folder beside the project (skip when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mixnet_bids.runtime import prepare_runtime

prepare_runtime()  # no network, the ANTs console scripts on PATH: as for the app's own runs

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MIXNET_SHARED", ROOT.parent / "shared"))
MRBRAINS = SHARED / "data" / "mrbrains18"


@pytest.fixture(scope="session")
def mrbrains_dir() -> Path:
    if not (MRBRAINS / "1" / "segm.nii.gz").is_file():
        pytest.skip(f"MRBrainS18 data not found at {MRBRAINS} (set MIXNET_SHARED or place "
                    "the team's shared folder beside the project)")
    return MRBRAINS
