"""Small real NIfTI files and BIDS skeletons for tests."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from mixnet_bids.inference.planes import PLANES
from mixnet_bids.inference.weights import save_weights, weight_path
from mixnet_bids.labels import TASK_CLASSES, n_classes
from mixnet_bids.model import build_mixnet


def tiny_image(path: Path, shape=(20, 24, 16), zooms=(4.0, 4.0, 4.0), seed=0) -> Path:
    """A small random image whose field of view (80 x 96 x 64 mm) passes the input checks."""
    rng = np.random.default_rng(seed)
    data = rng.normal(100, 10, shape).astype(np.float32)
    data[:3] = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.diag(list(zooms) + [1.0])), str(path))
    return path


def bids_skeleton(root: Path, subjects: dict[str, list[str]]) -> Path:
    """``{subject: [suffix, ...]}`` with suffixes like ``T1w``, ``acq-IR_T1w``, ``FLAIR``."""
    (root).mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(json.dumps(
        {"Name": "test", "BIDSVersion": "1.9.0"}))
    for subject, suffixes in subjects.items():
        for suffix in suffixes:
            tiny_image(root / f"sub-{subject}" / "anat" / f"sub-{subject}_{suffix}.nii.gz")
    return root


def random_weights(folder: Path, task: str = "3label", version: str = "v3") -> Path:
    """Untrained weights with valid metadata: for mechanics, never for accuracy."""
    torch.manual_seed(0)
    for plane in PLANES:
        save_weights(build_mixnet(version, n_classes(task)),
                     weight_path(task, plane, version, folder),
                     {"task": task, "plane": plane, "labels": list(TASK_CLASSES[task])})
    return folder
