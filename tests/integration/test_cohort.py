"""Several participants in one run: one Nipype graph whose subjects' steps run side by side
within ``--nprocs``; a subject that fails stops only itself; each subject gets the bytes a
run of that subject alone writes.

Real pipeline (ANTs, torch, Nipype MultiProc) on small real heads (nilearn's MNI152 T1 at
2.5 mm, one slice less per subject). The third subject fails while running: a file stands
where its derivatives are assembled, so its first output step fails.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys

import nibabel as nib
import pytest
from helpers import mni_dataset

pytestmark = pytest.mark.slow
TIMEOUT = 1800


def participant(bids, out, work, labels, nprocs):
    return subprocess.run(
        [sys.executable, "-m", "mixnet_bids.cli.run", str(bids), str(out), "participant",
         "--participant-label", *labels, "-w", str(work), "--skip-bids-validation",
         "--nprocs", str(nprocs), "--task", "3label"],
        capture_output=True, text=True, timeout=TIMEOUT)


def hashes(folder) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.iterdir())}


def test_a_cohort_runs_in_one_graph_and_a_failure_stays_with_its_subject(tmp_path):
    bids = mni_dataset(tmp_path / "bids", subjects=("01", "02", "03"), suffixes=("T1w",))
    alone = participant(bids, tmp_path / "alone" / "out", tmp_path / "alone" / "work",
                        ["01"], nprocs=1)
    assert alone.returncode == 0, alone.stderr[-3000:]

    out, work = tmp_path / "cohort" / "out", tmp_path / "cohort" / "work"
    blocked = work / "mixnet_wf" / "single_subject_sub_03_wf" / "derivatives"
    blocked.parent.mkdir(parents=True)
    blocked.write_text("a file where sub-03's derivatives are assembled\n")
    cohort = participant(bids, out, work, ["01", "02", "03"], nprocs=2)
    err = cohort.stderr
    assert cohort.returncode == 1, err[-3000:]
    assert "mixnet-bids: 2 of 3 participant run(s) finished" in cohort.stdout
    failure = [line for line in err.splitlines() if "sub-03: FAILED: " in line]
    assert len(failure) == 1 and str(blocked) in failure[0], err[-3000:]
    assert "failed: sub-03" in err

    # one graph: the second subject's steps ran while the first was still going
    lines = err.splitlines()
    first_step_02 = next(i for i, line in enumerate(lines) if "sub-02: " in line
                         and line.endswith(" done"))
    done_01 = next(i for i, line in enumerate(lines) if "sub-01: done after " in line)
    assert first_step_02 < done_01

    # each finished subject published whole; the failed one published nothing
    assert hashes(out / "sub-01" / "anat") == hashes(tmp_path / "alone" / "out" / "sub-01"
                                                     / "anat")
    for subject in ("01", "02"):
        anat = out / f"sub-{subject}" / "anat"
        assert len(list(anat.iterdir())) == 16  # 7 images + sidecars, volumes TSV + JSON
        assert (out / f"sub-{subject}.html").is_file()
    shapes = {s: nib.load(out / f"sub-{s}" / "anat" / f"sub-{s}_desc-3label_dseg.nii.gz").shape
              for s in ("01", "02")}
    assert shapes["02"][2] == shapes["01"][2] - 1  # each subject got its own image
    assert not (out / "sub-03" / "anat").exists() and not (out / "sub-03.html").exists()
    logs = list((out / "sub-03" / "log").iterdir())
    assert len(logs) == 1 and (logs[0] / "settings.json").is_file()
    assert list(logs[0].glob("crash-*.txt"))
