"""Thread counts are set by the app, not by the machine or by ``--nprocs`` (graphs built,
not run; the runs are in tests/integration/test_nprocs.py and test_cohort.py)."""

import pytest
from helpers import bids_skeleton, random_weights
from nipype.interfaces.ants.base import ANTSCommand

from mixnet_bids.config import Settings
from mixnet_bids.inference.weights import weight_path
from mixnet_bids.interfaces.segment import PlaneInference
from mixnet_bids.preprocessing import ANTS_THREADS
from mixnet_bids.templates import ensure_templateflow
from mixnet_bids.workflows.base import MIXNET_WF, init_mixnet_wf, staging_dir


@pytest.fixture(scope="module", autouse=True)
def templates(tmp_path_factory):
    ensure_templateflow(tmp_path_factory.mktemp("templateflow"))


def nodes(workflow):
    return {name: workflow.get_node(name) for name in workflow.list_node_names()}


def build(tmp_path, **settings):
    bids = bids_skeleton(tmp_path / "bids", {"01": ["T1w", "acq-IR_T1w", "FLAIR"],
                                             "02": ["T1w"]})
    images = {"01": {m: str(bids / f"sub-01/anat/sub-01_{s}.nii.gz")
                     for m, s in [("T1w", "T1w"), ("IR", "acq-IR_T1w"), ("FLAIR", "FLAIR")]},
              "02": {"T1w": str(bids / "sub-02/anat/sub-02_T1w.nii.gz")}}
    config = Settings(bids, tmp_path / "out", tmp_path / "work",
                      weights_dir=random_weights(tmp_path / "w"),
                      output_spaces=["MNI152NLin2009aSym"], **settings)
    crash_dirs = {"sub-01": tmp_path / "log01", "sub-02": tmp_path / "log02"}
    return config, init_mixnet_wf(settings=config, crash_dirs=crash_dirs, subjects=[
        (subject, None, files) for subject, files in images.items()])


@pytest.mark.parametrize("nprocs", [1, 8])
def test_every_numerical_step_has_the_apps_thread_count(tmp_path, nprocs):
    settings, workflow = build(tmp_path, nprocs=nprocs, omp_nthreads=3)
    ants = {n: node for n, node in nodes(workflow).items()
            if isinstance(node.interface, ANTSCommand)}
    # N4 x4, registrations x(2 rigid + 2 template + 2 SyN), transforms, Jacobian
    assert len(ants) >= 20, sorted(ants)
    for name, node in ants.items():
        assert node.interface.inputs.num_threads == ANTS_THREADS, name
        # ITK prefers this variable to the NSLOTS that Nipype derives from num_threads
        assert node.interface.inputs.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] == str(
            ANTS_THREADS), name
        assert node.n_procs == ANTS_THREADS, name
    inference = {n: node for n, node in nodes(workflow).items()
                 if isinstance(node.interface, PlaneInference)}
    assert len(inference) == 6  # 3 planes x 2 subjects
    for name, node in inference.items():
        assert node.interface.inputs.num_threads == 3 == node.n_procs, name


def test_the_networks_thread_count_is_part_of_their_cache_key(tmp_path):
    """Another --omp-nthreads may change the probabilities: a rerun with another value in
    the same work folder must not reuse the cached ones."""
    weights = weight_path("3label", "axial", "v3", random_weights(tmp_path, planes=("axial",)))
    hashes = [PlaneInference(plane="axial", weights=str(weights), num_threads=threads,
                             progress=progress).inputs.get_hashval()[1]
              for threads, progress in [(1, False), (1, True), (2, False)]]
    assert hashes[0] == hashes[1] != hashes[2]


def test_each_subject_keeps_its_crash_files_and_staging_folder(tmp_path):
    settings, workflow = build(tmp_path)
    for name, node in nodes(workflow).items():
        subject = name.split(".")[0].removeprefix("single_subject_sub_")[:2]
        assert node.config["execution"]["crashdump_dir"] == str(tmp_path / f"log{subject}")
    assert staging_dir(settings, "single_subject_sub_01_wf") == (
        tmp_path / "work" / MIXNET_WF / "single_subject_sub_01_wf" / "derivatives")
