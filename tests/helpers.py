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
from mixnet_bids.training.cache import CachedSubject
from mixnet_bids.training.synth import LabelVolume


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


def random_weights(folder: Path, task: str = "3label", version: str = "v3",
                   planes: tuple[str, ...] = PLANES) -> Path:
    """Untrained weights with valid metadata, for ``task`` (``3label``, ``8label`` or
    ``fine``, the networks every output convention comes from) and ``planes``: for
    mechanics, never for accuracy."""
    torch.manual_seed(0)
    for plane in planes:
        save_weights(build_mixnet(version, n_classes(task)),
                     weight_path(task, plane, version, folder),
                     {"task": task, "plane": plane, "labels": list(TASK_CLASSES[task])})
    return folder


def synthetic_subject(name="sub-1", shape=(40, 44, 12), seed=0) -> CachedSubject:
    """A cached training subject: a WM box around a GM box, an ignored core, noise."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.uint8)
    labels[8:32, 8:36, 2:10] = 3
    labels[12:28, 12:30, 3:9] = 1
    labels[18:22, 18:22, 4:8] = 9  # ignored label
    image = np.stack([labels * 0.3 + rng.normal(0, 0.1, shape) for _ in range(3)], -1)
    image[labels == 0] = 0
    return CachedSubject(name, image.astype(np.float32), labels, (0.96, 0.96, 3.0),
                         ("T1w", "IR", "FLAIR"))


def head_phantom(pad: int = 4) -> LabelVolume:
    """0.5 mm nested ellipsoids: skin, fat, skull, CSF, GM, WM, ventricles, and a vessel on
    the right (not symmetric); empty slices around it along every axis."""
    shape = np.array([128, 144, 120])
    grid = np.ogrid[:shape[0], :shape[1], :shape[2]]
    radii = (shape - 1) / 2.0
    d = np.sqrt(sum(((g - r) / r) ** 2 for g, r in zip(grid, radii)))
    labels = np.zeros(shape, np.uint8)
    for level, label in [(1.0, 6), (0.95, 4), (0.88, 7), (0.8, 1), (0.72, 2), (0.6, 3),
                         (0.15, 1)]:
        labels[d <= level] = label
    box = labels[80:100, 20:124, 10:110]
    box[np.isin(box, (2, 3))] = 8
    return LabelVolume("sub-ph", np.pad(labels, pad), (0.5, 0.5, 0.5))


def mni_dataset(root: Path, subjects: tuple[str, ...] = ("01",), voxel_mm: float = 2.5,
                suffixes: tuple[str, ...] = ("T1w", "acq-IR_T1w", "FLAIR")) -> Path:
    """Small real heads: nilearn's MNI152 T1 at ``voxel_mm`` with an IR-like
    (``acq-IR_T1w``) and a FLAIR-like contrast made from it, all on one grid and saved
    without NIfTI units (as some converters do); ``suffixes`` picks among them. The
    ``i``-th subject lacks the top ``i`` slices, so that no two subjects are the same image."""
    from importlib import resources

    from nibabel.processing import resample_to_output

    t1 = nib.load(str(resources.files("nilearn.datasets") / "data"
                      / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"))
    small = resample_to_output(t1, voxel_sizes=(voxel_mm,) * 3, order=1)
    data = np.clip(small.get_fdata(), 0, None)
    head = data > 0
    contrasts = {"T1w": data, "acq-IR_T1w": data ** 2 / data.max(),
                 "FLAIR": np.where(head, data.max() - data + 10, 0)}
    for i, subject in enumerate(subjects):
        anat = root / f"sub-{subject}" / "anat"
        anat.mkdir(parents=True)
        for suffix in suffixes:
            image = contrasts[suffix]
            img = nib.Nifti1Image(image[:, :, :image.shape[2] - i].astype(np.float32),
                                  small.affine)
            img.header.set_xyzt_units("unknown", "unknown")
            nib.save(img, str(anat / f"sub-{subject}_{suffix}.nii.gz"))
    (root / "dataset_description.json").write_text(json.dumps(
        {"Name": "MNI152 heads", "BIDSVersion": "1.9.0", "DatasetType": "raw"}))
    return root


def ellipsoid_radius(shape, half_axis: float = 0.4) -> np.ndarray:
    """Each voxel's radius in an ellipsoid centred in the grid, 1 at ``half_axis`` of each
    axis."""
    grid = np.indices(shape, dtype=np.float32)
    centre = (np.array(shape, dtype=np.float32) - 1) / 2
    return np.sqrt((((grid - centre[:, None, None, None]) /
                     (half_axis * np.array(shape))[:, None, None, None]) ** 2).sum(0))


def scalp_phantom(stripped: bool, shape=(56, 64, 48)) -> tuple[np.ndarray, np.ndarray]:
    """A head as a T1w scan shows it: bright scalp fat (dimmer along one side, far from the
    coil), dark skull, dark CSF and a brain inside; with ``stripped``, only the brain and
    its CSF, on exact zeros. Returns the image and the brain-and-CSF mask."""
    r = ellipsoid_radius(shape, 0.45)
    data = np.select([r < 0.7, r < 0.8, r < 0.9, r < 1.0], [250.0, 40.0, 10.0, 900.0], 0.0)
    data[(r >= 0.9) & (r < 1.0) & (np.arange(shape[1]) < 12)[None, :, None]] = 60.0
    inside = r < 0.8
    noise = np.abs(np.random.default_rng(0).normal(0, 3, shape))
    if stripped:
        data[~inside] = 0.0
        noise[~inside] = 0.0
    return (data + noise).astype(np.float32), inside
