"""The whole-brain convention end to end (ANTs, torch, Nipype) with random fine networks, on
a skull-stripped T1w (nilearn's MNI152 template, whose background is 0) and a whole-head T1w
(MRBrainS subject 1): honest volumes (never above the TIV) and a zero background that is
never tissue.

Random networks call tissue almost everywhere in the head, which is the hard case for the
volume definitions; their labels mean nothing, so nothing here measures accuracy.
"""

from __future__ import annotations

import json
from importlib import resources

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from helpers import random_weights
from nibabel.processing import resample_to_output
from scipy import ndimage

from mixnet_bids.cli.run import main

pytestmark = pytest.mark.slow

#: Voxel size (mm) of the skull-stripped test head: coarse, to keep the run short.
VOXEL_MM = 3.0


def write_t1w(root, subject, img):
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(json.dumps(
        {"Name": "heads", "BIDSVersion": "1.9.0"}))
    anat = root / f"sub-{subject}" / "anat"
    anat.mkdir(parents=True)
    img.header.set_xyzt_units("mm")
    nib.save(img, str(anat / f"sub-{subject}_T1w.nii.gz"))
    return root


def run_wholebrain(root, subject):
    weights = random_weights(root / "weights", "fine")
    code = main([str(root / "bids"), str(root / "out"), "participant", "--participant-label",
                 subject, "-w", str(root / "work"), "--skip-bids-validation", "--nprocs", "2",
                 "--weights-dir", str(weights)])
    assert code == 0
    return root / "bids", root / "out", weights


