"""Random crops of 2D slices of one plane, drawn from cached subjects."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mixnet_bids.inference.planes import volume_to_slices
from mixnet_bids.labels import map_labels
from mixnet_bids.training.augment import AugmentConfig, augment
from mixnet_bids.training.cache import CachedSubject

#: Default crop (H, W) per plane: axial slices are 240x240 on the MRBrainS grid, sagittal
#: and coronal ones 240x48 (the 48 axis is the 3 mm slice direction).
DEFAULT_CROPS: dict[str, tuple[int, int]] = {
    "axial": (128, 128), "coronal": (144, 48), "sagittal": (144, 48)}
#: Default batch per plane: similar pixel counts per step (8 x 128^2 vs 16 x 144 x 48).
DEFAULT_BATCH: dict[str, int] = {"axial": 8, "coronal": 16, "sagittal": 16}
#: Slices with fewer labelled brain voxels than this are drawn 10x less often.
MIN_BRAIN_PIXELS = 200


@dataclass
class _PlaneSlices:
    images: np.ndarray   # (n, H, W, C) float32
    labels: np.ndarray   # (n, H, W) uint8 raw labels
    weights: np.ndarray  # (n,) sampling weights


class SliceSampler:
    """Draw augmented random crops of one plane's slices.

    ``batch()`` returns ``(images (B, 3, h, w) float32, targets (B, h, w) int64)`` with
    targets mapped to the task's classes (ignored voxels = ``IGNORE_INDEX``).
    """

    def __init__(self, subjects: list[CachedSubject], plane: str, task: str,
                 crop: tuple[int, int] | None = None, augment_cfg: AugmentConfig | None = None,
                 seed: int = 0) -> None:
        if not subjects:
            raise ValueError("no training subjects")
        self.plane, self.task = plane, task
        self.crop = tuple(crop or DEFAULT_CROPS[plane])
        self.cfg = augment_cfg or AugmentConfig()
        self.rng = np.random.default_rng(seed)
        self.slices = []
        for subject in subjects:
            images = volume_to_slices(subject.image, subject.zooms, plane, order=1)
            labels = volume_to_slices(subject.labels, subject.zooms, plane, order=0)
            brain = (labels > 0).sum(axis=(1, 2))
            weights = np.where(brain >= MIN_BRAIN_PIXELS, 1.0, 0.1)
            self.slices.append(_PlaneSlices(images.astype(np.float32), labels, weights))
        counts = np.array([s.weights.sum() for s in self.slices])
        self.subject_p = counts / counts.sum()

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        """One augmented crop: ``(3, h, w)`` image and ``(h, w)`` task classes."""
        data = self.slices[self.rng.choice(len(self.slices), p=self.subject_p)]
        i = self.rng.choice(len(data.weights), p=data.weights / data.weights.sum())
        image = np.moveaxis(data.images[i], -1, 0)
        labels = data.labels[i]
        image, labels = self._crop(image, labels)
        image, labels = augment(image, labels, self.rng, self.plane, self.cfg)
        return image, map_labels(labels, self.task)

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        pairs = [self.sample() for _ in range(size)]
        images = torch.from_numpy(np.stack([p[0] for p in pairs]))
        targets = torch.from_numpy(np.stack([p[1] for p in pairs]).astype(np.int64))
        return images, targets

    def _crop(self, image: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Crop (zero-padding when needed) centred at a random head voxel."""
        ch, cw = self.crop
        h, w = labels.shape
        pad_h, pad_w = max(0, ch - h), max(0, cw - w)
        if pad_h or pad_w:
            pads = ((pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2))
            image = np.pad(image, ((0, 0),) + pads)
            labels = np.pad(labels, pads)
            h, w = labels.shape
        head = np.argwhere(np.any(image != 0, axis=0) | (labels > 0))
        if len(head):
            cy, cx = head[self.rng.integers(len(head))]
        else:
            cy, cx = h // 2, w // 2
        y0 = int(np.clip(cy - ch // 2, 0, h - ch))
        x0 = int(np.clip(cx - cw // 2, 0, w - cw))
        return image[:, y0:y0 + ch, x0:x0 + cw], labels[y0:y0 + ch, x0:x0 + cw]
