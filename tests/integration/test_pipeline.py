"""The real pipeline (ANTs + torch + Nipype) on a real MRBrainS subject converted to BIDS.

Subject 1 is one of the training subjects of the shipped weights, so its Dice checks that
preprocessing, orientation handling and weight loading are right; the honest accuracy is
the cross-validation in docs/results.md.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from nibabel.processing import resample_from_to, resample_to_output
from scipy import ndimage

from mixnet_bids.cli.run import main
from mixnet_bids.evaluation.metrics import dice
from mixnet_bids.labels import map_labels
from mixnet_bids.training.mrbrains import mrbrains_to_bids

pytestmark = [pytest.mark.slow, pytest.mark.shared_data]

SUBJECT = "1"
#: Dice floors on the seen subject, 0.05 below what the shipped fine networks measured through
#: this file's runs (2026-12-05, AMD EPYC, bfloat16, axial mirrored): all modalities GM 0.838,
#: WM 0.891, CSF 0.820; T1w only, oblique LAS 0.814, 0.881, 0.660; resampled to 1 mm 0.737,
#: 0.836, 0.617 (the lower of the two sets the T1w floors).
FLOORS_ALL = {"GM": 0.78, "WM": 0.84, "CSF": 0.77}
FLOORS_T1W = {"GM": 0.68, "WM": 0.78, "CSF": 0.56}


def run_participant(bids, out, work, *extra):
    code = main([str(bids), str(out), "participant", "--participant-label", SUBJECT,
                 "-w", str(work), "--skip-bids-validation", "--nprocs", "2",
                 "--task", "3label", *extra])
    assert code == 0
    return out / f"sub-{SUBJECT}" / "anat"


def tissue_dice(dseg_file, labels_img):
    pred = np.asarray(nib.load(dseg_file).dataobj)
    ref = map_labels(np.asarray(labels_img.dataobj), "3label")
    keep = ref != 255
    return {name: dice((pred == i) & keep, (ref == i) & keep)
            for i, name in enumerate(["BG", "GM", "WM", "CSF"]) if i}


@pytest.fixture(scope="module")
def bids_dir(mrbrains_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("mrbrains_bids")
    mrbrains_to_bids(mrbrains_dir, root, subjects=[SUBJECT])
    return root


@pytest.fixture(scope="module")
def full_run(bids_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("derivatives") / "mixnet-bids"
    anat = run_participant(bids_dir, out, tmp_path_factory.mktemp("work"))
    return bids_dir, out, anat


def test_outputs_have_bids_names_and_the_input_geometry(full_run):
    bids, out, anat = full_run
    expected = [f"sub-{SUBJECT}_desc-3label_dseg.nii.gz",
                f"sub-{SUBJECT}_label-GM_probseg.nii.gz",
                f"sub-{SUBJECT}_label-WM_probseg.nii.gz",
                f"sub-{SUBJECT}_label-CSF_probseg.nii.gz",
                f"sub-{SUBJECT}_desc-3label_uncertainty.nii.gz",
                f"sub-{SUBJECT}_desc-tiv_mask.nii.gz",
                f"sub-{SUBJECT}_desc-preproc_T1w.nii.gz",
                f"sub-{SUBJECT}_desc-preproc_FLAIR.nii.gz",
                f"sub-{SUBJECT}_acq-IR_desc-preproc_T1w.nii.gz",
                f"sub-{SUBJECT}_desc-3label_volumes.tsv",
                f"sub-{SUBJECT}_desc-3label_volumes.json"]
    sidecars = [name[:-7] + ".json" for name in expected if name.endswith(".nii.gz")]
    assert sorted(p.name for p in anat.iterdir()) == sorted(expected + sidecars)
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"
    assert description["GeneratedBy"][0]["Name"] == "mixnet-bids"
    assert description["GeneratedBy"][0]["Description"].endswith(
        ", axial mirrored, intensity-refined")
    assert (out / "desc-3label_dseg.tsv").read_text().startswith("index\tname")
    source = nib.load(bids / f"sub-{SUBJECT}" / "anat" / f"sub-{SUBJECT}_T1w.nii.gz")
    for path in anat.glob("*.nii.gz"):
        img = nib.load(path)
        assert img.shape[:3] == source.shape, path.name
        assert np.allclose(img.affine, source.affine, atol=1e-4), path.name
    assert list((out / f"sub-{SUBJECT}" / "log").glob("*/settings.json"))


def test_volumes_agree_with_the_images(full_run):
    _, _, anat = full_run
    row = pd.read_csv(anat / f"sub-{SUBJECT}_desc-3label_volumes.tsv", sep="\t").iloc[0]
    dseg_img = nib.load(anat / f"sub-{SUBJECT}_desc-3label_dseg.nii.gz")
    dseg = np.asarray(dseg_img.dataobj)
    voxel_ml = float(np.prod(dseg_img.header.get_zooms()[:3])) / 1000
    tiv = np.asarray(nib.load(anat / f"sub-{SUBJECT}_desc-tiv_mask.nii.gz").dataobj) > 0
    assert tiv[dseg > 0].all()  # the TIV holds the segmented brain
    for tissue in ["GM", "WM", "CSF"]:
        prob = nib.load(anat / f"sub-{SUBJECT}_label-{tissue}_probseg.nii.gz").get_fdata()
        assert (prob[~tiv] == 0).all()
        assert row[f"{tissue}_ml"] == pytest.approx(prob.sum() * voxel_ml, rel=1e-3)
        assert row[f"{tissue}_fraction"] == pytest.approx(row[f"{tissue}_ml"] / row["TIV_ml"],
                                                          rel=1e-3)
    assert row["TIV_ml"] == pytest.approx(tiv.sum() * voxel_ml, rel=1e-3)
    assert row["GM_ml"] + row["WM_ml"] + row["CSF_ml"] <= row["TIV_ml"]
    assert sum(row[f"{t}_fraction"] for t in ["GM", "WM", "CSF"]) <= 1
    assert not [c for c in row.index if c.endswith("_voxels")]  # one volume definition
    assert 0 <= row["mean_uncertainty"] < 0.5


def test_tiv_is_close_to_the_manual_intracranial_volume(full_run, mrbrains_dir):
    """The manual labels cover the whole intracranial space (brain, outer CSF, ventricles):
    the TIV comes within 5 % of it (measured +0.8 % here, at the native 3 mm slices; the
    generalisation benchmark's 18 runs at 1 mm: -4 % to +8 %)."""
    _, _, anat = full_run
    labels = nib.load(mrbrains_dir / SUBJECT / "segm.nii.gz")
    manual = ndimage.binary_fill_holes(np.asarray(labels.dataobj) > 0)
    tiv_img = nib.load(anat / f"sub-{SUBJECT}_desc-tiv_mask.nii.gz")
    manual_ml = manual.sum() * float(np.prod(labels.header.get_zooms()[:3])) / 1000
    tiv_ml = (np.asarray(tiv_img.dataobj) > 0).sum() * float(
        np.prod(tiv_img.header.get_zooms()[:3])) / 1000
    assert tiv_ml == pytest.approx(manual_ml, rel=0.05), (tiv_ml, manual_ml)


def test_dice_against_manual_labels(full_run, mrbrains_dir):
    _, _, anat = full_run
    labels = nib.load(mrbrains_dir / SUBJECT / "segm.nii.gz")
    scores = tissue_dice(anat / f"sub-{SUBJECT}_desc-3label_dseg.nii.gz", labels)
    for tissue, floor in FLOORS_ALL.items():
        assert scores[tissue] >= floor, scores


def test_group_table(full_run):
    bids, out, _ = full_run
    assert main([str(bids), str(out), "group", "--task", "3label"]) == 0
    table = pd.read_csv(out / "group_desc-3label_volumes.tsv", sep="\t")
    assert list(table["participant_id"]) == [f"sub-{SUBJECT}"]
    assert {"GM_ml", "WM_ml", "CSF_ml", "TIV_ml", "mean_uncertainty"} <= set(table.columns)


def _single_t1w_dataset(root, img):
    (root / f"sub-{SUBJECT}" / "anat").mkdir(parents=True)
    (root / "dataset_description.json").write_text('{"Name": "t", "BIDSVersion": "1.9.0"}')
    nib.save(img, str(root / f"sub-{SUBJECT}" / "anat" / f"sub-{SUBJECT}_T1w.nii.gz"))
    return root


def test_t1w_only_oblique_las(mrbrains_dir, tmp_path):
    t1 = nib.load(mrbrains_dir / SUBJECT / "orig" / "reg_T1.nii.gz")
    labels = nib.load(mrbrains_dir / SUBJECT / "segm.nii.gz")
    # LPS -> LAS: flip the second array axis and its affine column; then tilt the whole
    # head 12 degrees about the left-right axis (an oblique acquisition)
    flip = np.eye(4)
    flip[1, 1], flip[1, 3] = -1, t1.shape[1] - 1
    tilt = nib.affines.from_matvec(nib.eulerangles.euler2mat(x=np.radians(12)))
    las = nib.Nifti1Image(np.asarray(t1.dataobj)[:, ::-1], tilt @ t1.affine @ flip)
    assert nib.aff2axcodes(las.affine) == ("L", "A", "S")
    assert np.degrees(nib.affines.obliquity(las.affine)).max() > 10
    bids = _single_t1w_dataset(tmp_path / "bids", las)
    anat = run_participant(bids, tmp_path / "out", tmp_path / "work")
    dseg = nib.load(anat / f"sub-{SUBJECT}_desc-3label_dseg.nii.gz")
    assert np.allclose(dseg.affine, las.affine) and dseg.shape == las.shape
    las_labels = nib.Nifti1Image(np.asarray(labels.dataobj)[:, ::-1], las.affine)
    scores = tissue_dice(anat / f"sub-{SUBJECT}_desc-3label_dseg.nii.gz", las_labels)
    for tissue, floor in FLOORS_T1W.items():
        assert scores[tissue] >= floor, scores


def test_t1w_resampled_to_1mm(mrbrains_dir, tmp_path):
    t1 = nib.load(mrbrains_dir / SUBJECT / "orig" / "reg_T1.nii.gz")
    labels = nib.load(mrbrains_dir / SUBJECT / "segm.nii.gz")
    iso = resample_to_output(nib.Nifti1Image(t1.get_fdata(dtype=np.float32), t1.affine),
                             voxel_sizes=(1.0, 1.0, 1.0), order=1)
    bids = _single_t1w_dataset(tmp_path / "bids", iso)
    anat = run_participant(bids, tmp_path / "out", tmp_path / "work")
    dseg = nib.load(anat / f"sub-{SUBJECT}_desc-3label_dseg.nii.gz")
    assert dseg.shape == iso.shape and np.allclose(dseg.affine, iso.affine)
    iso_labels = resample_from_to(labels, iso, order=0)
    scores = tissue_dice(anat / f"sub-{SUBJECT}_desc-3label_dseg.nii.gz", iso_labels)
    for tissue, floor in FLOORS_T1W.items():
        assert scores[tissue] >= floor, scores
