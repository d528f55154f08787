"""Random crops of 2D slices of one plane: real slices of cached subjects, and slices
synthesised from label maps."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mixnet_bids.inference.planes import volume_to_slices
from mixnet_bids.labels import map_labels, target_codes
from mixnet_bids.training.augment import AugmentConfig, augment, spatial
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
    targets mapped to the task's classes, or for the ``fine`` task to target codes (see
    ``labels.TARGETS``); ignored voxels are ``IGNORE_INDEX``.
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
        if self.task == "fine":
            return image, target_codes(labels, "mrbrains")
        return image, map_labels(labels, self.task)

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        return _stack([self.sample() for _ in range(size)])

    def state(self) -> dict:
        """The random state (checkpointed, so that a resumed run draws what it would have)."""
        return {"real": self.rng.bit_generator.state}

    def set_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state["real"]

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


def _stack(pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.from_numpy(np.stack([p[0] for p in pairs]).astype(np.float32))
    targets = torch.from_numpy(np.stack([p[1] for p in pairs]).astype(np.int64))
    return images, targets


class MixedSampler:
    """Each sample synthesised from a BrainWeb label map with probability ``fraction``
    (``synth``: a ``synth.SynthSampler``), else a real slice (``real``: a SliceSampler of the
    ``fine`` task). Synthetic samples get the spatial augmentation of real ones; their
    intensities, resolution and skull stripping come from the synthesis itself."""

    def __init__(self, real: SliceSampler, synth, fraction: float, seed: int = 0) -> None:
        if real.task != "fine":
            raise ValueError("synthetic samples train the fine classes only (task 'fine')")
        self.real, self.synth, self.fraction = real, synth, fraction
        self.plane, self.crop = real.plane, real.crop
        self.rng = np.random.default_rng([seed, 1])

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        if self.rng.random() >= self.fraction:
            return self.real.sample()
        image, labels = self.synth.sample()
        image, labels = spatial(image, labels, self.rng, self.plane, self.real.cfg)
        return image, target_codes(labels, "brainweb")

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        return _stack([self.sample() for _ in range(size)])

    def state(self) -> dict:
        return {**self.real.state(), "mix": self.rng.bit_generator.state,
                "synth": self.synth.rng.bit_generator.state}

    def set_state(self, state: dict) -> None:
        self.real.set_state(state)
        self.rng.bit_generator.state = state["mix"]
        self.synth.rng.bit_generator.state = state["synth"]
