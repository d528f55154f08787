"""Tissue volumes from a segmentation and its probabilities."""

from __future__ import annotations

import numpy as np

from mixnet_bids.labels import TASK_CLASSES, TISSUES, to_3label

#: Column descriptions for the volumes TSV's JSON sidecar.
COLUMN_DESCRIPTIONS: dict[str, dict] = {
    **{f"{t}_ml": {"Description": f"{t} volume: sum of the fused {t} probability times "
                                  "the voxel volume", "Units": "mL"} for t in TISSUES},
    **{f"{t}_voxels": {"Description": f"number of voxels labelled {t} in the dseg"}
       for t in TISSUES},
    **{f"{t}_fraction": {"Description": f"{t}_ml divided by TIV_ml"} for t in TISSUES},
    "TIV_ml": {"Description": "total intracranial volume: the MNI152 intracranial mask "
                              "mapped to the subject", "Units": "mL"},
    "brain_ml": {"Description": "GM_ml + WM_ml + CSF_ml", "Units": "mL"},
    "mean_uncertainty": {"Description": "mean normalised entropy of the fused "
                                        "probabilities inside the segmented tissue "
                                        "(0 certain, 1 uniform): a QC score"},
    **{f"nmi_{m}": {"Description": f"normalised mutual information (1 to 2, higher is "
                                   f"better) of the registered {m} with the reference "
                                   "inside the head mask: a registration QC score"}
       for m in ("T1w", "IR", "FLAIR")},
}


def tissue_probabilities(probs: np.ndarray, task: str) -> dict[str, np.ndarray]:
    """GM/WM/CSF probability maps from a task's class probabilities ``(..., C)``."""
    classes = TASK_CLASSES[task]
    groups = to_3label(np.arange(len(classes), dtype=np.uint8), task)
    return {tissue: probs[..., groups == i + 1].sum(axis=-1)
            for i, tissue in enumerate(TISSUES)}


def tissue_volumes(dseg: np.ndarray, probs: np.ndarray, task: str, voxel_ml: float,
                   tiv_ml: float | None = None,
                   uncertainty: np.ndarray | None = None) -> dict[str, float]:
    """Per-tissue volumes (soft, mL), voxel counts (hard), TIV fractions, QC score."""
    if dseg.shape != probs.shape[:-1]:
        raise ValueError(f"dseg shape {dseg.shape} differs from probabilities "
                         f"{probs.shape[:-1]}")
    hard = to_3label(dseg.astype(np.uint8), task)
    row: dict[str, float] = {}
    for i, (tissue, prob) in enumerate(tissue_probabilities(probs, task).items(), start=1):
        row[f"{tissue}_ml"] = float(prob.sum(dtype=np.float64) * voxel_ml)
        row[f"{tissue}_voxels"] = int((hard == i).sum())
    row["brain_ml"] = sum(row[f"{t}_ml"] for t in TISSUES)
    if tiv_ml is not None:
        row["TIV_ml"] = float(tiv_ml)
        for tissue in TISSUES:
            row[f"{tissue}_fraction"] = row[f"{tissue}_ml"] / tiv_ml if tiv_ml > 0 else np.nan
    if uncertainty is not None:
        tissue = hard > 0
        row["mean_uncertainty"] = float(uncertainty[tissue].mean()) if tissue.any() else np.nan
    return row
