"""Precision of inference: float32, or bfloat16 where this host computes it natively and the
networks' labels agree with float32. Both run in channels-last.

``--precision auto`` (the default) decides once per run, before any subject starts:

1. bfloat16 only where the hardware has it (``native_bfloat16``): a CUDA GPU that supports
   it, or a CPU with AVX-512 BF16 or AMX (on other CPUs PyTorch emulates it, slower than
   float32);
2. then a check of the networks themselves: each plane's network labels a few slices of the
   MNI152 template (shipped inside nilearn) in float32 and in bfloat16, and bfloat16 is taken
   only if every class the float32 labels hold agrees with Dice >= ``AGREEMENT_DICE``. The
   classes are those of the run's output convention (``--task``), summed from the networks'
   classes as the app writes them: bfloat16 must not change what the user gets, while fine
   classes that the output merges (cortex and deep GM in whole-brain GM, say) may flip
   along their fuzzy borders without changing a written voxel.

``--precision float32`` skips both; ``--precision bfloat16`` runs the check and stops with a
clear message when the labels disagree. The choice and the check's numbers go into the run's
settings (the ``settings.json`` of the subject's log folder and the report).

The whole network runs in channels-last (MixNetv3's grouped dilated convolutions, which
train group by group, ``model.GroupedDilatedConv2d``, are plain convolutions here).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping

import nibabel as nib
import numpy as np
import torch

from mixnet_bids.conventions import class_table, convention_probabilities
from mixnet_bids.evaluation.metrics import dice
from mixnet_bids.inference.planes import SLICE_AXIS, canonical_zooms, to_canonical
from mixnet_bids.inference.predict import choose_device, predict_plane
from mixnet_bids.labels import TASK_CLASSES
from mixnet_bids.versions import cpuinfo

LOGGER = logging.getLogger(__name__)

PRECISIONS: tuple[str, ...] = ("auto", "float32", "bfloat16")
#: Smallest Dice, per class, between the bfloat16 and the float32 labels of the check.
AGREEMENT_DICE = 0.99
#: Classes with fewer voxels than this in the check's float32 labels are not scored.
MIN_CLASS_VOXELS = 200
#: Slices per plane of the check (around the middle of the brain).
CHECK_SLICES = 3
#: CPU flags (/proc/cpuinfo) of native bfloat16 arithmetic.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


class PrecisionError(RuntimeError):
    """bfloat16 was asked for but its labels disagree with float32 on this host."""


def cpu_flags() -> set[str]:
    """The flags of the first CPU in /proc/cpuinfo (empty where there is none)."""
    return set((cpuinfo("flags") or "").split())


def native_bfloat16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 in hardware."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(cpu_flags() & set(BF16_CPU_FLAGS))


def check_volume() -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """The MNI152 T1w (1 mm, brain-extracted) as the networks see a T1w-only input:
    canonical ``(X, Y, Z, 3)`` z-scores (T1w channel, IR and FLAIR zero), its brain mask
    and voxel sizes."""
    from mixnet_bids.preprocessing import zscore
    from mixnet_bids.templates import ensure_templateflow, get_template

    ensure_templateflow()
    img = nib.load(get_template("T1w", resolution=1))
    t1, affine = to_canonical(img.get_fdata(dtype=np.float32), img.affine)
    mask = t1 > 0
    image = np.zeros(t1.shape + (3,), np.float32)
    image[..., 0] = zscore(t1, mask)
    return image, mask, canonical_zooms(affine)


def _middle_slab(array: np.ndarray, mask: np.ndarray, axis: int) -> np.ndarray:
    where = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
    start = (where[0] + where[-1]) // 2 - CHECK_SLICES // 2
    return np.take(array, range(start, start + CHECK_SLICES), axis=axis)


def label_agreement(models: Mapping[str, torch.nn.Module], device: torch.device,
                    networks: str, convention: str | None = None,
                    ) -> dict[str, dict[str, float]]:
    """Per plane, the Dice of each class between the bfloat16 and the float32 labels of its
    network on the check slices, by class name (classes with at least ``MIN_CLASS_VOXELS``
    voxels): the classes of ``convention``, summed from the ``networks``' classes
    (``labels.TASK_CLASSES``) as the app writes them, or the networks' own classes."""
    names = ([short for short, _ in class_table(convention)] if convention
             else list(TASK_CLASSES[networks]))
    image, mask, zooms = check_volume()
    agreement = {}
    for plane, model in models.items():
        axis = SLICE_AXIS[plane]
        slab, head = _middle_slab(image, mask, axis), _middle_slab(mask, mask, axis)
        labels = {}
        for precision in ("float32", "bfloat16"):
            probs = predict_plane(model, slab, head, zooms, plane, device=device,
                                  precision=precision)
            if convention:
                probs = convention_probabilities(probs, networks, convention)
            labels[precision] = probs.argmax(-1)
        agreement[plane] = {
            name: round(dice(labels["float32"] == k, labels["bfloat16"] == k), 5)
            for k, name in enumerate(names)
            if (labels["float32"] == k).sum() >= MIN_CLASS_VOXELS}
    return agreement


