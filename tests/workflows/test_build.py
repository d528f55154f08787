"""Build the Nipype graphs on a generated BIDS skeleton, without running them."""

import pytest
from helpers import bids_skeleton, random_weights

from mixnet_bids.config import Settings
from mixnet_bids.derivatives import dataset_description
from mixnet_bids.templates import ensure_templateflow
from mixnet_bids.volumes import TIV_SOURCES
from mixnet_bids.workflows.base import init_mixnet_wf, init_single_subject_wf
from mixnet_bids.workflows.preprocessing import choose_reference, init_preproc_wf


@pytest.fixture(scope="module", autouse=True)
def templates(tmp_path_factory):
    ensure_templateflow(tmp_path_factory.mktemp("templateflow"))


def node_names(workflow):
    return {name.split(".")[-1] for name in workflow.list_node_names()}


@pytest.mark.parametrize("modalities,reference", [
    (["T1w", "IR", "FLAIR"], "T1w"), (["FLAIR", "IR"], "FLAIR"), (["IR"], "IR"),
    (["T1w"], "T1w")])
def test_preproc_registers_every_non_reference_modality(modalities, reference):
    assert choose_reference(modalities) == reference
    names = node_names(init_preproc_wf(modalities=modalities))
    assert {f"n4_{m}" for m in modalities} <= names
    assert {f"register_{m}" for m in modalities if m != reference} == {
        n for n in names if n.startswith("register_")}
    assert "zscore" in names
    # the registration metric samples inside the reference's head mask
    masks = {(src.name, dst.name, tuple(data["connect"]))
             for src, dst, data in init_preproc_wf(modalities=modalities)._graph.edges(data=True)
             if src.name.startswith("n4_mask_") and dst.name.startswith("register_")}
    edge = (("out_file", "fixed_image_masks"),)
    assert masks == {(f"n4_mask_{reference}", f"register_{m}", edge)
                     for m in modalities if m != reference}


def test_single_subject_graph_has_one_node_per_plane(tmp_path):
    bids = bids_skeleton(tmp_path / "bids", {"01": ["T1w", "FLAIR"]})
    settings = Settings(bids, tmp_path / "out", tmp_path / "work", planes=["axial", "coronal"],
                        plane_weights={"axial": 4.0, "coronal": 1.0},
                        weights_dir=random_weights(tmp_path / "w"), save_probabilities=True)
    images = {"T1w": str(bids / "sub-01/anat/sub-01_T1w.nii.gz"),
              "FLAIR": str(bids / "sub-01/anat/sub-01_FLAIR.nii.gz")}
    wf = init_single_subject_wf(settings=settings, subject="01", session=None, images=images)
    names = node_names(wf)
    assert {"mixnet_axial", "mixnet_coronal", "fusion", "volumes", "register_template",
            "ds_dseg", "ds_probs", "ds_probseg_GM", "ds_preproc_FLAIR"} <= names
    assert "mixnet_sagittal" not in names
    fusion = wf.get_node("fusion")
    assert fusion.inputs.plane_weights == {"axial": 4.0, "coronal": 1.0}
    infer = wf.get_node("mixnet_axial")
    assert infer.inputs.weights.endswith("mixnet_v3_3label_axial.pt")
    # the default mirrors the axial network only; --no-mirror none
    assert infer.inputs.mirror and not wf.get_node("mixnet_coronal").inputs.mirror
    settings.mirror, settings.refine, settings.trust_stripping = False, False, False
    unmirrored = init_single_subject_wf(settings=settings, subject="01", session=None,
                                        images=images)
    assert not unmirrored.get_node("mixnet_axial").inputs.mirror
    assert dataset_description(settings)["GeneratedBy"][0]["Description"].endswith("coronal=1")
    settings.mirror, settings.planes = True, ["coronal"]  # no axial network: none mirrored
    assert dataset_description(settings)["GeneratedBy"][0]["Description"].endswith("coronal=1")
    settings.planes = ["axial", "coronal"]
    assert dataset_description(settings)["GeneratedBy"][0]["Description"].endswith(
        "coronal=1, axial mirrored")
    assert not unmirrored.get_node("convention_maps").inputs.refine
    assert wf.get_node("convention_maps").inputs.refine   # the default refines
    # the 3label networks' background holds the cerebellum: the stripping mask is not the
    # brain, and neither the volumes nor the sidecars say it is
    assert not wf.get_node("convention_maps").inputs.trust_stripping
    assert "skull-stripped" not in str(wf.get_node("outputs_wf.ds_dseg").inputs.metadata)
    assert "skull-stripped" not in str(wf.get_node("outputs_wf.ds_tiv").inputs.metadata)
    settings.refine = True
    assert dataset_description(settings)["GeneratedBy"][0]["Description"].endswith(
        "coronal=1, axial mirrored, intensity-refined")
    assert wf.get_node("convention_maps").inputs.networks == "3label"
    assert {"signal_T1w", "signal_FLAIR", "signal_to_reference_FLAIR"} <= names


