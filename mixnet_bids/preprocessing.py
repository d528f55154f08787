"""Preprocessing shared by inference and training: N4, rigid co-registration, head mask, z-score.

The Nipype graph that chains these steps is ``mixnet_bids.workflows.preprocessing``; the
training cache runs that same graph, so training and inference never drift apart.
The plain functions here hold the numerics and are tested directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu

#: z-scores are clipped to this range; voxels outside the head mask are set to 0.
ZSCORE_CLIP = 6.0
#: Version of what this module and ``workflows.preprocessing`` make of a scan. Raise it with
#: any change that alters a scan's z-scores: the training cache (``training.cache``) stores
#: it and rebuilds the files another version made, and ``mixnet-bids-train`` writes it into
#: every weight sidecar. 1: every image z-scored inside Otsu's head mask; 2: a skull-stripped
#: image inside its signal (``normalisation_mask``). Version 3 (the head mask at Otsu's
#: level of the log deviations, 2026-12-07) was withdrawn the same day: under a strong bias
#: field and a contrast change its mask reached 15-23 mm into the background noise, and the
#: shipped networks lost 0.10 GM Dice on such scans (docs/results.md); the version is 2
#: again.
PREPROCESSING_VERSION = 2


def head_mask(data: np.ndarray, threshold=threshold_otsu) -> np.ndarray:
    """Boolean head mask of a 3D image, robust to a non-zero background.

    The background level is the median of the outermost voxels (IR images have a bright
    background, T1w/FLAIR a dark one); the head is where the intensity departs from it by
    more than ``threshold(deviations)`` (Otsu's; rules are compared in
    ``benchmarks/head_mask_probe.py``), closed, hole-filled per slice and in 3D, keeping the
    largest connected component.
    """
    data = np.asarray(data, dtype=np.float32)
    if data.ndim != 3:
        raise ValueError(f"head_mask expects a 3D image, got shape {data.shape}")
    border = np.concatenate([
        data[[0, -1]].ravel(), data[:, [0, -1]].ravel(), data[:, :, [0, -1]].ravel()
    ])
    deviation = np.abs(data - np.median(border))
    if not np.any(deviation > 0):
        return np.zeros(data.shape, dtype=bool)
    mask = deviation > threshold(deviation)
    mask = ndimage.binary_opening(mask, iterations=1)
    labels, n = ndimage.label(mask)
    if n > 1:
        mask = labels == (1 + int(np.argmax(np.bincount(labels.ravel())[1:])))
    # the rest on the head's box: a margin wider than the closing's reach (2 x 2 voxels)
    # gives the same mask as the whole grid, in half the time for a head in a large field
    box = head_box(mask, 6)
    if box is None:
        return mask
    head = mask[box]
    head = ndimage.binary_closing(head, structure=np.ones((5, 5, 3), bool), iterations=2,
                                  border_value=0) | head
    for axis in range(3):  # fill holes slice by slice along every axis, then in 3D
        head = np.stack([ndimage.binary_fill_holes(s) for s in np.moveaxis(head, axis, 0)],
                        axis=axis)
    mask = np.zeros_like(mask)
    mask[box] = ndimage.binary_fill_holes(head)
    return mask


def head_box(mask: np.ndarray, margin: int) -> tuple[slice, ...] | None:
    """Bounding box of the ``True`` voxels of ``mask`` widened by ``margin`` voxels on
    every side (clipped to the array); ``None`` when the mask is empty."""
    box = []
    for axis in range(mask.ndim):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        where = np.flatnonzero(mask.any(axis=others))
        if not where.size:
            return None
        box.append(slice(max(0, where[0] - margin),
                         min(mask.shape[axis], where[-1] + margin + 1)))
    return tuple(box)


def head_crop(head: nib.Nifti1Image, margin: int) -> tuple[slice, ...]:
    """The head mask's bounding box on its own grid, widened by ``margin`` voxels; the
    whole grid when the mask is empty."""
    box = head_box(np.asarray(head.dataobj) > 0, margin)
    return box or tuple(slice(0, n) for n in head.shape[:3])


def paste(crop: np.ndarray, crop_affine: np.ndarray, shape: Sequence[int],
          affine: np.ndarray, fill: float | Sequence[float] = 0) -> np.ndarray:
    """``crop`` (a box of the grid ``shape``/``affine``, placed by its own affine) on the
    whole grid, ``fill`` elsewhere (one value, or one per trailing channel); in Fortran
    order, as NIfTI stores it."""
    box = crop_box(crop.shape, crop_affine, shape, affine)
    # NIfTI stores the first axis fastest: in that order the array is written as it is
    out = np.empty(tuple(shape[:3]) + crop.shape[3:], crop.dtype, order="F")
    out[...] = fill
    out[box] = crop
    return out


def crop_box(crop_shape: Sequence[int], crop_affine: np.ndarray, shape: Sequence[int],
             affine: np.ndarray) -> tuple[slice, slice, slice]:
    """Where a crop lies in a grid: its voxel box, from the two affines. ``ValueError``
    unless the crop is a whole-voxel box of the grid with the same axes and voxel sizes."""
    start = np.linalg.solve(affine, crop_affine[:, 3])[:3]
    corner = np.round(start).astype(int)
    stop = corner + np.asarray(crop_shape[:3])
    if (not np.allclose(crop_affine[:3, :3], affine[:3, :3], atol=1e-4)
            or not np.allclose(start, corner, atol=1e-3)
            or (corner < 0).any() or (stop > np.asarray(shape[:3])).any()):
        raise ValueError(f"the crop's grid ({tuple(crop_shape[:3])}, affine "
                         f"{crop_affine.tolist()}) is not a box of the grid "
                         f"({tuple(shape[:3])}, affine {affine.tolist()})")
    return tuple(slice(a, b) for a, b in zip(corner, stop))


def signal_mask(data: np.ndarray) -> np.ndarray:
    """Boolean mask of the voxels that are not zero background.

    The zero background is the voxels exactly 0 that are connected (face neighbours) to the
    image border: what a skull-stripping tool or a scanner set to 0 around the head. It
    carries no signal, so it is never tissue. Zeros enclosed by the head (dark voxels of an
    integer image, such as CSF in a FLAIR) are kept: they may be tissue.
    """
    data = np.asarray(data)
    if data.ndim != 3:
        raise ValueError(f"signal_mask expects a 3D image, got shape {data.shape}")
    labels, n = ndimage.label(data == 0)
    border = np.concatenate([labels[[0, -1]].ravel(), labels[:, [0, -1]].ravel(),
                             labels[:, :, [0, -1]].ravel()])
    # a lookup table by label: about 19 times faster than ``np.isin`` on a 1 mm head
    signal = np.ones(n + 1, dtype=bool)
    signal[border[border > 0]] = False
    return signal[labels]


#: Largest volume (mL) of what is not zero background in a skull-stripped image. Adult
#: intracranial volumes reach about 2.1 L: the brain of the MNI152 2009 template, larger than
#: most brains, covers 1.89 L and the BrainWeb brains with their CSF 1.91-2.05 L, so a
#: generously dilated brain mask stays below this; whole heads with their scalp take 3.3 L
#: and more even when the field of view cuts them (MRBrainS T1w, 144 mm: 3.3-3.7 L; BrainWeb
#: heads: 3.6-4.0 L).
SKULL_STRIPPED_MAX_ML = 2800.0
#: Smallest share of the image border that is zero background in a skull-stripped image.
SKULL_STRIPPED_MIN_BORDER = 0.9


def looks_skull_stripped(data: np.ndarray, zooms: tuple[float, float, float]) -> bool:
    """Whether a 3D image looks skull-stripped: a zero background surrounds a brain-sized
    region (``zooms``: voxel sizes in mm). See ``stripped_signal``."""
    return stripped_signal(signal_mask(np.asarray(data)), zooms)


def stripped_signal(signal: np.ndarray, zooms: tuple[float, float, float]) -> bool:
    """Whether a signal mask (``signal_mask``) is that of a skull-stripped image.

    Skull stripping sets everything outside a brain mask to exactly 0, so two things hold:

    1. the zero background covers at least ``SKULL_STRIPPED_MIN_BORDER`` of the image
       border: the brain lies inside the field of view, surrounded by zeros. A magnitude
       image has noise in the air, and a whole head, even resampled with zeros outside its
       field of view, crosses the border where the field of view cuts it (MRBrainS T1w on its
       FLAIR grid: 62-80 % of the border is zero). Ten per cent tolerate a brain cut at one
       face.
    2. the signal is at most ``SKULL_STRIPPED_MAX_ML``: a brain, not a head whose air was set
       to zero (which passes the first test).

    Both use geometry only: a test on skull or scalp intensities would depend on the contrast
    (fat is bright in a T1w image, the skull dark in most, FLAIR and IR differ).
    """
    signal = np.asarray(signal, dtype=bool)
    if not signal.any():
        return False
    zero = ~signal
    border = np.concatenate([zero[[0, -1]].ravel(), zero[:, [0, -1]].ravel(),
                             zero[:, :, [0, -1]].ravel()])
    volume_ml = float(signal.sum()) * float(np.prod(zooms)) / 1000.0
    return bool(border.mean() >= SKULL_STRIPPED_MIN_BORDER
                and volume_ml <= SKULL_STRIPPED_MAX_ML)


def normalisation_mask(data: np.ndarray, zooms: tuple[float, float, float]) -> np.ndarray:
    """The voxels of a 3D image that N4 fits and the z-score is taken in.

    A skull-stripped image (``stripped_signal``) gives every voxel its stripping tool kept,
    as the training synthesis z-scores its stripped images inside their whole brain mask
    (an intensity threshold may leave out some of the darkest CSF;
    Otsu's of the intensities left out 6-12 % of skull-stripped BrainWeb renders,
    ``docs/results.md``). Any other image gives its ``head_mask``.
    """
    signal = signal_mask(data)
    if stripped_signal(signal, zooms):
        return signal
    return head_mask(data)


def zscore(data: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Z-score ``data`` with the mean and s.d. of the voxels inside ``mask``.

    The statistics ignore the 0.5 % tails inside the mask so that a few extreme voxels
    (vessels, artefacts) do not set the scale; results are clipped to +-ZSCORE_CLIP and
    the background (outside the mask) is 0.
    """
    data = np.asarray(data, dtype=np.float32)
    mask = np.asarray(mask, dtype=bool)
    if data.shape != mask.shape:
        raise ValueError(f"image shape {data.shape} differs from mask shape {mask.shape}")
    values = data[mask]
    if values.size < 2:
        raise ValueError("the head mask is empty: cannot normalise intensities")
    lo, hi = np.percentile(values, [0.5, 99.5])
    core = values[(values >= lo) & (values <= hi)]
    std = float(core.std())
    if not np.isfinite(std) or std <= 0:
        raise ValueError("the image is constant inside the head mask: cannot normalise")
    out = np.clip((data - float(core.mean())) / std, -ZSCORE_CLIP, ZSCORE_CLIP)
    out[~mask] = 0.0
    return out.astype(np.float32)


