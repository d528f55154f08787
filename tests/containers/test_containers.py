"""The Docker image (built with podman) and the Apptainer SIF made from it, built and run for
real: the demo inside the image as UID 1000 with a read-only root and no network, then inside
the SIF with apptainer (Debian sid's, run in a privileged podman container).

Skipped, with the reason, where podman cannot build or run containers. Minutes: the image
build (~1-3 min, cached layers after that), the demo in it (~2 min), the SIF (~4 min).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from mixnet_bids.inference.planes import PLANES
from mixnet_bids.inference.weights import default_convention

pytestmark = [pytest.mark.slow, pytest.mark.container]
ROOT = Path(__file__).resolve().parents[2]
IMAGE = "localhost/mixnet-bids:test"
SID_IMAGE = "localhost/debian-sid-apptainer:latest"
TIMEOUT = 1800


def podman_env() -> dict:
    """The environment with CONTAINERS_CONF as containers/podman-env.sh writes it."""
    out = subprocess.run(["bash", "-c", "source containers/podman-env.sh && "
                          "echo $CONTAINERS_CONF"], cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip(f"podman is not available: {out.stderr.strip()}")
    return {**os.environ, "CONTAINERS_CONF": out.stdout.strip()}


def podman(env, *args, timeout=TIMEOUT, **kwargs):
    return subprocess.run(["podman", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, **kwargs)


@pytest.fixture(scope="module")
def image():
    if not shutil.which("bash") or os.geteuid() != 0:
        pytest.skip("the container tests build images as root (podman, mmdebstrap)")
    env = podman_env()
    probe = podman(env, "info", timeout=120)
    if probe.returncode != 0:
        pytest.skip(f"podman cannot run here: {probe.stderr.strip()[:300]}")
    build = subprocess.run(["bash", "containers/build-image.sh", IMAGE], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=TIMEOUT)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    return env


def check_demo(out: Path) -> None:
    derivatives = out / "derivatives" / "mixnet-bids"
    anat = derivatives / "sub-01" / "anat"
    task = default_convention(list(PLANES), "v3")  # the image ships the same weights
    assert (anat / f"sub-01_desc-{task}_dseg.nii.gz").stat().st_size > 10_000
    assert (derivatives / "sub-01.html").stat().st_size > 100_000
    table = pd.read_csv(derivatives / f"group_desc-{task}_volumes.tsv", sep="\t")
    assert list(table["participant_id"]) == ["sub-01"]
    # probability-weighted volumes within 15 % of the template's own maps' (GM 1008 mL, WM
    # 670 mL: the MNI152 brain is larger than most); measured 2026-12-07: GM 1010, WM 645
    for tissue, template in template_volumes().items():
        assert abs(table[f"{tissue}_ml"].iloc[0] / template - 1) < 0.15, (tissue, template)


def template_volumes() -> dict[str, float]:
    """mL of GM and WM in nilearn's MNI152 2009a tissue maps, the demo's template."""
    import numpy as np
    from nilearn import datasets

    volumes = {}
    for tissue, load in (("GM", datasets.load_mni152_gm_template),
                         ("WM", datasets.load_mni152_wm_template)):
        img = load(resolution=1)
        volumes[tissue] = float(img.get_fdata().sum() * np.prod(img.header.get_zooms()[:3])
                                / 1000.0)
    return volumes


def test_image_version_and_labels(image):
    version = podman(image, "run", "--rm", "--network", "none", IMAGE, "--version")
    assert version.returncode == 0, version.stderr
    labels = json.loads(podman(image, "image", "inspect", IMAGE).stdout)[0]["Labels"]
    lines = version.stdout.splitlines()
    assert lines[0] == f"mixnet-bids {labels['org.opencontainers.image.version']}"
    assert "  torch 2.13.0+cpu" in lines  # the CPU build, as locked in requirements.lock
    assert labels["org.opencontainers.image.source"].startswith("https://")


def test_demo_in_the_image_as_uid_1000_read_only_offline(image, tmp_path):
    out = tmp_path / "demo"
    out.mkdir()
    os.chown(out, 1000, 1000)
    run = podman(image, "run", "--rm", "-u", "1000:1000", "--read-only", "--network", "none",
                 "-v", f"{out}:/out", "--entrypoint", "mixnet-bids-demo", IMAGE, "/out",
                 "--nprocs", "2")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "/out/derivatives/mixnet-bids/sub-01.html" in run.stdout
    check_demo(out)
    owners = {p.stat().st_uid for p in out.rglob("*")}
    assert owners == {1000}


@pytest.fixture(scope="module")
def apptainer(image, tmp_path_factory):
    """A Debian sid container with apptainer 1.4 (Debian 12 has none)."""
    env = image
    if podman(env, "image", "exists", SID_IMAGE).returncode != 0:
        tarball = tmp_path_factory.mktemp("sid") / "sid.tar"
        debootstrap = subprocess.run(
            ["mmdebstrap", "--variant=apt", "--include=apptainer,squashfs-tools,uidmap",
             "--aptopt=Acquire::Check-Valid-Until \"false\"", "sid", str(tarball)],
            capture_output=True, text=True, timeout=TIMEOUT)
        if debootstrap.returncode != 0:
            pytest.skip(f"cannot make a Debian sid root with apptainer: "
                        f"{debootstrap.stderr.strip()[-300:]}")
        assert podman(env, "import", str(tarball), SID_IMAGE).returncode == 0
    return env


def test_demo_in_the_sif(apptainer, tmp_path):
    env = apptainer
    work = tmp_path / "sif"
    work.mkdir()
    saved = podman(env, "save", "--format", "docker-archive", "-o",
                   str(work / "mixnet-bids.tar"), IMAGE)
    assert saved.returncode == 0, saved.stderr
    shutil.copy(ROOT / "singularity" / "mixnet-bids.def", work)
    (work / "out").mkdir()
    # root lacks CAP_SYS_RESOURCE here: build with --fakeroot, run as an ordinary user
    as_user = "setpriv --reuid=1000 --regid=1000 --clear-groups env HOME=/tmp"
    script = " && ".join([
        "echo root:100000:65536 > /etc/subuid", "echo root:100000:65536 > /etc/subgid",
        "touch /etc/localtime",  # apptainer binds it; the minimal sid root has none
        "echo user:x:1000:1000::/tmp:/bin/sh >> /etc/passwd",
        "echo user:x:1000: >> /etc/group", "chown 1000:1000 /work/out",
        # the fastest gzip level: the test checks the recipe, not the SIF's size
        "cd /work", "apptainer build --fakeroot --mksquashfs-args '-Xcompression-level 1' "
        "mixnet-bids.sif mixnet-bids.def",
        "rm mixnet-bids.tar", f"{as_user} apptainer test mixnet-bids.sif",
        f"{as_user} apptainer exec --cleanenv --containall -B /work/out:/out "
        "mixnet-bids.sif mixnet-bids-demo /out --nprocs 2",
    ])
    run = podman(env, "run", "--rm", "--privileged", "--network", "none",
                 "-v", f"{work}:/work", SID_IMAGE, "sh", "-c", script)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert (work / "mixnet-bids.sif").stat().st_size > 100_000_000
    assert "mixnet-bids 0." in run.stdout  # apptainer test
    check_demo(work / "out")
