"""Registration QC (normalised mutual information) and the report's QC warnings."""

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from mixnet_bids.evaluation.metrics import normalised_mutual_information
from mixnet_bids.interfaces.reports import NMI_WARN, RegistrationQC, qc_warnings


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


def test_qc_warnings_thresholds():
    good = pd.Series({"mean_uncertainty": 0.3, "nmi_FLAIR": NMI_WARN + 0.03})
    assert qc_warnings(good) == []
    bad = pd.Series({"mean_uncertainty": 0.9, "nmi_FLAIR": NMI_WARN - 0.02})
    warnings = qc_warnings(bad)
    assert len(warnings) == 2
    assert "mean uncertainty 0.90" in warnings[0] and "FLAIR registration" in warnings[1]
