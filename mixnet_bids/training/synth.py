"""SynthSeg-style synthesis of 2D training slices from whole-head label maps.

The idea is SynthSeg's (Billot et al., *SynthSeg*, Medical Image Analysis 2023): a network
that never sees two images with the same contrast, resolution or artefacts learns to segment
any of them. Here the label maps are the 0.5 mm BrainWeb crisp anatomies (labels 0-11, see
``LABEL_NAMES``) and each sample is one 2D slice of one plane, as the networks see it in the
app (``mixnet_bids.inference.planes``): in-plane pixels on the ``TRAINING_SPACING`` grid of
their volume axes (0.958 mm, and 3 mm for the S-I axis of sagittal and coronal slices), one
slice of whatever thickness the scan had, three channels in ``MODALITIES`` order (T1w, IR,
FLAIR), each present one z-scored inside the head mask and clipped to +-``ZSCORE_CLIP``, an
absent one all-zero.

One sample (:meth:`SynthSampler.sample`):

1. a volume, a slice (slices with brain are favoured) and a crop centred on a random head
   pixel of it; an acquisition resolution per volume axis: the slice thickness, thick (2D
   multi-slice, like MRBrainS' 3 mm axial slices) more often along S-I, and now and then
   one coarse in-plane axis; optionally (``SynthConfig.p_wide_csf``) the slab's CSF widened
   into the cortex beside it, as in atrophy;
2. a mean and a within-tissue s.d. per label and channel: near a plausible contrast of the
   channel with jitter most of the time, fully random otherwise; a random non-empty subset
   of channels (T1w alone most often);
3. partial volume: the label means are averaged over each output pixel's acquisition box
   (slab thickness x in-plane resolution) on the 0.5 mm grid, with separable box-weight
   matrices; the labels returned are the crisp labels at the output pixel centres of the
   slab's centre slice, or (``SynthConfig.target``) each pixel's majority tissue over its
   box, on the image's pixel grid;
4. within-tissue variation (Gaussian, drawn per output pixel with the s.d. of its crisp
   label), a smooth multiplicative bias field, a Gaussian blur and Gaussian or Rician noise;
5. the skull-stripped variant sets everything outside the (hole-filled, maybe dilated)
   brain mask, labels 1-3, to exactly 0; otherwise the mask is the head, labels > 0 with
   holes filled;
6. z-scores with the mean and s.d. that the app's per-volume normalisation would find: the
   label fractions inside the head (or brain) mask are counted once per volume, and the
   volume's moments follow from the drawn label means and s.d.s;
7. left-right flips (other in-plane flips optional). The 3D orientation is not randomised:
   the app reorients every scan to RAS+ before slicing. Small rotations, scaling and
   elastic deformations are left to ``mixnet_bids.training.augment``.

Everything is vectorised: lookup tables indexed by the label block, matrix products for the
area averages. :func:`render_volume` makes fixed-contrast 3D test images by another route.

Speed (measured: 4.2 ms per axial 128x128 sample, 3.4 ms per coronal and 3.1 ms per
sagittal 144x48 sample, default config, mean of 3 x 1000 samples from BrainWeb sub-05 and
sub-06 on one core of an AMD EPYC while a niced training job used the other core). The
products use sparse band matrices and no BLAS, so thread settings do not change this.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np
from scipy import ndimage, sparse

from mixnet_bids.inference.planes import SLICE_AXIS, TRAINING_SPACING, to_canonical
from mixnet_bids.model.mixnet import MODALITIES
from mixnet_bids.preprocessing import ZSCORE_CLIP

#: BrainWeb crisp labels (index = value).
LABEL_NAMES: tuple[str, ...] = (
    "background", "CSF", "GM", "WM", "fat", "muscle", "muscle/skin", "skull", "vessels",
    "around fat", "dura", "bone marrow")
N_LABELS = len(LABEL_NAMES)
#: Labels forming the brain mask of skull-stripped images.
BRAIN_LABELS: tuple[int, ...] = (1, 2, 3)
#: ``BRAIN_LUT[labels]`` is the brain mask of a label array.
BRAIN_LUT = np.isin(np.arange(256), BRAIN_LABELS)
#: Plausible mean intensity per channel (rows, ``MODALITIES`` order) and label (columns,
#: ``LABEL_NAMES`` order) on a 0-1 scale: T1w with CSF < GM < WM and bright fat; T1-IR with
#: the darkest CSF and a strong GM/WM contrast; FLAIR with suppressed CSF and GM > WM.
PRIOR_MEANS = np.array([
    # bg   CSF   GM    WM    fat  muscle skin skull vessel afat  dura marrow
    [0.00, 0.15, 0.45, 0.70, 0.90, 0.35, 0.45, 0.05, 0.30, 0.60, 0.30, 0.75],  # T1w
    [0.00, 0.03, 0.35, 0.80, 0.70, 0.30, 0.40, 0.03, 0.25, 0.50, 0.25, 0.60],  # IR
    [0.00, 0.10, 0.60, 0.42, 0.70, 0.30, 0.45, 0.05, 0.20, 0.55, 0.40, 0.60],  # FLAIR
], dtype=np.float32)
#: Channel subsets other than T1w alone and all three (indices in ``MODALITIES`` order).
OTHER_SUBSETS: tuple[tuple[int, ...], ...] = ((1,), (2,), (0, 1), (0, 2), (1, 2))
#: Fixed intensities of :func:`render_volume` per contrast (scanner-like units).
RENDER_INTENSITIES: dict[str, tuple[float, ...]] = {
    "mprage": (0, 250, 550, 800, 950, 400, 500, 80, 350, 700, 350, 750),
    "ir": (0, 60, 450, 900, 800, 350, 450, 40, 300, 600, 300, 700),
    "flair": (0, 100, 650, 450, 750, 350, 500, 60, 250, 600, 450, 650),
}
#: Margin kept around the head when loading label maps (mm).
CROP_MARGIN_MM = 4.0
#: Floor of the synthetic volume's intensity s.d. used for the z-scores.
MIN_SD = 1e-2


@dataclass(frozen=True)
class SynthConfig:
    """Probabilities and ranges of the synthesis (intensities on a 0-1 scale, sizes in mm)."""

    #: chance that a channel's label means are drawn near ``PRIOR_MEANS`` (else at random)
    p_plausible: float = 0.8
    #: s.d. of the jitter added to each prior mean
    prior_jitter: float = 0.06
    #: range of the mean of label 0 (air) and of the other labels' random means
    air_mean: tuple[float, float] = (0.0, 0.03)
    random_mean: tuple[float, float] = (0.0, 1.0)
    #: within-tissue s.d. range per label
    tissue_sd: tuple[float, float] = (0.005, 0.05)
    #: channel subsets: T1w alone, all three, otherwise another non-empty subset
    p_t1w_only: float = 0.4
    p_all_channels: float = 0.3
    #: acquisition resolution of thin (3D) and thick (2D multi-slice) acquisitions
    thin: tuple[float, float] = (0.95, 1.2)
    thick: tuple[float, float] = (2.0, 3.0)
    #: chance of thick resolution along S-I (axial slices, and the 3 mm pixel axis of
    #: sagittal/coronal slices) and along the slicing axis of the sagittal/coronal planes
    p_thick_axial: float = 0.6
    p_thick_other: float = 0.15
    #: chance that one in-plane axis (not S-I) has a coarse resolution, and its range
    p_coarse_in_plane: float = 0.15
    coarse: tuple[float, float] = (1.5, 3.0)
    #: maximum s.d. of the log bias field's coefficients (coordinates in units of 100 mm)
    bias_max: float = 0.3
    #: maximum Gaussian blur s.d. (mm)
    blur_max: float = 0.6
    #: noise s.d. range and chance of Rician (magnitude) noise instead of Gaussian noise
    noise_sd: tuple[float, float] = (0.0, 0.04)
    p_rician: float = 0.5
    #: skull-stripped variant, and its brain mask's dilation (pixels, drawn uniformly)
    p_skull_stripped: float = 0.25
    max_brain_dilation: int = 2
    #: slices with less brain than this area (mm^2) get ``weight_no_brain`` (else 1)
    min_brain_area: float = 200.0
    weight_no_brain: float = 0.1
    #: flips of the R-L in-plane axis and of the other in-plane axes
    p_flip_lr: float = 0.5
    p_flip_other: float = 0.0
    #: the labels returned: "centre", the crisp label at each output pixel's centre (on the
    #: slab's centre slice); "majority", the tissue (CSF, GM, WM, or the rest of the head and
    #: the air together) that fills most of the pixel's acquisition box, the convention of
    #: hard segmentations of partial-volume voxels
    target: str = "centre"
    #: chance that a sample's CSF widens into the GM beside it, in-plane, by a distance
    #: drawn from ``wide_csf_mm`` (atrophy: thinner cortex, wider sulci and outer CSF; the
    #: z-scores keep the volume's own label fractions)
    p_wide_csf: float = 0.0
    wide_csf_mm: tuple[float, float] = (0.5, 1.5)


@dataclass
class LabelVolume:
    """A crisp label map on its RAS+ voxel grid."""

    name: str                 # e.g. "sub-05"
    labels: np.ndarray        # (X, Y, Z) uint8, raw BrainWeb labels, RAS+
    zooms: tuple[float, float, float]   # mm (0.5, 0.5, 0.5)
    #: voxel-to-world matrix of ``labels`` (after cropping); None: ``diag(zooms)``
    affine: np.ndarray | None = None


def load_label_volumes(folder: Path, subjects: list[str] | None = None) -> list[LabelVolume]:
    """Read ``sub-*_desc-crisp_dseg.nii.gz`` label maps, RAS+, cropped to the head.

    ``subjects``: subject labels with or without ``sub-``; all files of ``folder`` when None. The
    crop is the bounding box of non-zero labels plus ``CROP_MARGIN_MM``.
    """
    folder = Path(folder)
    if subjects is None:
        paths = sorted(folder.glob("sub-*_desc-crisp_dseg.nii.gz"))
        if not paths:
            raise FileNotFoundError(f"no sub-*_desc-crisp_dseg.nii.gz label maps in {folder}")
    else:
        paths = [folder / f"sub-{s.removeprefix('sub-')}_desc-crisp_dseg.nii.gz"
                 for s in subjects]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"label maps not found: {', '.join(missing)}")
    return [_load_label_volume(p) for p in paths]


def _load_label_volume(path: Path) -> LabelVolume:
    img = nib.load(str(path))
    data = np.asanyarray(img.dataobj)
    if data.ndim != 3 or not np.issubdtype(data.dtype, np.integer):
        raise ValueError(f"{path}: expected a 3D integer label map, got {data.dtype} "
                         f"{data.shape}")
    if data.min() < 0 or data.max() >= N_LABELS:
        raise ValueError(f"{path}: labels outside 0-{N_LABELS - 1}")
    labels, affine = to_canonical(data.astype(np.uint8), img.affine)
    zooms = tuple(float(z) for z in nib.affines.voxel_sizes(affine))
    lo, hi = [], []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        present = np.flatnonzero(np.any(labels > 0, axis=other))
        if present.size == 0:
            raise ValueError(f"{path}: the label map is empty")
        margin = int(np.ceil(CROP_MARGIN_MM / zooms[axis]))
        lo.append(max(0, present[0] - margin))
        hi.append(min(labels.shape[axis], present[-1] + 1 + margin))
    crop = tuple(slice(a, b) for a, b in zip(lo, hi))
    shift = np.eye(4)
    shift[:3, 3] = lo
    return LabelVolume(name=path.name.split("_")[0], labels=np.ascontiguousarray(labels[crop]),
                       zooms=zooms, affine=affine @ shift)


@dataclass(frozen=True)
class _PlaneVolume:
    """One label volume prepared for a plane: axes (slice, rows, columns), counts."""

    labels: np.ndarray                  # (n_slices, n_rows, n_cols) uint8, C-contiguous
    zooms: tuple[float, float, float]   # mm along the same axes
    head_fraction: np.ndarray           # (256,) voxel fraction of each label among labels > 0
    brain_fraction: np.ndarray          # (256,) the same among BRAIN_LABELS
    slice_p: np.ndarray                 # (n_slices,) probability of drawing each slice
    weight: float                       # sum of the slice weights (volume's share)


class SynthSampler:
    """Draw synthetic 2D training samples of one plane from label volumes.

    Each volume is kept once more with the slicing axis first (a copy for the coronal and
    axial planes, about 55 MB per BrainWeb head), so that a slab is a contiguous read.
    ``rng`` is public: checkpoint ``rng.bit_generator.state`` to resume a run exactly.
    """

    def __init__(self, volumes: list[LabelVolume], plane: str, crop: tuple[int, int],
                 cfg: SynthConfig = SynthConfig(), seed: int = 0) -> None:
        if not volumes:
            raise ValueError("no label volumes to synthesise from")
        if plane not in SLICE_AXIS:
            raise ValueError(f"unknown plane {plane!r}; choose one of {sorted(SLICE_AXIS)}")
        if len(crop) != 2 or min(crop) < 1:
            raise ValueError(f"crop must be two positive sizes, got {crop}")
        self.plane, self.cfg = plane, cfg
        self.crop = (int(crop[0]), int(crop[1]))
        self.rng = np.random.default_rng(seed)
        #: the anatomies sampled from (recorded in the weights' sidecar)
        self.names = [v.name for v in volumes]
        s = SLICE_AXIS[plane]
        #: volume axes of (slice, rows, columns), as in ``planes``' table
        self.axes: tuple[int, int, int] = (s, *(a for a in range(3) if a != s))
        #: output pixel spacing (mm) of rows and columns
        self.spacing = (TRAINING_SPACING[self.axes[1]], TRAINING_SPACING[self.axes[2]])
        self._volumes = [self._prepare(v) for v in volumes]
        weights = np.array([v.weight for v in self._volumes])
        self._volume_p = weights / weights.sum()

    def _prepare(self, volume: LabelVolume) -> _PlaneVolume:
        """Reorder to (slice, rows, columns); count label fractions and slice weights."""
        labels = np.ascontiguousarray(np.moveaxis(volume.labels, self.axes[0], 0))
        zooms = tuple(float(volume.zooms[a]) for a in self.axes)
        counts = np.bincount(labels.ravel(), minlength=256).astype(np.float64)
        head = np.where(np.arange(256) > 0, counts, 0.0)
        brain = np.where(BRAIN_LUT, counts, 0.0)
        if brain.sum() == 0:
            raise ValueError(f"{volume.name}: no brain labels {BRAIN_LABELS}")
        brain_area = BRAIN_LUT[labels].sum(axis=(1, 2)) * zooms[1] * zooms[2]
        has_head = labels.any(axis=(1, 2))
        weights = np.where(brain_area >= self.cfg.min_brain_area, 1.0, self.cfg.weight_no_brain)
        weights = weights * has_head
        return _PlaneVolume(labels, zooms, head / head.sum(), brain / brain.sum(),
                            weights / weights.sum(), float(weights.sum()))

    # -- one sample --------------------------------------------------------------------

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        """(3, h, w) float32 image (z-scored channels, 0 = background/absent), (h, w) uint8 raw
        BrainWeb labels on the same pixel grid (h, w = crop)."""
        rng, cfg = self.rng, self.cfg
        volume = self._volumes[int(rng.choice(len(self._volumes), p=self._volume_p))]
        position = int(rng.choice(len(volume.slice_p), p=volume.slice_p))
        centres = self._pixel_centres(volume, position)
        widths = self._draw_resolution()
        widen = 0.0
        if cfg.p_wide_csf and rng.random() < cfg.p_wide_csf:
            widen = float(rng.uniform(*cfg.wide_csf_mm))
        block, *weights, labels = _area_weights(volume.labels, volume.zooms, centres, widths,
                                                widen)

        stripped = rng.random() < cfg.p_skull_stripped
        mask = self._mask(labels, stripped)
        fraction = volume.brain_fraction if stripped else volume.head_fraction
        image = np.zeros((len(MODALITIES),) + self.crop, dtype=np.float32)
        for channel in self._draw_channels():
            image[channel] = self._channel(channel, block, weights, labels, mask, fraction)
        if cfg.target == "majority":
            labels = majority_labels(block, weights, labels)
            if stripped:
                labels[~mask] = 0   # the zero background is never tissue
        return self._flip(image, labels)

    def _pixel_centres(self, volume: _PlaneVolume, position: int) -> list[np.ndarray]:
        """Centres (mm from the volume's corner) of the slab and of the crop's rows, columns.

        The crop is centred on a random head pixel of the slice and kept inside the slice
        when it fits (zero padding otherwise), like ``SliceSampler._crop``.
        """
        section = volume.labels[position]
        pixel = self._head_pixel(section)
        centres = [np.array([(position + 0.5) * volume.zooms[0]])]
        for n_in, zoom, n, spacing, i in zip(section.shape, volume.zooms[1:], self.crop,
                                             self.spacing, pixel):
            extent, size = n_in * zoom, n * spacing
            if extent >= size:
                start = float(np.clip((i + 0.5) * zoom - size / 2, 0, extent - size))
            else:
                start = (extent - size) / 2
            centres.append(start + (np.arange(n) + 0.5) * spacing)
        return centres

    def _head_pixel(self, section: np.ndarray) -> tuple[int, int]:
        """A uniformly random pixel with a label > 0: the first head pixel among random
        draws (fast when the head fills the slice), else one of all head pixels."""
        rows = self.rng.integers(0, section.shape[0], 64)
        cols = self.rng.integers(0, section.shape[1], 64)
        hits = np.flatnonzero(section[rows, cols])
        if hits.size:
            return int(rows[hits[0]]), int(cols[hits[0]])
        head = np.flatnonzero(section)   # not empty: slices without head are never drawn
        row, col = np.unravel_index(head[self.rng.integers(head.size)], section.shape)
        return int(row), int(col)

    def _draw_resolution(self) -> list[float]:
        """Acquisition resolution (mm) along the slice, row and column axes."""
        rng, cfg = self.rng, self.cfg

        def draw(p_thick: float) -> float:
            return float(rng.uniform(*(cfg.thick if rng.random() < p_thick else cfg.thin)))

        widths = []
        for i, axis in enumerate(self.axes):
            if axis == 2:           # S-I: the slice axis of axial (2D multi-slice) scans
                widths.append(draw(cfg.p_thick_axial))
            else:
                widths.append(draw(cfg.p_thick_other if i == 0 else 0.0))
        in_plane = [i for i in (1, 2) if self.axes[i] != 2]
        if rng.random() < cfg.p_coarse_in_plane:
            widths[int(rng.choice(in_plane))] = float(rng.uniform(*cfg.coarse))
        return widths

    def _draw_channels(self) -> list[int]:
        """A non-empty subset of channel indices (``MODALITIES`` order)."""
        r = self.rng.random()
        if r < self.cfg.p_t1w_only:
            return [0]
        if r < self.cfg.p_t1w_only + self.cfg.p_all_channels:
            return list(range(len(MODALITIES)))
        return list(OTHER_SUBSETS[int(self.rng.integers(len(OTHER_SUBSETS)))])

    def _draw_tissues(self, channel: int) -> tuple[np.ndarray, np.ndarray]:
        """Per-label mean and within-tissue s.d. lookup tables, (256,) float32 each."""
        rng, cfg = self.rng, self.cfg
        means = np.zeros(256, dtype=np.float32)
        sds = np.zeros(256, dtype=np.float32)
        if rng.random() < cfg.p_plausible:
            jitter = rng.normal(0.0, cfg.prior_jitter, N_LABELS)
            means[:N_LABELS] = np.clip(PRIOR_MEANS[channel] + jitter, 0.0, 1.0)
        else:
            means[:N_LABELS] = rng.uniform(*cfg.random_mean, N_LABELS)
        means[0] = rng.uniform(*cfg.air_mean)
        sds[:N_LABELS] = rng.uniform(*cfg.tissue_sd, N_LABELS)
        return means, sds

    def _mask(self, labels: np.ndarray, stripped: bool) -> np.ndarray:
        """Head mask (labels > 0), or the brain mask, maybe dilated, of stripped images;
        holes filled (as the app's head mask)."""
        if not stripped:
            return fill_holes_2d(labels > 0)
        brain = fill_holes_2d(BRAIN_LUT[labels])
        iterations = int(self.rng.integers(0, self.cfg.max_brain_dilation + 1))
        if iterations and brain.any():
            brain = ndimage.binary_dilation(brain, iterations=iterations)
        return brain

    def _channel(self, channel: int, block: np.ndarray, weights: list,
                 labels: np.ndarray, mask: np.ndarray, fraction: np.ndarray) -> np.ndarray:
        """One synthetic channel, z-scored, clipped, 0 outside ``mask``."""
        rng, cfg = self.rng, self.cfg
        means, sds = self._draw_tissues(channel)
        image = box_average(np.take(means, block), weights)
        image += np.take(sds, labels) * rng.standard_normal(image.shape, dtype=np.float32)
        image *= self._bias_field()
        sigma = rng.uniform(0.0, cfg.blur_max) / np.array(self.spacing)
        image = ndimage.gaussian_filter(image, sigma, truncate=3.0)
        noise_sd = float(rng.uniform(*cfg.noise_sd))
        if rng.random() < cfg.p_rician:
            real = image + noise_sd * rng.standard_normal(image.shape, dtype=np.float32)
            image = np.hypot(real, noise_sd * rng.standard_normal(image.shape, dtype=np.float32))
        else:
            image += noise_sd * rng.standard_normal(image.shape, dtype=np.float32)
        mean, sd = volume_moments(means, sds, fraction, noise_sd)
        out = np.clip((image - mean) / sd, -ZSCORE_CLIP, ZSCORE_CLIP)
        out[~mask] = 0.0
        return out

    def _bias_field(self) -> np.ndarray:
        """exp of a random quadratic in the crop's coordinates (units of 100 mm)."""
        h, w = self.crop
        y = ((np.arange(h) - (h - 1) / 2) * self.spacing[0] / 100.0)[:, None]
        x = ((np.arange(w) - (w - 1) / 2) * self.spacing[1] / 100.0)[None, :]
        c = self.rng.normal(0.0, self.rng.uniform(0.0, self.cfg.bias_max), 5)
        return np.exp(c[0] * y + c[1] * x + c[2] * y * y + c[3] * x * x + c[4] * x * y,
                      dtype=np.float32)

    def _flip(self, image: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Flip rows/columns (R-L with ``p_flip_lr``, others with ``p_flip_other``)."""
        for dim, axis in ((0, self.axes[1]), (1, self.axes[2])):
            p = self.cfg.p_flip_lr if axis == 0 else self.cfg.p_flip_other
            if self.rng.random() < p:
                image, labels = np.flip(image, axis=dim + 1), np.flip(labels, axis=dim)
        return np.ascontiguousarray(image), np.ascontiguousarray(labels)


def volume_moments(means: np.ndarray, sds: np.ndarray, fraction: np.ndarray,
                   noise_sd: float = 0.0) -> tuple[float, float]:
    """Mean and s.d. of a volume whose labels (voxel ``fraction`` each) have these moments.

    The mixture's variance is the fraction-weighted within-label variance plus the spread of
    the label means, plus the noise variance; the s.d. is at least ``MIN_SD``.
    """
    fraction = fraction.astype(np.float64)
    mean = float(fraction @ means)
    variance = float(fraction @ (sds.astype(np.float64) ** 2 + (means - mean) ** 2))
    return mean, max(float(np.sqrt(variance + noise_sd ** 2)), MIN_SD)


def box_average(values: np.ndarray, weights: list) -> np.ndarray:
    """(h, w) float32 averages of a ``(n_slab, n_rows, n_cols)`` block of values over each
    output pixel's acquisition box (``weights``: slab, row and column weights of
    ``_area_weights``)."""
    w_slab, w_rows, w_cols = weights
    slab = np.einsum("k,kij->ij", w_slab, values)   # (n_rows, n_cols)
    return np.ascontiguousarray((w_cols @ (w_rows @ slab).T).T)


def majority_labels(block: np.ndarray, weights: list, centre: np.ndarray) -> np.ndarray:
    """(h, w) uint8 labels, the most common tissue of each output pixel's acquisition box.

    The tissues are the brain labels (``BRAIN_LABELS``: CSF, GM, WM) and the rest (air and
    every non-brain label together, background to the networks). Where the rest wins (ties
    included), the pixel keeps its ``centre`` label, or 0 where that is a brain label.
    """
    shares = np.stack([box_average((block == k).astype(np.float32), weights)
                       for k in BRAIN_LABELS])
    best = np.argmax(shares, axis=0)
    brain = np.take_along_axis(shares, best[None], axis=0)[0] > 1.0 - shares.sum(axis=0)
    rest = np.where(BRAIN_LUT[centre], 0, centre).astype(np.uint8)
    return np.where(brain, np.asarray(BRAIN_LABELS, dtype=np.uint8)[best], rest)


def box_weights(centres: np.ndarray, width: float, first: int, count: int,
                voxel: float) -> sparse.csr_array:
    """(n_out, count) sparse float32 area-average weights of boxes on a voxel grid.

    Row ``p`` holds the overlap of the box ``centres[p] +- width / 2`` (mm) with voxels
    ``first .. first + count - 1`` (voxel ``i`` covers ``[i, i + 1) * voxel`` mm), divided by
    ``width``: each row sums to 1 when those voxels cover the box. Sparse (a band of a few
    voxels per row), so that the products need no multi-threaded BLAS.
    """
    lo, hi = centres - width / 2, centres + width / 2
    start = np.floor(lo / voxel).astype(np.int64)
    band = int(np.max(np.floor(hi / voxel).astype(np.int64) - start)) + 1
    index = start[:, None] + np.arange(band)                      # (n_out, band) voxels
    overlap = (np.minimum(hi[:, None], (index + 1) * voxel)
               - np.maximum(lo[:, None], index * voxel))
    data = (np.clip(overlap, 0.0, None) / width).astype(np.float32)
    columns = np.clip(index - first, 0, count - 1).astype(np.int32)  # clipped ones weigh 0
    pointers = np.arange(0, data.size + 1, band, dtype=np.int32)
    return sparse.csr_array((data.ravel(), columns.ravel(), pointers),
                            shape=(len(centres), count))


def fill_holes_2d(mask: np.ndarray) -> np.ndarray:
    """``mask`` plus the background components (4-connected) that do not touch the border."""
    background, n = ndimage.label(~mask)
    outside = np.zeros(n + 1, dtype=bool)
    outside[0] = True   # label 0 = the mask itself
    for edge in (background[0], background[-1], background[:, 0], background[:, -1]):
        outside[edge] = True
    return mask | ~outside[background]


def _area_weights(labels: np.ndarray, zooms: tuple[float, float, float],
                  centres: list[np.ndarray], widths: list[float], widen_csf_mm: float = 0.0
                  ) -> tuple[np.ndarray, np.ndarray, sparse.csr_array, sparse.csr_array,
                             np.ndarray]:
    """The label block under the boxes, its weights, and the labels at the pixel centres.

    ``labels`` (slice, rows, columns); ``centres`` and ``widths`` (mm) per axis. Returns
    ``block`` (n_slab, n_rows, n_cols) uint8 (zeros outside the volume; its CSF widened by
    ``widen_csf_mm``, see :func:`widen_csf`), the slab weights ``(n_slab,)``, the row and
    column weights (``(h, n_rows)``, ``(w, n_cols)``) and the ``(h, w)`` crisp labels at the
    output pixel centres of the slab's centre slice.
    """
    first = [int(np.floor((c[0] - width / 2) / zoom))
             for c, width, zoom in zip(centres, widths, zooms)]
    last = [int(np.floor((c[-1] + width / 2) / zoom)) + 1
            for c, width, zoom in zip(centres, widths, zooms)]
    block = _padded_block(labels, first, last)
    if widen_csf_mm:
        block = widen_csf(block, zooms[1:], widen_csf_mm)
    w_slab, w_rows, w_cols = (box_weights(c, width, a, b - a, zoom) for c, width, a, b, zoom
                              in zip(centres, widths, first, last, zooms))
    nearest = [np.floor(c / zoom).astype(np.int64) - a
               for c, zoom, a in zip(centres, zooms, first)]
    crisp = block[nearest[0][0]][np.ix_(nearest[1], nearest[2])]
    return block, w_slab.toarray()[0], w_rows, w_cols, crisp


def widen_csf(block: np.ndarray, spacing: tuple[float, float], mm: float) -> np.ndarray:
    """A copy of ``block`` (slices, rows, columns of BrainWeb labels) whose GM (2) within
    ``mm`` of CSF (1), in each slice's plane (pixel ``spacing`` in mm), is CSF."""
    out = block.copy()
    for section, result in zip(block, out):
        csf = section == 1
        if csf.any():
            near = ndimage.distance_transform_edt(~csf, sampling=spacing) <= mm
            result[near & (section == 2)] = 1
    return out


def _padded_block(labels: np.ndarray, first: list[int], last: list[int]) -> np.ndarray:
    """``labels[first:last]`` (per axis), zero outside the volume."""
    block = np.zeros([b - a for a, b in zip(first, last)], dtype=labels.dtype)
    source, target = [], []
    for n, a, b in zip(labels.shape, first, last):
        lo, hi = max(a, 0), min(b, n)
        if hi <= lo:
            return block
        source.append(slice(lo, hi))
        target.append(slice(lo - a, hi - a))
    block[tuple(target)] = labels[tuple(source)]
    return block


# -- fixed-contrast test volumes ---------------------------------------------------------

def render_volume(volume: LabelVolume, rng: np.random.Generator,
                  spacing: float | Sequence[float] = 1.0, contrast: str = "mprage",
                  skull_stripped: bool = False,
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A fixed, deterministic-contrast 3D test image made by a procedure different from the
    training synthesis.

    Fixed tissue intensities (``RENDER_INTENSITIES[contrast]``: "mprage", "ir" or "flair";
    MPRAGE: CSF dark, GM mid, WM bright, fat bright, skull dark, ...), partial volume by
    averaging the crisp labels' intensities into ``spacing``-mm voxels (one size, or one per
    axis of the label volume, e.g. thick slices; each a whole multiple of the label voxel
    size; trailing voxels that do not fill an output voxel are dropped), a mild smooth bias
    field and Rician noise (s.d. 2 % of the WM intensity). Returns (image (X',Y',Z') float32
    raw intensities, labels (X',Y',Z') uint8 majority label per voxel, 4x4 affine RAS+).
    With ``skull_stripped``, everything outside the brain (labels 1-3 of the output grid,
    holes filled) is exactly 0.
    """
    if contrast not in RENDER_INTENSITIES:
        raise ValueError(f"unknown contrast {contrast!r}; choose one of "
                         f"{sorted(RENDER_INTENSITIES)}")
    spacings = np.broadcast_to(np.asarray(spacing, float), (3,))
    factors = []
    for size, zoom in zip(spacings, volume.zooms):
        factor = size / zoom
        if factor < 1 - 1e-6 or abs(factor - round(factor)) > 1e-3:
            raise ValueError(f"spacing {size:g} mm is not a whole multiple of the label "
                             f"voxel size {zoom} mm")
        factors.append(int(round(factor)))
    shape = tuple(n // f for n, f in zip(volume.labels.shape, factors))
    if min(shape) < 1:
        raise ValueError(f"spacing {spacing} mm is larger than the volume {volume.name}")
    lut = np.zeros(256, dtype=np.float32)
    lut[:N_LABELS] = RENDER_INTENSITIES[contrast]

    # Chunks of output planes along axis 0 keep the float copies small.
    image = np.empty(shape, dtype=np.float32)
    labels = np.empty(shape, dtype=np.uint8)
    fx, fy, fz = factors
    n_voxels = fx * fy * fz
    count_type = np.uint8 if n_voxels < 256 else np.uint32
    chunk = max(1, 16 // fx)
    for start in range(0, shape[0], chunk):
        stop = min(start + chunk, shape[0])
        crisp = volume.labels[start * fx:stop * fx, :shape[1] * fy, :shape[2] * fz]
        image[start:stop] = block_sum(np.take(lut, crisp), factors, np.float32) / n_voxels
        counts = np.stack([block_sum(crisp == k, factors, count_type) for k in range(N_LABELS)])
        labels[start:stop] = np.argmax(counts, axis=0)

    wm = lut[3]
    image *= _smooth_field(shape, spacings, rng)
    noise = 0.02 * wm
    image = np.hypot(image + rng.normal(0.0, noise, shape).astype(np.float32),
                     rng.normal(0.0, noise, shape).astype(np.float32))
    if skull_stripped:
        brain = ndimage.binary_fill_holes(BRAIN_LUT[labels])
        image[~brain] = 0.0

    base = volume.affine if volume.affine is not None else np.diag([*volume.zooms, 1.0])
    scale = np.diag([*map(float, factors), 1.0])
    scale[:3, 3] = (np.array(factors) - 1) / 2.0   # the new voxel 0's centre, old voxels
    return image.astype(np.float32), labels, base @ scale


def block_sum(data: np.ndarray, factors: list[int], dtype: type) -> np.ndarray:
    """Sums over blocks of ``factors`` voxels in ``dtype`` (reshape-sum, one axis at a time;
    each axis' size must be a multiple of its factor)."""
    out = data
    for axis, factor in enumerate(factors):
        shape = out.shape
        split = shape[:axis] + (shape[axis] // factor, factor) + shape[axis + 1:]
        out = out.reshape(split).sum(axis=axis + 1, dtype=dtype)
    return out


def _smooth_field(shape: tuple[int, ...], spacings: Sequence[float],
                  rng: np.random.Generator) -> np.ndarray:
    """A mild multiplicative bias field: exp of a random linear + quadratic polynomial of
    the voxel coordinates (units of 100 mm from the volume centre), about +-10 % in a head."""
    coords = [((np.arange(n) - (n - 1) / 2) * size / 100.0).astype(np.float32)
              for n, size in zip(shape, spacings)]
    x, y, z = np.meshgrid(*coords, indexing="ij", sparse=True)
    linear = rng.normal(0.0, 0.08, 3)
    quadratic = rng.normal(0.0, 0.08, 3)
    log_field = (linear[0] * x + linear[1] * y + linear[2] * z
                 + quadratic[0] * x * x + quadratic[1] * y * y + quadratic[2] * z * z)
    return np.exp(log_field).astype(np.float32)


__all__ = ["SynthConfig", "LabelVolume", "load_label_volumes", "SynthSampler", "render_volume",
           "volume_moments", "box_average", "majority_labels", "box_weights", "block_sum",
           "fill_holes_2d", "LABEL_NAMES", "BRAIN_LABELS", "PRIOR_MEANS", "RENDER_INTENSITIES"]