@pytest.fixture(scope="module")
def stripped_run(tmp_path_factory):
    """nilearn's MNI152 T1 is brain-extracted: 0 outside the brain and its CSF."""
    root = tmp_path_factory.mktemp("stripped")
    t1 = nib.load(str(resources.files("nilearn.datasets") / "data"
                      / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"))
    small = resample_to_output(t1, voxel_sizes=(VOXEL_MM,) * 3, order=1)
    data = np.clip(small.get_fdata(), 0, None).astype(np.float32)
    write_t1w(root / "bids", "stripped", nib.Nifti1Image(data, small.affine))
    return run_wholebrain(root, "stripped")


@pytest.fixture(scope="module")
def head_run(mrbrains_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("head")
    t1 = nib.load(mrbrains_dir / "1" / "orig" / "reg_T1.nii.gz")
    write_t1w(root / "bids", "head", nib.Nifti1Image(t1.get_fdata(dtype=np.float32),
                                                      t1.affine))
    return run_wholebrain(root, "head")


@pytest.fixture(params=["stripped", pytest.param("head", marks=pytest.mark.shared_data)])
def run(request):
    """``(subject, bids, out, weights)`` of each run."""
    return (request.param, *request.getfixturevalue(f"{request.param}_run"))


def image(anat, subject, name):
    return np.asarray(nib.load(anat / f"sub-{subject}_{name}.nii.gz").dataobj)


def test_volumes_stay_inside_the_tiv(run):
    subject, bids, out, _ = run
    anat = out / f"sub-{subject}" / "anat"
    row = pd.read_csv(anat / f"sub-{subject}_desc-wholebrain_volumes.tsv", sep="\t").iloc[0]
    dseg = image(anat, subject, "desc-wholebrain_dseg")
    tiv_img = nib.load(anat / f"sub-{subject}_desc-tiv_mask.nii.gz")
    tiv = np.asarray(tiv_img.dataobj) > 0
    voxel_ml = float(np.prod(tiv_img.header.get_zooms()[:3])) / 1000
    assert tiv[dseg > 0].all()
    assert row["TIV_ml"] == pytest.approx(tiv.sum() * voxel_ml, rel=1e-4)
    assert row["GM_ml"] + row["WM_ml"] + row["CSF_ml"] <= row["TIV_ml"] + 1e-3
    assert row["TIV_source"] == ("skull-stripping" if subject == "stripped" else "networks")
    fractions = [row[f"{t}_fraction"] for t in ("GM", "WM", "CSF")]
    assert all(0 < f < 1 for f in fractions) and sum(fractions) <= 1 + 1e-4
    for tissue in ("GM", "WM", "CSF"):
        prob = image(anat, subject, f"label-{tissue}_probseg")
        assert (prob[~tiv] == 0).all()
        assert row[f"{tissue}_ml"] == pytest.approx(prob.sum() * voxel_ml, rel=1e-3)
    assert 0 < row["cerebellum_ml"] < row["GM_ml"] + row["WM_ml"]
    assert 0 < row["brainstem_ml"] < row["WM_ml"]
    assert not [c for c in row.index if c.endswith("_voxels")]
    sidecar = json.loads((anat / f"sub-{subject}_desc-wholebrain_volumes.json").read_text())
    assert "cerebellar cortex" in sidecar["GM_ml"]["Description"]


def zero_background(data):
    """Voxels exactly 0 that touch the image border through other such voxels."""
    labels, _ = ndimage.label(data == 0)
    border = np.unique(np.concatenate([labels[[0, -1]].ravel(), labels[:, [0, -1]].ravel(),
                                       labels[:, :, [0, -1]].ravel()]))
    return np.isin(labels, border[border > 0])


def test_the_zero_background_is_never_tissue(run):
    subject, bids, out, _ = run
    anat = out / f"sub-{subject}" / "anat"
    source = np.asarray(nib.load(bids / f"sub-{subject}/anat/sub-{subject}_T1w.nii.gz").dataobj)
    background = zero_background(source)
    assert 0.3 < background.mean() < 0.9
    dseg = image(anat, subject, "desc-wholebrain_dseg")
    assert (dseg[background] == 0).all()
    for tissue in ("GM", "WM", "CSF"):
        assert (image(anat, subject, f"label-{tissue}_probseg")[background] == 0).all()
    assert (dseg[~background] > 0).mean() > 0.5  # random networks: tissue elsewhere
    if subject == "stripped":
        # the stripping tool's brain is the brain: every voxel it kept is tissue, and the TIV
        tiv = image(anat, subject, "desc-tiv_mask") > 0
        assert (dseg[~background] > 0).all() and np.array_equal(tiv, ~background)
    if subject == "head":
        # the whole-head T1w has zeros inside the head too (air, and 356 voxels of dark
        # CSF in the manual labels of this integer image): those may be tissue
        enclosed = (source == 0) & ~background
        assert enclosed.sum() > 1000 and (dseg[enclosed] > 0).any()


def test_the_sidecar_and_report_say_whether_the_input_was_skull_stripped(run):
    subject, bids, out, _ = run
    sidecar = json.loads((out / f"sub-{subject}" / "anat"
                          / f"sub-{subject}_desc-preproc_T1w.json").read_text())
    assert sidecar["SkullStripped"] is (subject == "stripped")
    page = (out / f"sub-{subject}.html").read_text()
    said = ("<td>Brain and TIV</td><td>every voxel the skull stripping did not set to 0</td>",
            "the inputs were skull-stripped, so every voxel")
    assert all((text in page) is (subject == "stripped") for text in said)


def test_outputs_and_lookup_table_of_the_wholebrain_convention(stripped_run):
    bids, out, weights = stripped_run
    anat = out / "sub-stripped" / "anat"
    names = sorted(p.name for p in anat.iterdir() if not p.name.endswith(".json"))
    assert names == sorted(f"sub-stripped_{n}" for n in (
        "desc-wholebrain_dseg.nii.gz", "desc-wholebrain_uncertainty.nii.gz",
        "label-GM_probseg.nii.gz", "label-WM_probseg.nii.gz", "label-CSF_probseg.nii.gz",
        "desc-tiv_mask.nii.gz", "desc-preproc_T1w.nii.gz", "desc-wholebrain_volumes.tsv"))
    assert (anat / "sub-stripped_desc-wholebrain_volumes.json").is_file()
    lookup = (out / "desc-wholebrain_dseg.tsv").read_text()
    assert "1\tGray matter = cerebral cortex" in lookup and "cerebellar cortex" in lookup
    assert not (out / "desc-3label_dseg.tsv").exists()
    page = (out / "sub-stripped.html").read_text()
    assert "wholebrain (from the fine networks)" in page
    # the group level finds the same default convention from the same networks
    assert main([str(bids), str(out), "group", "--weights-dir", str(weights)]) == 0
    table = pd.read_csv(out / "group_desc-wholebrain_volumes.tsv", sep="\t")
    assert list(table["participant_id"]) == ["sub-stripped"]
    assert {"cerebellum_ml", "brainstem_ml"} <= set(table.columns)
