"""Every check made before work starts, in one place.

Each problem is one line naming the file (or folder, or option) and the fix. Problems of
the whole run (not a BIDS folder, output inside the input, folders not writable, weights
missing) stop everything; problems of one subject are reported, the other subjects run.
"""

from __future__ import annotations

import errno
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

#: Refused above this many voxels (512^3): the pipeline holds several float copies.
MAX_VOXELS = 512 ** 3
#: Refused below this many voxels along any axis, or this field of view (mm).
MIN_VOXELS_PER_AXIS = 8
MIN_FOV_MM = 60.0
#: Modalities must share this fraction of the smaller field of view (world bounding boxes):
#: the rigid registration starts from the scanner coordinates.
MIN_FOV_OVERLAP = 0.5
#: Warn above these.
OBLIQUE_WARN_DEG = 5.0
ANISOTROPY_WARN = 2.5


class InputProblems(Exception):
    """Problems found before any work starts; each is a one-line message."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass
class Run:
    """One subject/session to process."""

    subject: str
    session: str | None
    images: dict[str, str]
    warnings: list[str] = field(default_factory=list)


def writable_folder_problem(folder: Path, what: str) -> str | None:
    """Why ``folder`` (existing or to be created) cannot be written to, or None.

    Probes by creating a file in it, or in its nearest existing parent; creates nothing
    that stays.
    """
    probe = Path(folder).absolute()
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        return f"{folder}: the {what} cannot be created because {probe} is a file; " \
               "choose another folder"
    try:
        fd, tmp = tempfile.mkstemp(dir=probe, prefix=".mixnet-bids-probe-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as err:
        reason = {errno.EROFS: "it is on a read-only file system",
                  errno.ENOSPC: "its disk is full",
                  errno.EACCES: "permission denied"}.get(err.errno, err.strerror)
        return f"{folder}: the {what} is not writable ({reason} at {probe}); " \
               "choose a writable folder"
    return None


def _one_line(err: Exception) -> str:
    return f"{type(err).__name__}: " + " ".join(str(err).split())


def image_problems(path: str | Path, modality: str) -> tuple[list[str], list[str]]:
    """(problems, warnings) of one input image: readable, 3D, finite, sized like a head."""
    try:
        img = nib.load(str(path))
        shape, zooms = img.shape, img.header.get_zooms()
    except Exception as err:  # nibabel raises many types for broken files
        return [f"{path}: cannot be read as NIfTI ({_one_line(err)}); "
                "replace the file"], []
    if len(shape) != 3:
        fix = ("drop the singleton 4th dimension (e.g. nibabel.squeeze_image)"
               if len(shape) == 4 and shape[3] == 1 else "select one 3D volume")
        return [f"{path}: {modality} must be a 3D image, got shape {shape}; {fix}"], []
    kind = img.get_data_dtype().kind
    if kind not in "iuf":  # complex, or RGB(A) colour
        datatype = img.header.get_value_label("datatype")
        fix = ("save its magnitude (e.g. numpy.abs) as a real-valued image" if kind == "c"
               else "convert it to a single-channel grey-scale image")
        return [f"{path}: {datatype} voxels; {modality} must hold one real number per "
                f"voxel: {fix}"], []
    zooms = np.asarray(zooms[:3], float)
    if np.any(zooms <= 0) or not np.all(np.isfinite(img.affine)):
        return [f"{path}: invalid voxel sizes {tuple(zooms)} or affine in the header; "
                "fix the NIfTI header"], []
    n_voxels = int(np.prod(shape))
    if n_voxels > MAX_VOXELS:
        return [f"{path}: {shape} is {n_voxels / 1e6:.0f} M voxels, more than the "
                f"{MAX_VOXELS / 1e6:.0f} M this tool accepts; resample it to 1 mm "
                "voxels first"], []
    fov = np.asarray(shape) * zooms
    if min(shape) < MIN_VOXELS_PER_AXIS or fov.min() < MIN_FOV_MM:
        return [f"{path}: shape {shape} with a field of view of "
                f"{' x '.join(f'{f:.0f}' for f in fov)} mm is too small for a head "
                f"(needs >= {MIN_VOXELS_PER_AXIS} voxels and {MIN_FOV_MM:.0f} mm per "
                "axis); give a whole-head 3D image"], []
    try:
        data = np.asanyarray(img.dataobj)
    except Exception as err:  # truncated or corrupt data block
        return [f"{path}: the image data cannot be read ({_one_line(err)}); "
                "the file is truncated or corrupt, replace it"], []
    if not np.all(np.isfinite(data)):
        return [f"{path}: contains NaN or infinite voxels; replace them (e.g. by 0) or "
                "re-export the image"], []
    if np.ptp(data) == 0:
        what = "all zero" if not np.any(data) else "constant"
        return [f"{path}: the image is {what}; check the file or leave it out with "
                "--bids-filter-file"], []
    warnings = []
    obliquity = float(np.degrees(np.max(nib.affines.obliquity(img.affine))))
    if obliquity > OBLIQUE_WARN_DEG:
        warnings.append(f"{Path(path).name}: oblique by {obliquity:.0f} degrees; slices are "
                        "taken along the voxel axes nearest to the anatomical ones")
    if zooms.max() / zooms.min() > ANISOTROPY_WARN:
        warnings.append(f"{Path(path).name}: anisotropic voxels "
                        f"{' x '.join(f'{z:.2g}' for z in zooms)} mm")
    return [], warnings


def _world_box(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    img = nib.load(str(path))
    shape = np.asarray(img.shape[:3])
    corners = np.array(np.meshgrid(*[[-0.5, n - 0.5] for n in shape])).reshape(3, -1).T
    world = nib.affines.apply_affine(img.affine, corners)
    return world.min(axis=0), world.max(axis=0)


def overlap_problems(images: dict[str, str]) -> list[str]:
    """Modalities whose world-space fields of view barely overlap the reference's (the
    first entry of ``images``)."""
    names = list(images)
    if len(names) < 2:
        return []
    boxes = {m: _world_box(images[m]) for m in names}
    reference = names[0]
    problems = []
    lo_r, hi_r = boxes[reference]
    for modality in names[1:]:
        lo, hi = boxes[modality]
        inter = np.prod(np.clip(np.minimum(hi, hi_r) - np.maximum(lo, lo_r), 0, None))
        smaller = min(np.prod(hi - lo), np.prod(hi_r - lo_r))
        fraction = inter / smaller if smaller > 0 else 0.0
        if fraction < MIN_FOV_OVERLAP:
            problems.append(
                f"{images[modality]}: its field of view shares {100 * fraction:.0f} % with "
                f"the {reference} image's ({Path(images[reference]).name}) in scanner "
                "coordinates; both must come from one session with correct headers "
                "(fix the affines or leave one out with --bids-filter-file)")
    return problems


def check_run(run: Run) -> list[str]:
    """Check every image of a run (adds warnings to ``run``); return its problems."""
    from mixnet_bids.workflows.preprocessing import choose_reference

    problems = []
    for modality, path in run.images.items():
        found, warnings = image_problems(path, modality)
        problems += found
        run.warnings += warnings
    if not problems:
        reference = choose_reference(list(run.images))
        ordered = {reference: run.images[reference]}
        ordered.update({m: p for m, p in run.images.items() if m != reference})
        problems += overlap_problems(ordered)
    return problems
