"""The cross-validation Markdown report, from small hand-made fold tables."""

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from mixnet_bids.evaluation.cv_report import cv_markdown, fold_budget
from mixnet_bids.training.crossval import main as cv_main

DICE = {  # subject -> (modalities, GM, WM, CSF) with all of the subject's modalities
    "sub-1": ("T1w+IR+FLAIR", 0.80, 0.90, 0.84),
    "sub-4": ("T1w+IR+FLAIR", 0.86, 0.86, 0.80),
    "sub-7": ("IR+FLAIR", 0.50, 0.50, 0.50),
}


def write_fold_table(out, networks="3label", task="3label"):
    rows = []
    for subject, (modalities, *dice) in DICE.items():
        for keep, scale in ((modalities, 1.0), ("IR", 0.5)):
            for index, (label, value) in enumerate(zip(("GM", "WM", "CSF"), dice), 1):
                rows.append({"subject": subject, "modalities": keep,
                             "all_modalities": modalities, "label": label, "index": index,
                             "dice": value * scale, "hd95_mm": 2.0, "vs": 0.9,
                             "volume_pred_ml": 1.0, "volume_ref_ml": 1.0})
    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(out / f"cv_{task}_v3.tsv", sep="\t", index=False)
    for subject in DICE:
        for plane, its, seconds in (("axial", 400, 600), ("coronal", 200, 300)):
            folder = out / f"{networks}_v3" / subject / plane
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"mixnet_v3_{networks}_{plane}.json").write_text(json.dumps(
                {"plane": plane, "iterations": its, "wall_time_s": seconds}))


def test_report_means_floors_subsets_and_budget(tmp_path):
    write_fold_table(tmp_path)
    text = cv_markdown(tmp_path)
    lines = text.splitlines()
    three = next(line for line in lines if line.startswith("| **mean, all three"))
    assert "(n=2)" in three and "| 0.830 | 0.880 | 0.820 |" in three
    everyone = next(line for line in lines if line.startswith("| **mean, all subjects"))
    assert "(n=3)" in everyone and "| 0.720 | 0.753 | 0.713 |" in everyone
    assert "GM 0.830 >= 0.83, WM 0.880 >= 0.87, CSF 0.820 < 0.83" in text
    assert "| IR | 3 | 0.360 | 0.377 | 0.357 |" in text
    assert "Compute: 3 folds; iterations per plane axial 400, coronal 200" in text
    assert "training 0.8 h" in text and "15 min median per fold" in text
    assert len(fold_budget(tmp_path / "3label_v3")) == 6


def test_3_tissue_table_of_8label_networks_names_them_and_counts_their_training(tmp_path):
    write_fold_table(tmp_path, networks="8label")
    text = cv_markdown(tmp_path)
    assert text.startswith("### MixNetv3 (8-label networks, scored in the MRBrainS 3 labels)")
    assert "GM 0.830 >= 0.83, WM 0.880 >= 0.87, CSF 0.820 < 0.83" in text
    assert "Compute: 3 folds; iterations per plane axial 400, coronal 200" in text
    assert cv_markdown(tmp_path, "8label") == ""  # no 8-label table written


def test_ten_class_networks_tables_name_them_count_their_training_and_compare_fairly(
        tmp_path):
    """Fine (ten-class) folds are scored in several conventions: each table names the
    networks and counts their training; only the MRBrainS 3 labels meet the paper."""
    write_fold_table(tmp_path, networks="fine", task="3label")
    write_fold_table(tmp_path, networks="fine", task="wholebrain")
    three = cv_markdown(tmp_path, "3label")
    assert three.startswith("### MixNetv3 (ten-class networks, scored in the MRBrainS 3 "
                            "labels)")
    assert "Floors (mean Dice" in three and "Table 2" in three
    assert "Compute: 3 folds; iterations per plane axial 400, coronal 200" in three
    whole = cv_markdown(tmp_path, "wholebrain")
    assert whole.startswith("### MixNetv3 (ten-class networks, scored in the whole-brain "
                            "tissues")
    assert "Floors" not in whole and "Table 2" not in whole
    assert "Compute: 3 folds; iterations per plane axial 400, coronal 200" in whole


