"""Cohorts on a real SLURM: the job-array recipe (one participant per task, then a dependent
group job) on a two-subject dataset made from the demo data."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from mixnet_bids.cli.demo import build_demo_dataset
from mixnet_bids.inference.planes import PLANES
from mixnet_bids.inference.weights import default_convention

pytestmark = [pytest.mark.slow, pytest.mark.cluster]
TIMEOUT = 1200
#: the convention the app writes without --task (wholebrain with the shipped fine networks)
TASK = default_convention(list(PLANES), "v3")


def wait_for_jobs(env: dict, job_ids: list[str], timeout: float) -> None:
    """Poll squeue until none of ``job_ids`` is pending or running."""
    deadline = time.monotonic() + timeout
    while True:
        out = subprocess.run(["squeue", "-h", "-o", "%i", "-j", ",".join(job_ids)], env=env,
                             capture_output=True, text=True).stdout.split()
        if not out:
            return
        assert time.monotonic() < deadline, f"SLURM jobs still queued: {out}"
        time.sleep(2)


def two_subjects(root):
    """The demo subject and its left-right mirror image as a second subject."""
    build_demo_dataset(root)
    t1 = nib.load(root / "sub-01" / "anat" / "sub-01_T1w.nii.gz")
    mirror = root / "sub-02" / "anat" / "sub-02_T1w.nii.gz"
    mirror.parent.mkdir(parents=True)
    nib.save(nib.Nifti1Image(np.flip(np.asarray(t1.dataobj), 0).copy(), t1.affine), mirror)
    (root / "participants.tsv").write_text("participant_id\nsub-01\nsub-02\n")
    return root


def test_job_array_then_group_job(slurm_cluster, tmp_path):
    bids = two_subjects(tmp_path / "bids")
    out, work = tmp_path / "out", tmp_path / "work"
    result = subprocess.run(
        [sys.executable, "-m", "mixnet_bids.cli.slurm", str(bids), str(out),
         "-w", str(work), "--cpus", "1", "--mem-gb", "2", "--submit"],
        env=slurm_cluster, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    jobs = re.search(r"submitted array job (\d+) and group job (\d+)", result.stdout)
    assert jobs, result.stdout
    wait_for_jobs(slurm_cluster, list(jobs.groups()), TIMEOUT)

    logs = sorted((work / "slurm" / "logs").iterdir())
    assert len(logs) == 3, logs  # two array tasks and the group job
    for subject in ("01", "02"):
        anat = out / f"sub-{subject}" / "anat"
        assert (anat / f"sub-{subject}_desc-{TASK}_dseg.nii.gz").is_file(), \
            "\n".join(log.read_text()[-2000:] for log in logs)
        assert (out / f"sub-{subject}.html").is_file()
    table = pd.read_csv(out / f"group_desc-{TASK}_volumes.tsv", sep="\t")
    assert list(table["participant_id"]) == ["sub-01", "sub-02"]
    # the mirror image has the same tissue volumes, up to the asymmetry of the model
    assert table["GM_ml"].iloc[1] == pytest.approx(table["GM_ml"].iloc[0], rel=0.05)


def test_nipype_slurmgraph_plugin(slurm_cluster, tmp_path):
    """Every step of one participant as a SLURM job through Nipype's SLURMGraph plugin,
    which returns once the jobs are queued; the derivatives appear when they end."""
    bids = build_demo_dataset(tmp_path / "bids")
    out, work = tmp_path / "out", tmp_path / "work"
    result = subprocess.run(
        [sys.executable, "-m", "mixnet_bids.cli.run", str(bids), str(out), "participant",
         "-w", str(work), "--skip-bids-validation", "--plugin", "SLURMGraph",
         "--plugin-args", '{"sbatch_args": "--mem=2G --cpus-per-task=1"}'],
        env=slurm_cluster, capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    assert "submitted to SLURM" in result.stderr
    jobs = subprocess.run(["squeue", "-h", "-o", "%i"], env=slurm_cluster,
                          capture_output=True, text=True).stdout.split()
    assert jobs, "no job was queued"
    wait_for_jobs(slurm_cluster, jobs, TIMEOUT)
    anat = out / "sub-01" / "anat"
    assert (anat / f"sub-01_desc-{TASK}_dseg.nii.gz").is_file(), sorted(work.rglob("*.o*"))[:5]
    assert (out / "sub-01.html").is_file()
