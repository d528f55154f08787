"""Atomic swaps of output folders."""

import subprocess
import sys
import time

import pytest

from mixnet_bids.interfaces.bids import publish_subject
from mixnet_bids.io import exchange


def test_exchange_swaps_two_folders(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "old.txt").write_text("old")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "new.txt").write_text("new")
    if not exchange(tmp_path / "b", tmp_path / "a"):
        pytest.skip("this file system cannot swap paths (RENAME_EXCHANGE)")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["new.txt"]
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["old.txt"]


def test_exchange_with_a_missing_path_raises(tmp_path):
    (tmp_path / "a").mkdir()
    with pytest.raises(FileNotFoundError):
        exchange(tmp_path / "a", tmp_path / "missing")
    assert (tmp_path / "a").is_dir()


WATCH = """
import os, sys, time
path, stop = sys.argv[1], time.monotonic() + float(sys.argv[2])
print("ready", flush=True)
seen = missing = 0
while time.monotonic() < stop:
    seen += 1
    missing += not os.path.isdir(path)
print(seen, missing)
"""


def test_overwriting_publish_never_leaves_anat_missing(tmp_path):
    staging, out = tmp_path / "staging", tmp_path / "out"
    (staging / "sub-01" / "anat").mkdir(parents=True)
    (staging / "sub-01.html").write_text("<html></html>")
    dseg = staging / "sub-01" / "anat" / "sub-01_dseg.nii.gz"
    dseg.write_bytes(b"first")
    publish_subject(staging, out, "01", None)
    anat = out / "sub-01" / "anat"
    if not exchange(anat, anat):  # swapping a path with itself probes support
        pytest.skip("this file system cannot swap paths (RENAME_EXCHANGE)")
    watcher = subprocess.Popen([sys.executable, "-c", WATCH, str(anat), "3"],
                               stdout=subprocess.PIPE, text=True)
    assert watcher.stdout.readline().strip() == "ready"
    deadline = time.monotonic() + 2.5
    publishes = 0
    while time.monotonic() < deadline:
        dseg.write_bytes(f"run {publishes}".encode())
        publish_subject(staging, out, "01", None)
        publishes += 1
    seen, missing = map(int, watcher.communicate()[0].split())
    assert publishes > 10 and seen > 1000
    assert missing == 0
    assert (anat / "sub-01_dseg.nii.gz").read_text() == f"run {publishes - 1}"
    assert sorted(p.name for p in anat.parent.iterdir()) == ["anat"]
