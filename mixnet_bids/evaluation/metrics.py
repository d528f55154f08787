"""Segmentation metrics exactly as the MRBrainS18 challenge scores them.

Voxels labelled 9 or 10 in the (raw MRBrainS) reference are masked out of both images.
Per label:

- Dice = 2|A and B| / (|A| + |B|)
- HD95: boundary voxels = the label minus its in-plane (2D, per axial slice) erosion;
  distances in world millimetres; the larger of the two directed 95th percentiles.
- Volumetric similarity VS = 1 - |A - B| / (A + B)
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

from mixnet_bids.labels import IGNORE_INDEX, SCORED_CLASSES, TISSUES, map_labels


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two boolean masks (1.0 when both are empty)."""
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def tissue_dice(prediction: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Dice of each tissue (1 GM, 2 WM, 3 CSF) over the voxels the reference does not ignore
    (``IGNORE_INDEX``); NaN for a tissue absent from both."""
    valid = reference != IGNORE_INDEX
    scores = {}
    for code, tissue in enumerate(TISSUES, start=1):
        a, b = (prediction == code) & valid, reference == code
        scores[tissue] = dice(a, b) if a.any() or b.any() else float("nan")
    return scores


def volumetric_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """1 - |A - B| / (A + B) (1.0 when both are empty)."""
    va, vb = int(a.sum()), int(b.sum())
    return 1.0 if va + vb == 0 else 1.0 - abs(va - vb) / (va + vb)


def inplane_boundary(mask: np.ndarray, axial_axis: int = 2) -> np.ndarray:
    """The mask minus its 2D erosion within each slice along ``axial_axis``."""
    structure = np.zeros((3, 3, 3), bool)
    cross = ndimage.generate_binary_structure(2, 1)
    index = [slice(None)] * 3
    index[axial_axis] = 1
    structure[tuple(index)] = cross
    return mask & ~ndimage.binary_erosion(mask, structure=structure)


def hd95(a: np.ndarray, b: np.ndarray, zooms: Sequence[float], axial_axis: int = 2) -> float:
    """95th-percentile Hausdorff distance (mm) between in-plane boundaries.

    NaN when both masks are empty, infinity when exactly one is.
    """
    if not a.any() and not b.any():
        return float("nan")
    if not a.any() or not b.any():
        return float("inf")
    edge_a = inplane_boundary(a, axial_axis)
    edge_b = inplane_boundary(b, axial_axis)
    to_b = ndimage.distance_transform_edt(~edge_b, sampling=zooms)
    to_a = ndimage.distance_transform_edt(~edge_a, sampling=zooms)
    return float(max(np.percentile(to_b[edge_a], 95), np.percentile(to_a[edge_b], 95)))


def evaluate(pred: np.ndarray, reference_raw: np.ndarray, task: str,
             zooms: Sequence[float], axial_axis: int = 2) -> list[dict]:
    """Per-label metrics of a prediction (``task``'s classes, ``labels.SCORED_CLASSES``)
    against raw MRBrainS labels."""
    if pred.shape != reference_raw.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference shape "
                         f"{reference_raw.shape}")
    ref = map_labels(reference_raw, task)
    keep = ref != IGNORE_INDEX
    rows = []
    for index, name in enumerate(SCORED_CLASSES[task]):
        if index == 0:
            continue
        a = (pred == index) & keep
        b = (ref == index) & keep
        rows.append({
            "label": name, "index": index, "dice": dice(a, b),
            "hd95_mm": hd95(a, b, zooms, axial_axis),
            "vs": volumetric_similarity(a, b),
            "volume_pred_ml": float(a.sum() * np.prod(zooms) / 1000.0),
            "volume_ref_ml": float(b.sum() * np.prod(zooms) / 1000.0),
        })
    return rows


def normalised_mutual_information(a: np.ndarray, b: np.ndarray, mask: np.ndarray,
                                  bins: int = 64) -> float:
    """Studholme's NMI (H(A) + H(B)) / H(A, B) of two images inside ``mask``.

    1 for independent images, 2 for images that determine each other; a registration QC
    number that works across contrasts (T1w vs FLAIR).
    """
    x, y = a[mask].astype(np.float64), b[mask].astype(np.float64)
    if x.size == 0 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    joint, _, _ = np.histogram2d(x, y, bins=bins)
    p = joint / joint.sum()

    def entropy(q):
        q = q[q > 0]
        return -float((q * np.log(q)).sum())

    return (entropy(p.sum(axis=1)) + entropy(p.sum(axis=0))) / entropy(p)
