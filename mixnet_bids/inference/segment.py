"""File-level inference: one plane's probabilities on the reference grid, and fusion.

These are the plain functions behind the Nipype interfaces and the training evaluation.
Every output keeps the reference image's affine, shape and orientation exactly.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Iterable, Sequence

import nibabel as nib
import numpy as np
import torch
from tqdm import tqdm

from mixnet_bids.inference.planes import canonical_zooms, from_canonical, to_canonical
from mixnet_bids.inference.predict import fuse, predict_plane
from mixnet_bids.inference.weights import load_model
from mixnet_bids.preprocessing import write_like


def plane_probabilities(zstack: nib.Nifti1Image, head: nib.Nifti1Image, plane: str,
                        weights: Path, device: torch.device | None = None,
                        batch_size: int = 8, progress: Iterable | None = None
                        ) -> tuple[np.ndarray, dict]:
    """Run one plane's network on a z-score stack; ``(X, Y, Z, C)`` on the input grid."""
    model, meta = load_model(weights)
    if meta["plane"] != plane:
        raise ValueError(f"{weights}: trained for the {meta['plane']} plane, not {plane}")
    image, affine = to_canonical(zstack.get_fdata(dtype=np.float32), zstack.affine)
    mask, _ = to_canonical(np.asarray(head.dataobj) > 0, head.affine)
    probs = predict_plane(model, image, mask, canonical_zooms(affine), plane,
                          batch_size=batch_size, device=device, progress=progress)
    return from_canonical(probs, zstack.affine), meta


def write_plane_probabilities(zstack_file: str, mask_file: str, plane: str, weights: Path,
                              out_file: str, device: torch.device | None = None,
                              progress: bool = False) -> str:
    """Write one plane's probabilities; ``progress``: a bar of slice batches on stderr."""
    bar = partial(tqdm, desc=f"MixNet {plane}", unit="batch", leave=False) if progress \
        else None
    zstack = nib.load(zstack_file)
    probs, _ = plane_probabilities(zstack, nib.load(mask_file), plane, weights, device,
                                   progress=bar)
    write_like(probs, zstack.slicer[..., 0], out_file)
    return out_file


def fuse_files(prob_files: Sequence[str], planes: Sequence[str], weights: dict[str, float],
               out_probs: str) -> None:
    """Weighted plane fusion of the networks' class probabilities (the output conventions
    are derived from them by ``conventions.segment``)."""
    ref = nib.load(prob_files[0])
    probs = {plane: np.asarray(nib.load(f).dataobj, dtype=np.float32)
             for plane, f in zip(planes, prob_files)}
    shapes = {p: a.shape for p, a in probs.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"plane probability maps differ in shape: {shapes}")
    write_like(fuse(probs, weights), ref.slicer[..., 0], out_probs)
