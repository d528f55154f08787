"""File-level inference: one plane's probabilities, and fusion, on the head's box.

These are the plain functions behind the Nipype interfaces. The planes' probabilities and
their fusion are written on the head's bounding box of the reference grid
(``preprocessing.head_crop``; an uncompressed work file whose affine places it in the
reference grid); ``preprocessing.paste`` puts a result back on the whole grid, with the
reference image's affine, shape and orientation.
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
from mixnet_bids.inference.predict import MARGIN, fuse, predict_plane
from mixnet_bids.inference.weights import load_model
from mixnet_bids.preprocessing import head_crop, write_like


def plane_probabilities(zstack: nib.Nifti1Image, head: nib.Nifti1Image, plane: str,
                        weights: Path, device: torch.device | None = None,
                        batch_size: int | None = None, progress: Iterable | None = None,
                        precision: str = "float32", mirror: bool = False,
                        ) -> tuple[np.ndarray, dict]:
    """Run one plane's network on a z-score stack; ``(X, Y, Z, C)`` on the input grid
    (``mirror``: averaged with the left-right mirrored run, ``predict.predict_plane``)."""
    model, meta = load_model(weights)
    if meta["plane"] != plane:
        raise ValueError(f"{weights}: trained for the {meta['plane']} plane, not {plane}")
    if zstack.shape[:3] != head.shape[:3]:
        raise ValueError(f"z-score stack shape {zstack.shape} differs from the head mask "
                         f"shape {head.shape}")
    image, affine = to_canonical(zstack.get_fdata(dtype=np.float32), zstack.affine)
    mask, _ = to_canonical(np.asarray(head.dataobj) > 0, head.affine)
    probs = predict_plane(model, image, mask, canonical_zooms(affine), plane,
                          batch_size=batch_size, device=device, progress=progress,
                          precision=precision, mirror=mirror)
    return from_canonical(probs, zstack.affine), meta


def write_plane_probabilities(zstack_file: str, mask_file: str, plane: str, weights: Path,
                              out_file: str, device: torch.device | None = None,
                              progress: bool = False, precision: str = "float32",
                              mirror: bool = False) -> str:
    """Write one plane's probabilities on the head's bounding box (``head_crop``): the
    output's grid is that box of the input grid, its affine says where (everywhere else
    the probability of background is 1). ``progress``: a bar of slice batches on stderr."""
    bar = partial(tqdm, desc=f"MixNet {plane}", unit="batch", leave=False) if progress \
        else None
    zstack, head = nib.load(zstack_file), nib.load(mask_file)
    box = head_crop(head, MARGIN)
    probs, _ = plane_probabilities(zstack.slicer[box], head.slicer[box], plane, weights,
                                   device, progress=bar, precision=precision,
                                   mirror=mirror)
    write_like(probs, zstack.slicer[box + (0,)], out_file)
    return out_file


def fuse_files(prob_files: Sequence[str], planes: Sequence[str], weights: dict[str, float],
               out_probs: str) -> None:
    """Weighted plane fusion of the networks' class probabilities, on the planes' common
    grid (the output conventions are derived from them by ``conventions.segment``). One
    class at a time: a class is a contiguous block of an uncompressed NIfTI, and only the
    fused result is held whole."""
    images = [nib.load(f) for f in prob_files]
    grids = {plane: (img.shape, np.round(img.affine, 4).tolist())
             for plane, img in zip(planes, images)}
    if len({repr(g) for g in grids.values()}) != 1:
        raise ValueError(f"plane probability maps differ in shape or affine: {grids}")
    fused = np.empty(images[0].shape, np.float32)
    for c in range(fused.shape[-1]):
        fused[..., c] = fuse({plane: np.asarray(img.dataobj[..., c], dtype=np.float32)
                              for plane, img in zip(planes, images)}, weights)
    write_like(fused, images[0].slicer[..., 0], out_probs)