def choose_precision(requested: str, weight_files: Mapping[str, Path],
                     device: torch.device, convention: str | None = None) -> tuple[str, dict]:
    """``float32`` or ``bfloat16`` for ``requested`` (one of ``PRECISIONS``) on this host,
    and a record of why: the host's bfloat16 support and the agreement per plane and class
    (of ``convention``, the run's output classes; without one, the networks' own classes).

    Raises ``PrecisionError`` when ``bfloat16`` is asked for and disagrees with float32.
    """
    from mixnet_bids.inference.weights import load_model

    if requested not in PRECISIONS:
        raise ValueError(f"unknown precision {requested!r}; choose one of {PRECISIONS}")
    native = native_bfloat16(device)
    record = {"requested": requested, "layout": "channels_last",
              "native_bfloat16": native, "agreement_bound": AGREEMENT_DICE}
    if requested == "float32" or (requested == "auto" and not native):
        return "float32", record
    loaded = {plane: load_model(path) for plane, path in weight_files.items()}
    models = {plane: model for plane, (model, _) in loaded.items()}
    networks = next(iter(loaded.values()))[1]["task"]
    agreement = label_agreement(models, device, networks, convention)
    worst = min(min(scores.values(), default=1.0) for scores in agreement.values())
    record.update(agreement=agreement, worst_dice=worst,
                  agreement_classes=convention or networks)
    agrees = worst >= AGREEMENT_DICE
    LOGGER.info("precision check: bfloat16 labels agree with float32 to Dice %.4f at worst "
                "(bound %.3f)%s", worst, AGREEMENT_DICE, "" if agrees else ": float32")
    if agrees:
        return "bfloat16", record
    if requested == "bfloat16":
        raise PrecisionError(
            f"--precision bfloat16: the networks' bfloat16 labels agree with float32 to "
            f"Dice {worst:.4f} at worst on this host, below {AGREEMENT_DICE}; use "
            "--precision float32 (or auto)")
    return "float32", record


def run_precision(settings, requested: str) -> tuple[str, dict]:
    """``choose_precision`` for the networks and the device of a run's ``Settings``; a
    disagreement asked for is one of the run's ``InputProblems``."""
    from mixnet_bids.checks import InputProblems
    from mixnet_bids.inference.weights import networks_for

    _, files = networks_for(settings.task, settings.planes, settings.model_version,
                            settings.weights_dir)
    # on the networks' threads: more than the run may use slow it down on a busy machine
    # (11 s instead of 2 s with one of two cores taken)
    torch.set_num_threads(settings.omp_nthreads)
    try:
        return choose_precision(requested, files, choose_device(settings.device),
                                settings.task)
    except PrecisionError as err:
        raise InputProblems([str(err)]) from None