@pytest.mark.parametrize("task,tissue_dseg", [("wholebrain", False), ("3label", False),
                                              ("8label", True)])
def test_fine_networks_serve_the_asked_convention(tmp_path, task, tissue_dseg):
    bids = bids_skeleton(tmp_path / "bids", {"01": ["T1w"]})
    settings = Settings(bids, tmp_path / "out", tmp_path / "work", task=task,
                        weights_dir=random_weights(tmp_path / "w", "fine"))
    wf = init_single_subject_wf(settings=settings, subject="01", session=None,
                                images={"T1w": str(bids / "sub-01/anat/sub-01_T1w.nii.gz")})
    for plane in ("sagittal", "coronal", "axial"):
        assert wf.get_node(f"mixnet_{plane}").inputs.weights.endswith(
            f"mixnet_v3_fine_{plane}.pt")
    maps = wf.get_node("convention_maps")
    assert (maps.inputs.networks, maps.inputs.convention) == ("fine", task)
    assert ("ds_dseg3" in node_names(wf)) == tissue_dseg
    # fine networks take a skull-stripped input's mask as the brain unless told not to;
    # every node that describes it is told the same
    for trust in (True, False):
        settings.trust_stripping = trust
        wf = init_single_subject_wf(settings=settings, subject="01", session=None,
                                    images={"T1w": str(bids / "sub-01/anat/sub-01_T1w.nii.gz")})
        assert wf.get_node("convention_maps").inputs.trust_stripping is trust
        for sink in ("ds_dseg", "ds_tiv", "ds_probseg_GM"):
            metadata = str(wf.get_node(f"outputs_wf.{sink}").inputs.metadata)
            assert ("in skull-stripped inputs" in metadata) is trust, sink
        tiv = wf.get_node("outputs_wf.ds_tiv").inputs.metadata["Description"]
        assert TIV_SOURCES["networks"] in tiv   # the volumes JSON's words
        assert (TIV_SOURCES["skull-stripping"] in tiv) is trust


def test_mixnet_wf_holds_every_subject(tmp_path):
    bids = bids_skeleton(tmp_path / "bids", {"01": ["T1w"], "02": ["FLAIR"]})
    settings = Settings(bids, tmp_path / "out", tmp_path / "work",
                        weights_dir=random_weights(tmp_path / "w"))
    runs = [("01", None, {"T1w": str(bids / "sub-01/anat/sub-01_T1w.nii.gz")}),
            ("02", "A", {"FLAIR": str(bids / "sub-02/anat/sub-02_FLAIR.nii.gz")})]
    wf = init_mixnet_wf(settings=settings, subjects=runs)
    names = wf.list_node_names()
    assert any(n.startswith("single_subject_sub_01_wf.") for n in names)
    assert any(n.startswith("single_subject_sub_02_ses_A_wf.") for n in names)
