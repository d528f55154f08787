"""Per-plane MixNet inference and the weighted fusion of the planes.

All arrays here are on the canonical (RAS+) grid of the reference image; the callers
reorient with :mod:`mixnet_bids.inference.planes`.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch

from mixnet_bids.inference.planes import SLICE_AXIS, slices_to_grid, volume_to_slices
from mixnet_bids.model import MixNet, fold_batchnorm
from mixnet_bids.preprocessing import head_box

LOGGER = logging.getLogger(__name__)
#: Default plane weights (sagittal:coronal:axial), as in the paper.
DEFAULT_PLANE_WEIGHTS: dict[str, float] = {"sagittal": 1.0, "coronal": 1.0, "axial": 4.0}
#: Voxels of margin kept around the head's bounding box.
MARGIN = 8
#: Planes whose network also runs on the left-right mirrored volume (``predict_plane``'s
#: ``mirror``; the app's default, ``--no-mirror`` skips it). Sagittal slices are not changed
#: by a left-right mirror (only their order is), so mirroring the sagittal network changes
#: nothing. Measured with the shipped networks on six cases of the generalisation benchmark
#: (BrainWeb 05, 38, 53, 05 skull-stripped; MRBrainS 4 and 14 at 1 mm: only BrainWeb 53
#: informed none of the networks' training; ``benchmarks/inference_probe.py``), fused
#: 1:1:4: mirroring the axial network alone raised GM Dice by 0.0025-0.0039, WM by
#: 0.0006-0.0025 and CSF by 0.002-0.005 in every case, as much as mirroring all three
#: planes. Through the app, BrainWeb 05 on one thread, side by side: the axial step took 19.1
#: s instead of 11.3, the run 78 s instead of 70, peak memory 2.9 GiB instead of 2.6 (both
#: before each batch went straight back to the volume's grid, ``predict_plane``).
MIRRORED_PLANES: tuple[str, ...] = ("axial",)
#: Pixels of one forward pass, per device type. CPU: 2 slices of 144 x 144, 1 of 256 x 256.
#: Big batches lose more to fresh memory (page faults on hundreds of MB of activations) than
#: they gain: one thread, bfloat16, the shipped axial network on an AMD EPYC took 71 ms a
#: 256 x 256 slice in batches of 1 and 116 ms in batches of 8 (float32: 172 and 226 ms), and
#: 21 ms a 144 x 144 slice in batches of 2, 25 ms in 1, 27 ms in 8. Other devices (GPUs): 8
#: slices of 256 x 256.
PIXELS_PER_BATCH = {"cpu": 2 * 144 * 144, "other": 8 * 256 * 256}


def mirrored_planes(planes: Iterable[str], mirror: bool) -> list[str]:
    """The planes of a run (``planes``) whose network also runs mirrored, with ``mirror``
    (the run's setting; ``--no-mirror`` clears it)."""
    return [p for p in planes if mirror and p in MIRRORED_PLANES]


def autocast(precision: str, device: torch.device | None = None):
    """The autocast context of ``precision`` (``float32``: none)."""
    if precision == "float32":
        return contextlib.nullcontext()
    if precision != "bfloat16":
        raise ValueError(f"unknown precision {precision!r}; use float32 or bfloat16")
    return torch.autocast((device or torch.device("cpu")).type, dtype=torch.bfloat16)


def choose_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` fails clearly without a GPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for but PyTorch sees no CUDA GPU; "
                           "use --device cpu (or auto)")
    return torch.device(name)


def slices_per_batch(height: int, width: int, device: str = "cpu") -> int:
    """As many slices of ``height x width`` as fit in ``PIXELS_PER_BATCH`` of ``device``
    (its type: ``cpu``, ``cuda``, ...)."""
    pixels = PIXELS_PER_BATCH["cpu" if device == "cpu" else "other"]
    return max(1, pixels // max(1, height * width))


def predict_plane(model: MixNet, image: np.ndarray, head: np.ndarray,
                  zooms: Sequence[float], plane: str, batch_size: int | None = None,
                  device: torch.device | None = None, progress: Iterable | None = None,
                  precision: str = "float32", mirror: bool = False) -> np.ndarray:
    """Class probabilities ``(X, Y, Z, C)`` of one plane's network.

    ``image``: canonical ``(X, Y, Z, 3)`` z-scores; ``head``: canonical head mask. Only the
    head's bounding box (plus ``MARGIN``) is resampled and run, and in it only the slices
    that hold head voxels; elsewhere the probability of background is 1. ``batch_size``:
    slices per forward pass (default: ``slices_per_batch``); ``precision``: ``float32`` or
    ``bfloat16`` (autocast), both in channels-last (``inference.precision``). It runs a copy
    of ``model`` with the BatchNorms that follow a convolution folded into it
    (``model.fold_batchnorm``); ``model`` itself is unchanged. ``mirror``: the network also
    runs on the box mirrored left to right (canonical axis 0), and the two probabilities,
    the second mirrored back, are averaged.

    Each batch's probabilities go straight back to the volume's grid (the slicing axis is
    never resampled): besides the result and the box's input slices (three channels), one
    batch is held, never the probabilities of all slices at the training spacing.
    """
    probs = np.zeros(image.shape[:3] + (model.n_classes,), np.float32)
    probs[..., 0] = 1.0
    box = head_box(head, MARGIN)
    if box is None:
        return probs
    probs[box] = 0.0
    device = device or torch.device("cpu")
    model = fold_batchnorm(model).to(device, memory_format=torch.channels_last)
    runs = (slice(None), slice(None, None, -1)) if mirror else (slice(None),)
    for left_right in runs:  # as given, then mirrored (views: the result lands mirrored back)
        _add_box(model, image[box][left_right], head[box][left_right], zooms, plane,
                 probs[box][left_right], 1.0 / len(runs), batch_size, device, progress,
                 precision)
    return probs


def _add_box(model: MixNet, image: np.ndarray, head: np.ndarray, zooms: Sequence[float],
             plane: str, out: np.ndarray, weight: float, batch_size: int | None,
             device: torch.device, progress: Iterable | None, precision: str) -> None:
    """Add ``weight`` times the probabilities of ``plane``'s network on ``image`` to
    ``out`` (``(X, Y, Z, C)``, the grid of ``image``); slices without head voxels add
    background."""
    slices = volume_to_slices(image, zooms, plane, order=1)
    has_head = (volume_to_slices(head.astype(np.uint8), zooms, plane, order=0) > 0).any(
        axis=(1, 2))
    rows = np.moveaxis(out, SLICE_AXIS[plane], 0)  # a view: slice i of the plane is rows[i]
    rows[~has_head, ..., 0] += weight
    active = np.flatnonzero(has_head)
    size = batch_size or slices_per_batch(*slices.shape[1:3], device.type)
    batches = [active[i:i + size] for i in range(0, active.size, size)]
    with torch.inference_mode(), autocast(precision, device):
        for index in (progress(batches) if progress else batches):
            x = torch.from_numpy(slices[index].transpose(0, 3, 1, 2)).to(device)
            logits = model(x.contiguous(memory_format=torch.channels_last))
            batch = torch.softmax(logits.float(), dim=1).permute(0, 2, 3, 1).cpu().numpy()
            rows[index] += np.float32(weight) * slices_to_grid(batch, out.shape, plane)


def fuse(plane_probs: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    """Weighted average of plane probabilities, accumulated in place (one result and one
    scratch array; the inputs are left as they are)."""
    total = float(sum(weights[p] for p in plane_probs))
    if total <= 0:
        raise ValueError(f"plane weights must sum to a positive number, got {dict(weights)}")
    fused, scratch = None, None
    for plane, probs in plane_probs.items():
        w = np.float32(weights[plane] / total)
        if fused is None:
            fused = np.multiply(probs, w, dtype=np.float32)
        else:
            scratch = np.multiply(probs, w, out=scratch, dtype=np.float32)
            fused += scratch
    return fused


def normalised_entropy(probs: np.ndarray) -> np.ndarray:
    """Entropy of the class distribution divided by log(C): 0 = certain, 1 = uniform."""
    p = np.clip(probs, 1e-8, 1.0)
    return (-(p * np.log(p)).sum(axis=-1) / np.log(probs.shape[-1])).astype(np.float32)
