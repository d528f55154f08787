"""The BIDS-App command line: argument handling and checks before any work starts."""


import nibabel as nib
import numpy as np
import pytest
from helpers import bids_skeleton, random_weights, tiny_image

from mixnet_bids.cli.parser import build_parser
from mixnet_bids.cli.run import main


def test_participant_labels_strip_sub_and_accept_both_spellings(tmp_path):
    args = build_parser().parse_args(
        [str(tmp_path), str(tmp_path / "o"), "participant", "--participant_label", "sub-01",
         "02", "--plane-weights", "1:1:4"])
    assert args.participant_label == ["01", "02"]
    assert args.plane_weights == [1.0, 1.0, 4.0]


def test_path_characters_in_labels_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        main([str(tmp_path), str(tmp_path / "o"), "participant", "--participant-label", "../x"])
    assert err.value.code == 2
    assert "not a BIDS label" in capsys.readouterr().err


def test_version_flag(capsys):
    with pytest.raises(SystemExit) as err:
        main(["--version"])
    assert err.value.code == 0
    assert "mixnet-bids" in capsys.readouterr().out


def test_not_a_bids_dataset(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    assert main([str(tmp_path / "data"), str(tmp_path / "out"), "participant"]) == 2
    err = capsys.readouterr().err
    assert "not a BIDS dataset" in err and str(tmp_path / "data") in err


def test_all_problems_are_reported_at_once_and_nothing_is_written(tmp_path, capsys):
    bids = bids_skeleton(tmp_path / "bids", {"01": ["T1w"], "02": ["bold"], "03": ["T1w"]})
    # sub-03's T1w holds NaNs; sub-04 does not exist; sub-02 has no anatomical image
    img = nib.load(bids / "sub-03" / "anat" / "sub-03_T1w.nii.gz")
    data = img.get_fdata()
    data[5, 5, 5] = np.nan
    nib.save(nib.Nifti1Image(data, img.affine), str(bids / "sub-03" / "anat" / "sub-03_T1w.nii.gz"))
    code = main([str(bids), str(bids), "participant", "--participant-label", "01", "02", "03",
                 "04", "--skip-bids-validation", "--weights-dir", str(tmp_path / "none")])
    err = capsys.readouterr().err
    assert code == 2
    assert "must not be (inside) the BIDS folder" in err
    assert "weight file missing" in err or "metadata missing" in err
    assert "sub-04: no such participant" in err
    assert "sub-02: no T1w, T1-IR" in err
    assert "sub-03_T1w.nii.gz: contains NaN" in err
    assert not (bids / "dataset_description.json").read_text().count("derivative")


def test_4d_and_corrupt_images_are_refused_by_name(tmp_path, capsys):
    bids = bids_skeleton(tmp_path / "bids", {"01": [], "02": []})
    four_d = bids / "sub-01" / "anat" / "sub-01_T1w.nii.gz"
    four_d.parent.mkdir(parents=True)
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4, 3), np.float32), np.eye(4)), str(four_d))
    corrupt = tiny_image(bids / "sub-02" / "anat" / "sub-02_FLAIR.nii.gz")
    corrupt.write_bytes(corrupt.read_bytes()[:200])
    weights = random_weights(tmp_path / "w")
    code = main([str(bids), str(tmp_path / "out"), "participant", "--skip-bids-validation",
                 "--weights-dir", str(weights)])
    err = capsys.readouterr().err
    assert code == 2
    assert "sub-01_T1w.nii.gz: T1w must be a 3D image" in err
    assert "sub-02_FLAIR.nii.gz: cannot be read as NIfTI" in err
    assert not (tmp_path / "out").exists()


def test_group_level_without_participant_results(tmp_path, capsys):
    bids = bids_skeleton(tmp_path / "bids", {"01": ["T1w"]})
    assert main([str(bids), str(tmp_path / "out"), "group"]) == 2
    assert "run the participant level first" in capsys.readouterr().err


def test_plane_weights_must_match_planes(tmp_path, capsys):
    bids = bids_skeleton(tmp_path / "bids", {"01": ["T1w"]})
    code = main([str(bids), str(tmp_path / "out"), "participant", "--planes", "axial",
                 "--plane-weights", "1:4"])
    assert code == 2
    assert "--plane-weights has 2 values for 1 planes" in capsys.readouterr().err