#: Threads of every ANTs step (N4, antsRegistration, antsApplyTransforms, the Jacobian).
#: Their multi-threaded sums depend on the thread count (N4 of one image with 2 threads
#: differs from N4 with 1; antsRegistration even differs between runs with 2), so the count
#: is fixed here, not taken from the machine or from --nprocs: MultiProc runs steps and
#: subjects side by side instead.
ANTS_THREADS = 1


def ants_threads() -> dict:
    """Inputs that pin a Nipype ANTs interface to ``ANTS_THREADS``.

    Nipype passes ``num_threads`` to ITK as ``NSLOTS``, but ITK prefers
    ``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS`` when the caller's environment sets it (as some
    containers and clusters do), so that variable is set for the step too.
    """
    return {"num_threads": ANTS_THREADS,
            "environ": {"ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": str(ANTS_THREADS)}}


def n4_interface(**inputs):
    """Nipype's ANTs N4 interface with the settings used everywhere in mixnet-bids.

    Shrink factor 4, fitting distance 200 mm, four levels of 20 iterations at 1e-6. On an
    MRBrainS IR volume, shrink 4 and 50/50/30/20 iterations took 10 s instead of 74 s for
    4x50 at 1e-7 with shrink 2 (correlation 0.991 between the corrected heads). On a 1 mm
    T1w cropped to its head, where N4 never reached 1e-6, 20/20/20/20 took 13.1 s instead
    of 21.8 s for 50/50/30/20, with a correlation of 0.9996 inside the head: the finest
    level matters more than the first ones (50/50/30 alone: 0.996).
    """
    from nipype.interfaces.ants import N4BiasFieldCorrection

    settings = dict(
        dimension=3,
        bspline_fitting_distance=200,
        shrink_factor=4,
        n_iterations=[20, 20, 20, 20],
        convergence_threshold=1e-6,
        rescale_intensities=True,
        copy_header=True,
    )
    settings.update(inputs)
    return N4BiasFieldCorrection(**settings, **ants_threads())


