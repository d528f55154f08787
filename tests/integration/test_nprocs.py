"""The derivatives depend on the inputs and the settings, not on the resources: a participant
run with ``--nprocs 1`` and one with ``--nprocs 2`` write the same bytes.

The input is the smallest real one of the integration tests (nilearn's MNI152 head at 2.5 mm
with T1w, IR and FLAIR contrasts), and the runs ask for every optional output, so that every
multi-threaded step runs: N4 per modality, the rigid and template registrations (affine and
SyN), the transforms and the Jacobian (ANTs), and the networks of the three planes (torch).
The second run also has the thread variables of the environment set to 2, as a container or
a cluster may set them: the app's own thread counts must win.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys

import pytest
from helpers import mni_dataset

pytestmark = pytest.mark.slow
TIMEOUT = 1800
THREAD_VARIABLES = ("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "NSLOTS", "OMP_NUM_THREADS",
                    "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def participant(bids, root, nprocs: int, threads_in_environment: str | None):
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    if threads_in_environment:
        env.update(dict.fromkeys(THREAD_VARIABLES, threads_in_environment))
    out = root / "out"
    result = subprocess.run(
        [sys.executable, "-m", "mixnet_bids.cli.run", str(bids), str(out), "participant",
         "-w", str(root / "work"), "--skip-bids-validation", "--nprocs", str(nprocs),
         "--task", "3label", "--save-probabilities", "--output-spaces", "MNI152NLin2009aSym"],
        capture_output=True, text=True, env=env, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def hashes(folder) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.iterdir())}


def figures(report) -> list[str]:
    return re.findall(r'src="data:image/png;base64,([^"]+)"', report.read_text())


def test_derivatives_are_identical_whatever_nprocs(tmp_path):
    bids = mni_dataset(tmp_path / "bids")
    one = participant(bids, tmp_path / "nprocs1", 1, None)
    two = participant(bids, tmp_path / "nprocs2", 2, "2")

    first, second = hashes(one / "sub-01" / "anat"), hashes(two / "sub-01" / "anat")
    images = [name for name in first if name.endswith(".nii.gz")]
    assert {"sub-01_desc-preproc_T1w.nii.gz", "sub-01_desc-preproc_FLAIR.nii.gz",
            "sub-01_acq-IR_desc-preproc_T1w.nii.gz", "sub-01_desc-tiv_mask.nii.gz",
            "sub-01_desc-3label_dseg.nii.gz", "sub-01_desc-3label_probseg.nii.gz",
            "sub-01_space-MNI152NLin2009aSym_res-2_label-GM_desc-modulated_probseg.nii.gz",
            "sub-01_desc-3label_volumes.tsv"} <= set(first), sorted(first)
    assert len(images) >= 10, sorted(first)
    different = sorted(name for name in first.keys() | second.keys()
                       if first.get(name) != second.get(name))
    assert not different, different
    # the report records the command line (so --nprocs); its figures are the same
    assert figures(one / "sub-01.html") == figures(two / "sub-01.html")
    assert len(figures(one / "sub-01.html")) >= 2
