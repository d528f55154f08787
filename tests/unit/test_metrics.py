"""Challenge metrics against hand-computed cases."""

import math

import nibabel as nib
import numpy as np
import pytest

from mixnet_bids.evaluation.cli import main as eval_main
from mixnet_bids.evaluation.metrics import (
    dice,
    evaluate,
    hd95,
    inplane_boundary,
    volumetric_similarity,
)
from mixnet_bids.labels import map_labels
from mixnet_bids.training.crossval import scored_tasks


def cube(shape, start, size):
    m = np.zeros(shape, bool)
    m[tuple(slice(s, s + size) for s in start)] = True
    return m


def test_dice_and_vs_hand_computed():
    a = cube((20, 20, 20), (2, 2, 2), 4)   # 64 voxels
    b = cube((20, 20, 20), (4, 2, 2), 4)   # overlap 2x4x4 = 32
    assert dice(a, b) == pytest.approx(2 * 32 / 128)
    c = cube((20, 20, 20), (2, 2, 2), 2)   # 8 voxels
    assert volumetric_similarity(a, c) == pytest.approx(1 - 56 / 72)
    assert dice(np.zeros(3, bool), np.zeros(3, bool)) == 1.0


def test_inplane_boundary_ignores_the_axial_direction():
    a = cube((10, 10, 10), (2, 2, 2), 5)
    edge = inplane_boundary(a, axial_axis=2)
    # the top and bottom slices of the cube are not all boundary: only their rims
    assert edge[4, 4, 2] == False  # noqa: E712 (interior of the bottom slice)
    assert edge[2, 4, 4] and edge[4, 2, 4]
    assert edge.sum() == 5 * (25 - 9)


def test_hd95_of_a_shifted_cube_is_the_shift_in_mm():
    a = cube((30, 30, 12), (5, 5, 3), 10)
    b = cube((30, 30, 12), (8, 5, 3), 10)   # shifted by 3 voxels along x
    # every boundary voxel of the shifted rim finds a partner 3 voxels away at most;
    # along x with 0.5 mm voxels the 95th percentile distance is 3 * 0.5 mm
    assert hd95(a, b, zooms=(0.5, 1.0, 3.0)) == pytest.approx(1.5)
    assert hd95(a, a, zooms=(1, 1, 1)) == 0.0
    assert math.isinf(hd95(a, np.zeros_like(a), zooms=(1, 1, 1)))


def test_evaluate_masks_ignored_labels_from_both_images():
    ref = np.zeros((12, 12, 4), np.uint8)
    ref[2:6, 2:6] = 1      # GM
    ref[6:10, 6:10] = 9    # infarction: ignored
    pred = np.zeros_like(ref)
    pred[2:6, 2:6] = 1
    pred[6:10, 6:10] = 1   # predicted GM inside the ignored region does not count
    rows = {r["label"]: r for r in evaluate(pred, ref, "3label", (1, 1, 3))}
    assert rows["GM"]["dice"] == 1.0
    assert rows["GM"]["vs"] == 1.0
    assert rows["WM"]["dice"] == 1.0 and math.isnan(rows["WM"]["hd95_mm"])


def test_whole_brain_scoring_leaves_mrbrains_cerebellum_and_brainstem_out():
    """MRBrainS labels the cerebellum (7) and the brainstem (8) whole: the whole-brain
    tissues score neither, the MRBrainS 3 labels count them as background."""
    assert list(map_labels(np.arange(11), "wholebrain")) == [0, 1, 1, 2, 2, 3, 3] + [255] * 4
    assert list(map_labels(np.arange(11), "3label")) == [0, 1, 1, 2, 2, 3, 3, 0, 0] + [255] * 2
    ref = np.zeros((12, 12, 4), np.uint8)
    ref[1:5, 1:5] = 2      # basal ganglia: GM
    ref[6:10, 1:5] = 8     # brainstem
    ref[1:5, 6:10] = 7     # cerebellum
    ref[6:10, 6:10] = 4    # WM lesion: WM
    pred = np.zeros_like(ref)
    pred[1:5, 1:5] = 1
    pred[6:10, 6:10] = 2
    pred[6:10, 1:5] = pred[1:5, 6:10] = 3   # CSF where MRBrainS has no GM/WM split
    whole = {r["label"]: r for r in evaluate(pred, ref, "wholebrain", (1, 1, 3))}
    assert [r for r in whole] == ["GM", "WM", "CSF"]
    assert whole["GM"]["dice"] == whole["WM"]["dice"] == whole["CSF"]["dice"] == 1.0
    assert whole["CSF"]["volume_pred_ml"] == 0.0   # unscored voxels are not counted
    mrbrains = {r["label"]: r for r in evaluate(pred, ref, "3label", (1, 1, 3))}
    assert mrbrains["CSF"]["dice"] == 0.0 and mrbrains["CSF"]["volume_pred_ml"] == 0.384


def test_ten_class_cross_validation_is_scored_in_every_convention():
    assert scored_tasks("fine") == ("3label", "wholebrain", "8label")
    assert scored_tasks("8label") == ("8label", "3label")


def test_eval_cli_scores_the_task_the_app_ran_with(tmp_path, capsys):
    """``mixnet-bids-eval`` on NIfTI files: without ``--task`` it scores the one task whose
    dseg files the folder holds (here wholebrain, the app's default), as ``--task
    wholebrain`` does; a task without files, or a folder with two tasks and no ``--task``,
    is refused with a message that says what to pass."""
    ref = np.zeros((12, 12, 4), np.uint8)
    ref[1:5, 1:5], ref[6:10, 1:5], ref[1:5, 6:10] = 1, 3, 7
    pred = np.zeros_like(ref)
    pred[1:5, 1:5], pred[6:10, 1:5], pred[1:5, 6:10] = 1, 2, 1
    affine = np.diag([1.0, 1.0, 3.0, 1.0])
    (tmp_path / "out" / "sub-1" / "anat").mkdir(parents=True)
    (tmp_path / "labels" / "sub-1" / "anat").mkdir(parents=True)
    nib.save(nib.Nifti1Image(pred, affine),
             tmp_path / "out" / "sub-1" / "anat" / "sub-1_desc-wholebrain_dseg.nii.gz")
    nib.save(nib.Nifti1Image(ref, affine),
             tmp_path / "labels" / "sub-1" / "anat" / "sub-1_desc-manual_dseg.nii.gz")
    table = tmp_path / "metrics.tsv"
    folders = [str(tmp_path / "out"), str(tmp_path / "labels")]
    for task_args in ([], ["--task", "wholebrain"]):
        assert eval_main(folders + task_args + ["--out", str(table)]) == 0
        rows = table.read_text().splitlines()
        assert rows[0].startswith("subject\tlabel\tindex\tdice")
        assert [r.split("\t")[:4] for r in rows[1:3]] == [["sub-1", "GM", "1", "1.0000"],
                                                            ["sub-1", "WM", "2", "1.0000"]]
    assert eval_main(folders + ["--task", "3label"]) == 1
    assert "no 3label dseg in" in capsys.readouterr().err
    nib.save(nib.Nifti1Image(pred, affine),
             tmp_path / "out" / "sub-1" / "anat" / "sub-1_desc-3label_dseg.nii.gz")
    assert eval_main(folders) == 1
    assert "holds dseg files of 3label, wholebrain; pass --task" in capsys.readouterr().err
