"""``mixnet-bids demo`` end to end, checked against the template's own tissue maps."""

from importlib import resources

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from nibabel.processing import resample_from_to

from mixnet_bids.cli.run import main
from mixnet_bids.evaluation.metrics import dice

pytestmark = pytest.mark.slow

#: Dice floors against nilearn's ICBM 2009a GM/WM probability maps (> 0.5).
FLOORS = {"GM": 0.65, "WM": 0.75}


def test_demo_segments_the_mni_template(tmp_path, capsys):
    assert main(["demo", str(tmp_path / "demo")]) == 0
    printed = capsys.readouterr().out
    derivatives = tmp_path / "demo" / "derivatives" / "mixnet-bids"
    dseg_file = derivatives / "sub-01" / "anat" / "sub-01_desc-3label_dseg.nii.gz"
    assert str(dseg_file) in printed
    table = pd.read_csv(derivatives / "group_desc-3label_volumes.tsv", sep="\t")
    assert list(table["participant_id"]) == ["sub-01"]

    dseg = nib.load(dseg_file)
    data = resources.files("nilearn.datasets") / "data"
    for index, (tissue, name) in enumerate(
            [("GM", "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz"),
             ("WM", "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz")], start=1):
        reference = resample_from_to(nib.load(str(data / name)), dseg, order=1)
        score = dice(np.asarray(dseg.dataobj) == index, reference.get_fdata() > 0.5)
        assert score >= FLOORS[tissue], (tissue, score)
