"""Crashes, resume, concurrent jobs and a full disk, against the real pipeline (ANTs,
torch, Nipype) on real MRBrainS T1w images; the app runs as a separate process, as on a
cluster, so that it can be killed."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from mixnet_bids.training.mrbrains import mrbrains_to_bids

pytestmark = [pytest.mark.slow, pytest.mark.shared_data]
TIMEOUT = 900


def app(bids, out, work, *labels, extra=()):
    return [sys.executable, "-m", "mixnet_bids.cli.run", str(bids), str(out), "participant",
            "--participant-label", *labels, "-w", str(work), "--skip-bids-validation",
            "--nprocs", "2", "--task", "3label", *extra]


def run_app(*args, **kwargs):
    return subprocess.run(app(*args, **kwargs), capture_output=True, text=True,
                          timeout=TIMEOUT)


def derivatives(out, subject):
    anat = out / f"sub-{subject}" / "anat"
    return {p.name: p.read_bytes() for p in sorted(anat.iterdir())}


@pytest.fixture(scope="module")
def t1_bids(mrbrains_dir, tmp_path_factory):
    """Subjects 1 and 4 with their T1w only, and sub-9 whose T1w is truncated."""
    root = tmp_path_factory.mktemp("t1w_only")
    mrbrains_to_bids(mrbrains_dir, root, subjects=["1", "4"])
    for path in root.glob("sub-*/anat/*.nii.gz"):
        if not path.name.endswith("_T1w.nii.gz") or "acq-IR" in path.name:
            path.unlink()
    source = root / "sub-1" / "anat" / "sub-1_T1w.nii.gz"
    bad = root / "sub-9" / "anat" / "sub-9_T1w.nii.gz"
    bad.parent.mkdir(parents=True)
    raw = gzip.decompress(source.read_bytes())
    bad.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    return root


@pytest.fixture(scope="module")
def reference_run(t1_bids, tmp_path_factory):
    """An uninterrupted run of sub-1."""
    out = tmp_path_factory.mktemp("reference") / "out"
    work = out.parent / "work"
    result = run_app(t1_bids, out, work, "1")
    assert result.returncode == 0, result.stderr
    return out, work


def test_killed_run_resumes_to_byte_identical_derivatives(t1_bids, reference_run, tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    proc = subprocess.Popen(app(t1_bids, out, work, "1"), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + TIMEOUT
    while not list(work.glob("mixnet_wf/*/mixnet_axial")):  # killed once inference has started
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "sub-1" / "anat").exists()
    assert not (out / "sub-1.html").exists()

    result = run_app(t1_bids, out, work, "1")
    assert result.returncode == 0, result.stderr
    reference = derivatives(reference_run[0], "1")
    images = ["desc-3label_dseg", "desc-3label_uncertainty", "desc-preproc_T1w",
              "desc-tiv_mask", "label-CSF_probseg", "label-GM_probseg", "label-WM_probseg"]
    # every image with its JSON sidecar, and the volumes table with its sidecar
    assert sorted(reference) == sorted(
        [f"sub-1_{name}.{ext}" for name in images for ext in ("json", "nii.gz")]
        + ["sub-1_desc-3label_volumes.json", "sub-1_desc-3label_volumes.tsv"])
    assert derivatives(out, "1") == reference
    assert not list((out / "sub-1").glob(".anat.*"))

    # a finished subject is not redone unless asked
    stamps = {p: p.stat().st_mtime_ns for p in (out / "sub-1" / "anat").iterdir()}
    again = run_app(t1_bids, out, work, "1")
    assert again.returncode == 0
    assert "sub-1: already finished" in again.stderr and "--overwrite" in again.stderr
    assert {p: p.stat().st_mtime_ns for p in (out / "sub-1" / "anat").iterdir()} == stamps
    redo = run_app(t1_bids, out, work, "1", extra=["--overwrite"])
    assert redo.returncode == 0, redo.stderr
    assert derivatives(out, "1") == reference


def test_concurrent_jobs_share_one_output_folder(t1_bids, tmp_path):
    """Two participant jobs (as in a job array) write into one folder at once; the second
    also asks for a subject with a broken image, which is reported while the rest runs."""
    out = tmp_path / "out"
    jobs = [subprocess.Popen(app(t1_bids, out, tmp_path / f"work{i}", *labels),
                             stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            for i, labels in enumerate([("1",), ("4", "9")])]
    results = [(job.wait(timeout=TIMEOUT), job.stderr.read()) for job in jobs]
    assert results[0][0] == 0, results[0][1]
    code, err = results[1]
    assert code == 2, err
    problem = f"{t1_bids / 'sub-9' / 'anat' / 'sub-9_T1w.nii.gz'}: the image data cannot be read"
    assert err.count(problem) == 2  # before the work and again in the final summary
    assert err.rstrip().splitlines()[-1].startswith(f"mixnet-bids: error: {problem}")
    assert not (out / "sub-9").exists()

    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"
    assert (out / "desc-3label_dseg.tsv").read_text().count("\n") == 5  # header + 4 classes
    for subject in ("1", "4"):
        assert len(derivatives(out, subject)) == 16  # 7 images + sidecars, volumes TSV + JSON
        assert (out / f"sub-{subject}.html").stat().st_size > 10_000
    # no temporary, partial or lock file is left; the only hidden file is .bidsignore
    assert [p.name for p in out.rglob(".*")] == [".bidsignore"]

    group = subprocess.run([sys.executable, "-m", "mixnet_bids.cli.run", str(t1_bids),
                            str(out), "group", "--task", "3label"], capture_output=True,
                           text=True)
    assert group.returncode == 0, group.stderr
    table = pd.read_csv(out / "group_desc-3label_volumes.tsv", sep="\t")
    assert list(table["participant_id"]) == ["sub-1", "sub-4"]
    assert (out / "group_desc-3label_report.html").is_file()


@pytest.mark.skipif(not shutil.which("unshare") or subprocess.run(
    ["unshare", "--user", "--map-root-user", "--mount", "true"]).returncode != 0,
    reason="needs `unshare --user --mount` (user namespaces) to mount a small tmpfs")
def test_disk_full_while_writing_leaves_nothing_partial(t1_bids, reference_run, tmp_path):
    """The output folder on a 256 kB file system: the subject fails with a clear message
    and leaves no derivative behind (the work dir is the reference run's: all cached)."""
    full = tmp_path / "full"
    full.mkdir()
    command = " ".join(app(t1_bids, full / "out", reference_run[1], "1"))
    script = (f"mount -t tmpfs -o size=256k tmpfs {full} && {{ {command}; echo rc=$?; "
              f"find {full} -mindepth 1 | sort; }}")
    result = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                             script], capture_output=True, text=True, timeout=TIMEOUT)
    assert "rc=1" in result.stdout, result.stderr
    assert "sub-1: FAILED: " in result.stderr and "No space left on device" in result.stderr
    left = result.stdout.split("rc=1", 1)[1].split()
    # only the run's log folder (settings, crash file) may exist for the subject
    assert not [p for p in left if ("/sub-1/" in p and "/sub-1/log" not in p)
                or p.endswith(".html")], left
    assert any(p.endswith("settings.json") for p in left)
