"""On-the-fly augmentation of 2D training slices.

Every function takes a sample ``image (C, H, W) float32`` (z-scores, channels in
``MODALITIES`` order, 0 = background or absent) and, for spatial ones, ``labels (H, W)``
uint8, plus a ``numpy.random.Generator``; it returns new arrays.

Spatial transforms (paper): elastic deformation (alpha=10, sigma=4), scaling by
0.9/0.95/1.05/1.1, rotation about the centre by multiples of 45 degrees, translation up to
15 % of the size, left-right flips (axial and coronal slices). Each is drawn separately;
the sagittal and coronal planes, whose pixels are anisotropic, get no rotation, scaling or
elastic deformation. One ``map_coordinates`` call
applies the composed transform (linear for images, nearest for labels).

Robustness (ours): modality dropout, contrast / gamma / smooth bias field per channel,
skull stripping with a dilated brain mask, and a coarser resolution along one axis.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from mixnet_bids.inference.planes import resize_axes

SCALES = (0.9, 0.95, 1.05, 1.1)


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities of each augmentation (each drawn separately)."""

    p_elastic: float = 0.2
    p_scale: float = 0.2
    p_rotate: float = 0.2
    p_translate: float = 0.3
    p_flip: float = 0.5
    p_drop_modality: float = 0.5
    #: extra chance to keep the T1w channel alone (the input most users have); drawn
    #: before the general dropout, only when T1w and another modality are present
    p_t1w_only: float = 0.0
    p_intensity: float = 0.5
    p_skull_strip: float = 0.15
    p_resolution: float = 0.15
    elastic_alpha: float = 10.0
    elastic_sigma: float = 4.0
    max_translation: float = 0.15


def spatial(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
            plane: str, cfg: AugmentConfig = AugmentConfig()) -> tuple[np.ndarray, np.ndarray]:
    """Apply the paper's spatial augmentations; labels stay aligned with the image."""
    h, w = labels.shape
    in_plane_only = plane != "axial"
    matrix = np.eye(2)
    if not in_plane_only and rng.random() < cfg.p_scale:
        matrix = matrix / rng.choice(SCALES)
    if not in_plane_only and rng.random() < cfg.p_rotate:
        angle = np.deg2rad(45.0 * rng.integers(1, 8))
        c, s = np.cos(angle), np.sin(angle)
        matrix = matrix @ np.array([[c, -s], [s, c]])
    # a flip mirrors left and right: the rows of axial and coronal slices; sagittal slices
    # have no left-right axis (mirroring them front-back makes anatomy no scan shows)
    if plane != "sagittal" and rng.random() < cfg.p_flip:
        matrix = matrix @ np.diag([-1.0, 1.0])
    shift = np.zeros(2)
    if rng.random() < cfg.p_translate:
        shift = rng.uniform(-cfg.max_translation, cfg.max_translation, 2) * (h, w)
    elastic = not in_plane_only and rng.random() < cfg.p_elastic
    if np.allclose(matrix, np.eye(2)) and not shift.any() and not elastic:
        return image, labels

    centre = np.array([(h - 1) / 2.0, (w - 1) / 2.0])
    grid = np.stack(np.meshgrid(np.arange(h), np.arange(w), indexing="ij")).reshape(2, -1)
    coords = matrix @ (grid - centre[:, None]) + centre[:, None] - shift[:, None]
    if elastic:
        for axis in range(2):
            field = ndimage.gaussian_filter(rng.uniform(-1, 1, (h, w)), cfg.elastic_sigma)
            coords[axis] += cfg.elastic_alpha * field.ravel()
    coords = coords.reshape(2, h, w)
    warped = np.stack([ndimage.map_coordinates(ch, coords, order=1, mode="constant", cval=0.0)
                       for ch in image]).astype(np.float32)
    warped_labels = ndimage.map_coordinates(labels, coords, order=0, mode="constant", cval=0)
    return warped, warped_labels.astype(labels.dtype)


def drop_modalities(image: np.ndarray, rng: np.random.Generator,
                    cfg: AugmentConfig = AugmentConfig()) -> np.ndarray:
    """Zero a random proper subset of the present channels (keep at least one).

    Channel 0 is T1w (``MODALITIES`` order); ``cfg.p_t1w_only`` keeps it alone.
    """
    present = [c for c in range(image.shape[0]) if np.any(image[c])]
    if len(present) < 2:
        return image
    if cfg.p_t1w_only > 0 and 0 in present and rng.random() < cfg.p_t1w_only:
        keep = [0]
    elif rng.random() >= cfg.p_drop_modality:
        return image
    else:
        keep = rng.choice(present, size=rng.integers(1, len(present)), replace=False)
    out = np.zeros_like(image)
    out[keep] = image[keep]
    return out


def intensity(image: np.ndarray, rng: np.random.Generator,
              cfg: AugmentConfig = AugmentConfig()) -> np.ndarray:
    """Random contrast, gamma and a smooth multiplicative bias field per present channel."""
    out = image.copy()
    h, w = image.shape[1:]
    for c in range(image.shape[0]):
        inside = out[c] != 0
        if not inside.any() or rng.random() >= cfg.p_intensity:
            continue
        x = out[c][inside]
        lo, hi = float(x.min()), float(x.max())
        if hi > lo:  # gamma on the channel's range
            x = lo + (hi - lo) * ((x - lo) / (hi - lo)) ** rng.uniform(0.7, 1.5)
        coarse = rng.normal(0.0, 0.15, (3, 3))
        field = np.exp(ndimage.zoom(coarse, (h / 3.0, w / 3.0), order=3, grid_mode=True,
                                    mode="nearest")[:h, :w])
        x = x * field[inside] * rng.uniform(0.85, 1.15) + rng.uniform(-0.2, 0.2)
        out[c][inside] = x
    return out


def skull_strip(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
                cfg: AugmentConfig = AugmentConfig()) -> np.ndarray:
    """Zero everything outside a dilated brain mask (``labels``: raw MRBrainS values)."""
    brain = labels > 0
    if rng.random() >= cfg.p_skull_strip or not brain.any():
        return image
    brain = ndimage.binary_dilation(brain, iterations=int(rng.integers(1, 4)))
    return image * brain[None]


def coarser_resolution(image: np.ndarray, rng: np.random.Generator,
                       cfg: AugmentConfig = AugmentConfig()) -> np.ndarray:
    """Down-sample one in-plane axis by 1.5-3x and back (thicker-slice look)."""
    if rng.random() >= cfg.p_resolution:
        return image
    axis = int(rng.integers(0, 2))
    shape = list(image.shape[1:])
    size = shape[axis]
    shape[axis] = max(2, int(round(size / rng.uniform(1.5, 3.0))))
    channels_last = np.moveaxis(image, 0, -1)
    low = resize_axes(channels_last, shape, order=1)
    return np.moveaxis(resize_axes(low, image.shape[1:], order=1), -1, 0).astype(np.float32)


def augment(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator, plane: str,
            cfg: AugmentConfig = AugmentConfig()) -> tuple[np.ndarray, np.ndarray]:
    """All augmentations for one training sample (``labels``: raw MRBrainS values)."""
    image = skull_strip(image, labels, rng, cfg)
    image, labels = spatial(image, labels, rng, plane, cfg)
    image = drop_modalities(image, rng, cfg)
    image = intensity(image, rng, cfg)
    image = coarser_resolution(image, rng, cfg)
    return image, labels


__all__ = ["AugmentConfig", "augment", "spatial", "drop_modalities", "intensity",
           "skull_strip", "coarser_resolution"]
