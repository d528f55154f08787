"""QC checks on deliberately broken segmentations: real NIfTI files and the real report."""

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from mixnet_bids.evaluation.metrics import normalised_mutual_information
from mixnet_bids.interfaces.reports import RegistrationQC, SubjectReport
from mixnet_bids.labels import TISSUES
from mixnet_bids.reports.qc import (
    CHECKS,
    MARGIN_WARN,
    NMI_WARN,
    image_flags,
    image_measures,
    table_flags,
)
from mixnet_bids.volumes import tissue_volumes

ZOOMS = (2.0, 2.0, 2.0)
VOXEL_ML = float(np.prod(ZOOMS)) / 1000


def test_nmi_is_2_for_identical_images_and_drops_with_misregistration():
    rng = np.random.default_rng(0)
    image = ndimage.gaussian_filter(rng.normal(size=(40, 40, 20)), 2)
    mask = np.ones(image.shape, bool)
    assert normalised_mutual_information(image, image, mask) == 1.0 + 1.0
    inverted = -image  # another contrast of the same anatomy: still aligned
    shifted = ndimage.shift(inverted, (3, 0, 0), order=1)
    aligned, misaligned = (normalised_mutual_information(image, x, mask)
                           for x in (inverted, shifted))
    assert aligned > misaligned > 1.0
    assert np.isnan(normalised_mutual_information(image, np.zeros_like(image), mask))


def test_registration_qc_interface_names_each_modality(tmp_path):
    rng = np.random.default_rng(1)
    image = ndimage.gaussian_filter(rng.normal(size=(30, 30, 12)), 2).astype(np.float32)
    paths = {}
    for name, data in {"ref": image, "FLAIR": -image,
                       "IR": ndimage.shift(image, (4, 0, 0))}.items():
        paths[name] = str(tmp_path / f"{name}.nii.gz")
        nib.save(nib.Nifti1Image(data, np.eye(4)), paths[name])
    mask = str(tmp_path / "mask.nii.gz")
    nib.save(nib.Nifti1Image(np.ones(image.shape, np.uint8), np.eye(4)), mask)
    result = RegistrationQC(reference=paths["ref"], head_mask=mask,
                            registered=[paths["FLAIR"], paths["IR"]],
                            modalities=["FLAIR", "IR"]).run()
    qc = result.outputs.qc
    assert set(qc) == {"nmi_FLAIR", "nmi_IR"}
    assert qc["nmi_FLAIR"] > qc["nmi_IR"]


class Head:
    """A skull-stripped-looking 'head' at 2 mm: zero air, a scalp, a brain (WM core, GM
    shell, CSF rim) and the template brain mask registered onto it."""

    shape = (80, 96, 80)

    def __init__(self):
        centre = (np.array(self.shape) - 1) / 2
        self.affine = np.diag([*ZOOMS, 1.0])
        self.affine[:3, 3] = -np.array(ZOOMS) * centre
        x, y, z = np.meshgrid(*[(np.arange(n) - c) * d for n, c, d in
                                zip(self.shape, centre, ZOOMS)], indexing="ij")
        self.r = np.sqrt((x / 65) ** 2 + (y / 80) ** 2 + (z / 60) ** 2)
        self.dseg = np.select([self.r < 0.6, self.r < 0.85, self.r < 0.95], [2, 1, 3],
                              0).astype(np.uint8)
        self.brain = self.r < 0.97                      # the registered template mask
        self.scalp = (self.r >= 1.0) & (self.r < 1.12)
        self.reference = np.choose(self.dseg, [0.0, 60.0, 100.0, 30.0]).astype(np.float32)
        self.reference[self.scalp] = 80.0
        self.reference[(self.r >= 0.95) & (self.r < 1.0)] = 10.0   # skull, dark not zero

    def measures(self, dseg=None, brain=None):
        return image_measures(self.dseg if dseg is None else dseg,
                              self.brain if brain is None else brain, self.reference,
                              VOXEL_ML)

    def save(self, folder, dseg=None, brain=None, volumes=None):
        folder.mkdir(parents=True, exist_ok=True)
        images = {"reference": self.reference,
                  "dseg": self.dseg if dseg is None else dseg,
                  **{f"{t}_probseg": (0.1 + 0.7 * (self.dseg == i + 1)).astype(np.float32)
                     for i, t in enumerate(TISSUES)},
                  "template": (self.brain if brain is None else brain).astype(np.uint8)}
        paths = {}
        for name, data in images.items():
            paths[name] = folder / f"{name}.nii.gz"
            nib.save(nib.Nifti1Image(data, self.affine), str(paths[name]))
        paths["volumes"] = folder / "volumes.tsv"
        pd.DataFrame([volumes or GOOD_ROW]).to_csv(paths["volumes"], sep="\t", index=False)
        return paths


