"""Per-plane MixNet inference and the weighted fusion of the planes.

All arrays here are on the canonical (RAS+) grid of the reference image; the callers
reorient with :mod:`mixnet_bids.inference.planes`.
"""

from __future__ import annotations

import logging
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch

from mixnet_bids.inference.planes import slices_to_volume, volume_to_slices
from mixnet_bids.model import MixNet

LOGGER = logging.getLogger(__name__)
#: Default plane weights (sagittal:coronal:axial), as in the paper.
DEFAULT_PLANE_WEIGHTS: dict[str, float] = {"sagittal": 1.0, "coronal": 1.0, "axial": 4.0}
#: Pixels of margin kept around the head's bounding box in every slice.
MARGIN = 8


def choose_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` fails clearly without a GPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for but PyTorch sees no CUDA GPU; "
                           "use --device cpu (or auto)")
    return torch.device(name)


def _bbox(mask: np.ndarray, margin: int) -> tuple[slice, slice]:
    """Bounding box (with margin) of a stack of 2D masks ``(n, H, W)``."""
    rows = np.flatnonzero(mask.any(axis=(0, 2)))
    cols = np.flatnonzero(mask.any(axis=(0, 1)))
    h, w = mask.shape[1:]
    return (slice(max(0, rows[0] - margin), min(h, rows[-1] + margin + 1)),
            slice(max(0, cols[0] - margin), min(w, cols[-1] + margin + 1)))


def predict_plane(model: MixNet, image: np.ndarray, head: np.ndarray,
                  zooms: Sequence[float], plane: str, batch_size: int = 8,
                  device: torch.device | None = None,
                  progress: Iterable | None = None) -> np.ndarray:
    """Class probabilities ``(X, Y, Z, C)`` of one plane's network.

    ``image``: canonical ``(X, Y, Z, 3)`` z-scores; ``head``: canonical head mask (only
    slices and the bounding box that contain head voxels are run; elsewhere the
    probability of background is 1).
    """
    device = device or torch.device("cpu")
    model = model.to(device).eval()
    slices = volume_to_slices(image, zooms, plane, order=1)
    head_slices = volume_to_slices(head.astype(np.uint8), zooms, plane, order=0) > 0
    n_classes = model.n_classes
    probs = np.zeros(slices.shape[:3] + (n_classes,), np.float32)
    probs[..., 0] = 1.0
    active = np.flatnonzero(head_slices.any(axis=(1, 2)))
    if active.size:
        rows, cols = _bbox(head_slices, MARGIN)
        batches = [active[i:i + batch_size] for i in range(0, active.size, batch_size)]
        with torch.inference_mode():
            for index in (progress(batches) if progress else batches):
                x = torch.from_numpy(np.ascontiguousarray(
                    slices[index][:, rows, cols].transpose(0, 3, 1, 2))).to(device)
                x = x.contiguous(memory_format=torch.channels_last)
                p = torch.softmax(model(x), dim=1).permute(0, 2, 3, 1).float().cpu().numpy()
                probs[index, rows, cols] = p
    return slices_to_volume(probs, image.shape[:3], plane, order=1)


def fuse(plane_probs: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    """Weighted average of plane probabilities, accumulated in place."""
    total = float(sum(weights[p] for p in plane_probs))
    if total <= 0:
        raise ValueError(f"plane weights must sum to a positive number, got {dict(weights)}")
    fused = None
    for plane, probs in plane_probs.items():
        w = weights[plane] / total
        if fused is None:
            fused = probs * w
        else:
            fused += probs * w
    return fused


def normalised_entropy(probs: np.ndarray) -> np.ndarray:
    """Entropy of the class distribution divided by log(C): 0 = certain, 1 = uniform."""
    p = np.clip(probs, 1e-8, 1.0)
    return (-(p * np.log(p)).sum(axis=-1) / np.log(probs.shape[-1])).astype(np.float32)
