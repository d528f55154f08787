"""Tissue volumes: probability-weighted, inside the total intracranial volume (TIV).

One definition per table: every ``*_ml`` column is the sum of a probability map times the
voxel volume, counted inside the TIV mask only (the probseg maps are 0 outside it). Since
a voxel's tissue probabilities sum to at most 1, GM + WM + CSF never exceeds the TIV and
the fractions sum to at most 1. The TIV mask is defined in ``conventions.tiv_mask``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from mixnet_bids.conventions import (
    STRUCTURES,
    TISSUE_CONVENTION,
    TIV_REACH_MM,
    class_table,
    convention_probabilities,
    structure_coverage,
)
from mixnet_bids.labels import TISSUES
from mixnet_bids.templates import TEMPLATE

_QC_DESCRIPTIONS: dict[str, dict] = {
    "mean_uncertainty": {"Description": "mean normalised entropy of the fused "
                                        "probabilities inside the segmented tissue "
                                        "(0 certain, 1 uniform)"},
    "mean_margin": {"Description": "mean, over the segmented tissue, of the difference "
                                   "between the two largest of the background, GM, WM and "
                                   "CSF probabilities (0 a tie, 1 certain): a QC score, low "
                                   "when the networks hesitate between classes"},
    **{f"nmi_{m}": {"Description": f"normalised mutual information (1 to 2, higher is "
                                   f"better) of the registered {m} with the reference "
                                   "inside the head mask: a registration QC score"}
       for m in ("T1w", "IR", "FLAIR")},
}
#: The definitions of the TIV mask, by the ``TIV_source`` column's values: the one wording
#: of the volumes JSON, the TIV mask's sidecar and the report's methods text.
TIV_SOURCES = {
    "networks": "every voxel the networks find more likely brain than background, so that it "
                f"contains the segmented brain, plus the {TEMPLATE} template's brain mask "
                f"registered (affine) to the subject within {TIV_REACH_MM:g} mm of them",
    "skull-stripping": "every voxel the skull stripping left non-zero (every input was "
                       "skull-stripped, and the stripping tool's brain was taken as the brain; "
                       "--ignore-stripping turns this off)",
}


def column_descriptions(convention: str) -> dict[str, dict]:
    """Descriptions of every column the volumes table of ``convention`` can have (its JSON
    sidecar), saying which voxels each volume covers."""
    tissues = TISSUE_CONVENTION[convention]
    names = dict(class_table(tissues))
    out: dict[str, dict] = {}
    for tissue in TISSUES:
        out[f"{tissue}_ml"] = {
            "Description": f"{names[tissue]} ({tissues} convention): probability-weighted "
                           f"volume, the sum of the label-{tissue} probseg map (0 outside "
                           "the TIV mask) times the voxel volume", "Units": "mL"}
    for name in STRUCTURES:
        out[f"{name}_ml"] = {
            "Description": f"{name}: probability-weighted volume inside the TIV mask, from "
                           f"the networks' {name} classes; {structure_coverage(name, convention)}",
            "Units": "mL"}
    out["brain_ml"] = {"Description": "GM_ml + WM_ml + CSF_ml (at most TIV_ml)", "Units": "mL"}
    out["TIV_ml"] = {"Description": "total intracranial volume: the voxels of the desc-tiv "
                                    "mask times the voxel volume; TIV_source says which "
                                    "voxels the mask holds", "Units": "mL"}
    out["TIV_source"] = {"Description": "which voxels the desc-tiv mask (TIV_ml) holds",
                         "Levels": dict(TIV_SOURCES)}
    for tissue in TISSUES:
        out[f"{tissue}_fraction"] = {"Description": f"{tissue}_ml / TIV_ml (the three "
                                                    "fractions sum to at most 1)"}
    return {**out, **_QC_DESCRIPTIONS}


def tissue_probabilities(probs: np.ndarray, task: str) -> dict[str, np.ndarray]:
    """GM/WM/CSF (MRBrainS 3 labels) probability maps from the class probabilities
    ``(..., C)`` of ``task`` networks."""
    tissue = convention_probabilities(probs, task, "3label")
    return {name: tissue[..., i + 1] for i, name in enumerate(TISSUES)}


def tissue_margin(tissues: Mapping[str, np.ndarray]) -> np.ndarray:
    """Per voxel, the largest minus the second largest of the background, GM, WM and CSF
    probabilities (background = 1 - GM - WM - CSF): 0 where two classes tie, 1 where one
    class has it all."""
    gm, wm, csf = (np.asarray(tissues[t], dtype=np.float32) for t in TISSUES)
    background = np.clip(1.0 - (gm + wm + csf), 0.0, 1.0)
    # the two largest of four values from two pairs, without sorting (4x faster here)
    high_a, low_a = np.maximum(background, gm), np.minimum(background, gm)
    high_b, low_b = np.maximum(wm, csf), np.minimum(wm, csf)
    second = np.maximum(np.minimum(high_a, high_b), np.maximum(low_a, low_b))
    return np.maximum(high_a, high_b) - second


def tissue_volumes(tissues: Mapping[str, np.ndarray], tiv: np.ndarray, voxel_ml: float,
                   structures: Mapping[str, np.ndarray] | None = None,
                   dseg: np.ndarray | None = None,
                   uncertainty: np.ndarray | None = None) -> dict[str, float]:
    """Probability-weighted volumes (mL) inside the TIV mask, the TIV, the tissues'
    fractions of it, and the mean uncertainty and ``tissue_margin`` inside the tissue the
    dseg labels.

    ``tissues``: GM, WM, CSF probability maps; ``structures``: other maps to report
    (cerebellum, brainstem); every map on the grid of ``tiv``.
    """
    tiv = np.asarray(tiv) > 0
    structures = dict(structures or {})
    for name, prob in {**tissues, **structures}.items():
        if prob.shape != tiv.shape:
            raise ValueError(f"{name} probability map shape {prob.shape} differs from the "
                             f"TIV mask {tiv.shape}")
    row: dict[str, float] = {}
    for name, prob in [*((t, tissues[t]) for t in TISSUES), *structures.items()]:
        row[f"{name}_ml"] = float(prob[tiv].sum(dtype=np.float64) * voxel_ml)
    row["brain_ml"] = sum(row[f"{t}_ml"] for t in TISSUES)
    row["TIV_ml"] = float(tiv.sum()) * voxel_ml
    for tissue in TISSUES:
        row[f"{tissue}_fraction"] = (row[f"{tissue}_ml"] / row["TIV_ml"] if row["TIV_ml"] > 0
                                     else np.nan)
    if uncertainty is not None and dseg is not None:
        tissue = dseg > 0
        row["mean_uncertainty"] = float(uncertainty[tissue].mean()) if tissue.any() else np.nan
    if dseg is not None:
        tissue = dseg > 0
        row["mean_margin"] = (float(tissue_margin({t: tissues[t][tissue] for t in TISSUES})
                                    .mean()) if tissue.any() else np.nan)
    return row


def volumes_table(subject: str, session: str | None, volumes: Mapping[str, float],
                  qc: Mapping[str, float] | None, convention: str,
                  tiv_source: str = "networks") -> tuple[dict[str, object], dict[str, dict]]:
    """One subject's row of the volumes table (its BIDS labels, ``volumes`` as
    ``tissue_volumes`` gives them, ``tiv_source`` (a key of ``TIV_SOURCES``) after the TIV,
    the ``qc`` columns) and the JSON sidecar describing the row's columns
    (``column_descriptions``)."""
    if tiv_source not in TIV_SOURCES:
        raise ValueError(f"unknown TIV source {tiv_source!r}; one of {sorted(TIV_SOURCES)}")
    row: dict[str, object] = {"participant_id": f"sub-{subject}"}
    meta = {"participant_id": {"Description": "BIDS participant label"}}
    if session:
        row["session_id"] = f"ses-{session}"
        meta["session_id"] = {"Description": "BIDS session label"}
    for name, value in volumes.items():
        row[name] = value
        if name == "TIV_ml":
            row["TIV_source"] = tiv_source
    row.update(qc or {})
    meta.update({k: v for k, v in column_descriptions(convention).items() if k in row})
    return row, meta