def test_8label_report_has_a_column_per_label_and_no_3label_floors(tmp_path):
    names = ("cGM", "BG-basal", "WM", "WMH", "eCSF", "VEN", "CB", "BS")
    rows = [{"subject": "sub-1", "modalities": "T1w+IR+FLAIR", "all_modalities": "T1w+IR+FLAIR",
             "label": name, "index": index, "dice": index / 10, "hd95_mm": 2.0, "vs": 0.9,
             "volume_pred_ml": 1.0, "volume_ref_ml": 1.0}
            for index, name in reversed(list(enumerate(names, 1)))]
    pd.DataFrame(rows).to_csv(tmp_path / "cv_8label_v3.tsv", sep="\t", index=False)
    text = cv_markdown(tmp_path, "8label")
    assert "| inputs | subjects | cGM | BG-basal | WM | WMH | eCSF | VEN | CB | BS |" in text
    assert "| T1w + IR + FLAIR | 1 | 0.100 | 0.200 | 0.300 | 0.400 | 0.500 | 0.600 | 0.700 |" \
        " 0.800 |" in text
    assert "Floors" not in text and "Table 2" not in text


def test_report_cli_without_tables_fails_clearly(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cv_main(["--out", str(tmp_path), "--report"])
    assert exc.value.code == 1
    assert "no cv_3label_*.tsv" in capsys.readouterr().err


def test_training_needs_the_data_folders(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cv_main(["--out", str(tmp_path)])
    assert exc.value.code == 2
    assert "--mrbrains and --cache are required" in capsys.readouterr().err


def test_unknown_subjects_fail_before_any_preprocessing(tmp_path, capsys):
    mrbrains = tmp_path / "mrbrains"
    (mrbrains / "1").mkdir(parents=True)
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 2), np.uint8), np.eye(4)),
             mrbrains / "1" / "segm.nii.gz")
    common = ["--mrbrains", str(mrbrains), "--cache", str(tmp_path / "cache"),
              "--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as exc:
        cv_main([*common, "--weights", str(tmp_path / "w.pt"), "--subjects", "1", "sub-99"])
    assert exc.value.code == 2
    assert f"--subjects: sub-99 not in {mrbrains}" in capsys.readouterr().err
    assert not (tmp_path / "cache" / "preproc").exists() and not (tmp_path / "out").exists()
    with pytest.raises(SystemExit) as exc:  # the folds to run are checked the same way
        cv_main([*common, "--subjects", "sub-99"])
    assert exc.value.code == 2
    assert f"--subjects: sub-99 not in {mrbrains}" in capsys.readouterr().err
    assert not (tmp_path / "cache" / "preproc").exists()


def test_weights_of_the_wrong_task_or_without_metadata_fail_before_preprocessing(tmp_path,
                                                                                 capsys):
    mrbrains = tmp_path / "mrbrains"
    (mrbrains / "1").mkdir(parents=True)
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 2), np.uint8), np.eye(4)),
             mrbrains / "1" / "segm.nii.gz")
    weights = tmp_path / "mixnet_v3_3label_axial.pt"
    weights.write_bytes(b"")
    common = ["--mrbrains", str(mrbrains), "--cache", str(tmp_path / "cache"),
              "--out", str(tmp_path / "out"), "--weights", str(weights)]
    with pytest.raises(SystemExit) as exc:
        cv_main(common)
    assert exc.value.code == 2
    assert f"--weights: {weights}: its metadata {weights.with_suffix('.json')} is missing" \
        in capsys.readouterr().err
    weights.with_suffix(".json").write_text(json.dumps({"task": "3label", "plane": "axial"}))
    with pytest.raises(SystemExit) as exc:
        cv_main([*common, "--task", "8label"])
    assert exc.value.code == 2
    assert "networks of task 3label cannot be scored as 8label" in capsys.readouterr().err
    assert not (tmp_path / "cache" / "preproc").exists()