#: Fixed seed of antsRegistration's random sampling.
ANTS_RANDOM_SEED = 1


def mi_registration(stages: list[tuple], **inputs):
    """Nipype's antsRegistration with Mattes mutual information at every stage.

    ``stages``: ``(transform, parameters, iterations, shrink_factors, smoothing_sigmas)``
    per stage, e.g. ``("Rigid", (0.1,), [100, 50, 20], [4, 2, 1], [2.0, 1.0, 0.0])``.
    """
    from nipype.interfaces.ants import Registration

    n = len(stages)
    transforms, parameters, iterations, shrinks, sigmas = (list(x) for x in zip(*stages))
    settings = dict(
        dimension=3,
        transforms=transforms,
        transform_parameters=parameters,
        metric=["MI"] * n,
        metric_weight=[1.0] * n,
        radius_or_number_of_bins=[32] * n,
        sampling_strategy=["Regular"] * n,
        sampling_percentage=[0.25] * n,
        number_of_iterations=iterations,
        convergence_threshold=[1e-6] * n,
        convergence_window_size=[10] * n,
        shrink_factors=shrinks,
        smoothing_sigmas=sigmas,
        sigma_units=["vox"] * n,
        use_histogram_matching=[False] * n,
        winsorize_lower_quantile=0.005,
        winsorize_upper_quantile=0.995,
        float=True,
        write_composite_transform=False,
        # Reruns must be byte-identical: ANTs seeds its sampling from the clock unless
        # told, and its multi-threaded metric sums differ from run to run (the same
        # registration gave four different transforms with 2 threads, identical ones
        # with 1), so registrations run with ANTS_THREADS (1).
        random_seed=ANTS_RANDOM_SEED,
    )
    settings.update(inputs)
    return Registration(**settings, **ants_threads())