def probsegs(paths):
    return [str(paths[f"{t}_probseg"]) for t in TISSUES]


#: A plausible volumes row (a good MRBrainS run, rounded).
GOOD_ROW = {"participant_id": "sub-01", "GM_ml": 551.0, "WM_ml": 425.0, "CSF_ml": 356.0,
            "brain_ml": 1332.0, "TIV_ml": 1550.0, "GM_fraction": 0.3555,
            "WM_fraction": 0.2742, "CSF_fraction": 0.2297, "mean_uncertainty": 0.53,
            "mean_margin": 0.44, "nmi_FLAIR": 1.057}


@pytest.fixture(scope="module")
def head():
    return Head()


def test_a_good_segmentation_raises_nothing(head):
    measures = head.measures()
    assert measures["zero_background_ml"] == 0
    assert measures["outside_brain"] == 0
    assert measures["template_dice"] > 0.9
    assert image_flags(measures) == []
    assert table_flags(GOOD_ROW) == []


def test_tissue_on_the_scalp_is_outside_the_brain_mask(head):
    broken = head.dseg.copy()
    broken[head.scalp] = 3                    # a CSF rim labelled around the head
    measures = head.measures(dseg=broken)
    assert measures["outside_brain"] > 0.25
    assert [f.check for f in image_flags(measures)] == ["outside_brain", "registration"]


def test_tissue_on_zero_background(head):
    broken = head.dseg.copy()
    broken[:, :, :3] = 1                      # the bottom slices of air called GM
    measures = head.measures(dseg=broken)
    assert measures["zero_background_ml"] == pytest.approx(3 * 80 * 96 * VOXEL_ML)
    assert "zero_background" in [f.check for f in image_flags(measures)]
    # zeros inside the head (dark voxels of an integer image) may be tissue
    dark = head.reference.copy()
    dark[head.r < 0.3] = 0
    inside = image_measures(head.dseg, head.brain, dark, VOXEL_ML)
    assert inside["zero_background_ml"] == 0