def rigid_registration_interface(**inputs):
    """Rigid co-registration of one modality to the reference, in scanner space.

    No centre-of-mass initialisation: images of one session share the scanner's world
    coordinates, so the identity in physical space is the best start. The metric samples
    10 % of the voxels inside the reference's head mask (``fixed_image_masks``, connected
    by the workflow), at 100/50/10 iterations on shrink 4/2/1, single-threaded for
    byte-identical reruns. On the MRBrainS subject 1, 4 and 14 IR -> T1 and FLAIR -> T1
    pairs that took 3.9-6.2 s against 11.7-16.2 s for the whole grid at 100/50/20, and
    landed closer to a masked 500/250/100 registration sampling 50 % (points of the head
    moved 0.08-0.12 mm on average, against 0.12-0.32 mm for the whole-grid schedule).
    """
    stages = [("Rigid", (0.1,), [100, 50, 10], [4, 2, 1], [2.0, 1.0, 0.0])]
    return mi_registration(stages, **{"interpolation": "Linear", "output_warped_image": True,
                                      "sampling_percentage": [0.1], **inputs})


def load_3d(path: str | Path) -> nib.Nifti1Image:
    """Load a NIfTI image, squeezing a trailing singleton 4th axis; refuse other 4D."""
    img = nib.load(str(path))
    if img.ndim == 4 and img.shape[3] == 1:
        img = img.slicer[..., 0]
    if img.ndim != 3:
        raise ValueError(f"{path}: expected a 3D image, got shape {img.shape}")
    return img


def write_like(data: np.ndarray, like: nib.Nifti1Image, path: str | Path,
               dtype: type = np.float32) -> Path:
    """Write ``data`` with the affine and header geometry of ``like``."""
    header = like.header.copy()
    header.set_data_dtype(dtype)
    out = nib.Nifti1Image(np.asarray(data, dtype=dtype), like.affine, header)
    out.set_qform(*like.get_qform(coded=True))
    out.set_sform(*like.get_sform(coded=True))
    nib.save(out, str(path))
    return Path(path)