@pytest.mark.parametrize("move", ["shift 24 mm", "scale 0.8"])
def test_a_failed_template_registration(head, move):
    if move.startswith("shift"):
        brain = np.roll(head.brain, 12, axis=1)
    else:
        brain = ndimage.zoom(head.brain.astype(np.float32), 0.8, order=0) > 0.5
        pad = [((n - m) // 2, n - m - (n - m) // 2) for n, m in zip(head.shape, brain.shape)]
        brain = np.pad(brain, pad)
    measures = head.measures(brain=brain)
    assert measures["template_dice"] < 0.8
    assert "registration" in [f.check for f in image_flags(measures)]


def test_tissue_volumes_above_the_tiv():
    row = {**GOOD_ROW, "CSF_ml": 1600.0, "brain_ml": 2576.0}
    flags = table_flags(row)
    assert [f.check for f in flags][:1] == ["above_tiv"]
    assert "CSF_ml 1600.0 mL, brain_ml 2576.0 mL > TIV 1550.0 mL" in flags[0].message
    # rounding of the table is not a flag
    assert table_flags({**GOOD_ROW, "brain_ml": 1550.3}) == []


def test_implausible_fractions():
    """The failure users met: medial cortex called CSF and a CSF rim around the brain."""
    row = {**GOOD_ROW, "GM_fraction": 0.21, "CSF_fraction": 0.46}
    messages = [f.message for f in table_flags(row) if f.check == "fractions"]
    assert messages == ["GM_fraction 0.210 outside 0.25-0.60",
                        "CSF_fraction 0.460 outside 0.03-0.40"]
    head_as_tiv = {**GOOD_ROW, "TIV_ml": 3157.0, "brain_ml": 1300.0}
    assert [f.message for f in table_flags(head_as_tiv)] == [
        "TIV 3157 mL outside 800-2300 mL", "(GM + WM + CSF) / TIV 0.412 < 0.7"]


def test_mean_margin_separates_hesitating_networks(head):
    """Probabilities that put the right class first with a clear lead pass; the same labels
    with the second class close behind (what the networks give on images unlike their
    training data) are flagged, although the labels are unchanged."""
    rng = np.random.default_rng(0)
    onehot = np.eye(4, dtype=np.float32)[head.dseg]

    def row_for(lead):
        noise = rng.dirichlet(np.ones(4), size=head.shape).astype(np.float32)
        probs = lead * onehot + (1 - lead) * noise
        tissues = {t: probs[..., i + 1] for i, t in enumerate(TISSUES)}
        return tissue_volumes(tissues, head.dseg > 0, VOXEL_ML, dseg=head.dseg)

    confident, hesitant = row_for(0.7), row_for(0.2)
    assert confident["mean_margin"] > MARGIN_WARN > hesitant["mean_margin"]
    assert [f.check for f in table_flags(hesitant)] == ["ambiguity"]
    assert table_flags(confident) == []


def test_weak_modality_registration():
    flags = table_flags({**GOOD_ROW, "nmi_FLAIR": NMI_WARN - 0.02})
    assert [(f.check, f.message) for f in flags] == [("nmi", "FLAIR: NMI 1.010 < 1.03")]


def test_report_explains_each_flag(head, tmp_path):
    """A broken run through the Nipype interface: the page names the flags, what they mean
    and what to do, the input file of the reference and the command line."""
    broken = head.dseg.copy()
    broken[head.scalp] = 3
    paths = head.save(tmp_path / "in", dseg=broken,
                      volumes={**GOOD_ROW, "CSF_ml": 1600.0, "mean_margin": 0.39})
    out = tmp_path / "sub-01.html"
    SubjectReport(out_file=str(out), title="sub-01", reference=str(paths["reference"]),
                  reference_name="sub-01_T1w.nii.gz", dseg=str(paths["dseg"]),
                  probsegs=probsegs(paths), template_mask=str(paths["template"]),
                  volumes=str(paths["volumes"]), settings_json='{"task": "3label"}',
                  command_line="mixnet-bids bids out participant --participant-label 01",
                  task="3label").run()
    page = out.read_text(encoding="utf-8")
    summary = page.split('id="summary"')[1].split("</section>")[0]
    for check in ("above_tiv", "ambiguity", "outside_brain", "registration"):
        assert CHECKS[check].title in summary
        assert CHECKS[check].action.replace("'", "&#x27;") in summary
    assert "Warnings (4)" in summary
    assert "<td>Reference</td><td>sub-01_T1w.nii.gz</td>" in summary
    assert "mixnet-bids bids out participant --participant-label 01" in page
    assert 'id="template"' in page and "template brain mask" in page
    methods = page.split('id="methods"')[1].split("</section>")[0]
    for cited in ("Chen L, Merhof D", "Tustison NJ", "Avants BB", "Gorgolewski K",
                  "MNI152NLin2009aSym"):
        assert cited in methods
    good = head.save(tmp_path / "good")
    out_good = tmp_path / "good.html"
    SubjectReport(out_file=str(out_good), title="good", reference=str(good["reference"]),
                  dseg=str(good["dseg"]), probsegs=probsegs(good),
                  template_mask=str(good["template"]), volumes=str(good["volumes"]),
                  settings_json="{}", task="3label").run()
    assert "Warnings: none" in out_good.read_text(encoding="utf-8")


def test_tissue_margin_is_the_largest_minus_the_second_largest_probability():
    from mixnet_bids.volumes import tissue_margin

    rng = np.random.default_rng(0)
    parts = rng.dirichlet(np.ones(4), size=5000).astype(np.float32)
    parts[:500, 2] = parts[:500, 1]  # ties between GM and WM
    parts[500:600] = [0.0, 0.5, 0.0, 0.5]  # GM and CSF tie, no background
    tissues = {"GM": parts[:, 1], "WM": parts[:, 2], "CSF": parts[:, 3]}
    background = np.clip(1.0 - (parts[:, 1] + parts[:, 2] + parts[:, 3]), 0.0, 1.0)
    ordered = np.sort(np.stack([background, *tissues.values()], axis=-1), axis=-1)
    np.testing.assert_array_equal(tissue_margin(tissues), ordered[:, -1] - ordered[:, -2])
    assert np.all(tissue_margin(tissues)[500:600] == 0)
