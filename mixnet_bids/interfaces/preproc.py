"""Nipype interfaces over the plain preprocessing functions (head mask, signal mask,
the head's box around N4, skull-stripping detection, z-score stack)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    InputMultiObject,
    SimpleInterface,
    TraitedSpec,
    traits,
)
from nipype.utils.filemanip import fname_presuffix

from mixnet_bids.model import MODALITIES
from mixnet_bids.preprocessing import (
    crop_box,
    head_crop,
    load_3d,
    looks_skull_stripped,
    normalisation_mask,
    signal_mask,
    write_like,
    zscore,
)


class _ImageInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="3D image")


class _MaskOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="binary mask (uint8), same grid")


class _MaskInterface(SimpleInterface):
    """A binary mask of one 3D image, written beside it with ``suffix`` (uint8, same grid)."""

    input_spec = _ImageInputSpec
    output_spec = _MaskOutputSpec
    suffix = ""

    def _mask(self, img) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _run_interface(self, runtime):
        img = load_3d(self.inputs.in_file)
        out = fname_presuffix(self.inputs.in_file, suffix=self.suffix, newpath=runtime.cwd)
        write_like(self._mask(img), img, out, np.uint8)
        self._results["out_file"] = out
        return runtime


class HeadMask(_MaskInterface):
    """Head mask robust to the background level, or a skull-stripped image's signal (see
    ``preprocessing.normalisation_mask``)."""

    suffix = "_mask"

    def _mask(self, img) -> np.ndarray:
        return normalisation_mask(img.get_fdata(dtype=np.float32), img.header.get_zooms()[:3])


class SignalMask(_MaskInterface):
    """Voxels that are not zero background (see ``preprocessing.signal_mask``)."""

    suffix = "_signal"

    def _mask(self, img) -> np.ndarray:
        return signal_mask(np.asanyarray(img.dataobj))


#: Voxels kept around the head mask's bounding box when N4 works on the box alone.
N4_MARGIN = 8


class _HeadCropInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="3D image")
    mask = File(exists=True, mandatory=True, desc="its head mask (same grid)")


class _HeadCropOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="the image on the head's box (uncompressed)")
    out_mask = File(exists=True, desc="the head mask on the same box")


class HeadCrop(SimpleInterface):
    """The head's bounding box (``N4_MARGIN`` voxels wider) of an image and of its mask.

    N4 run on this box instead of the whole field of view took 21.8 s instead of 37.7 s
    (and 0.6 GiB instead of 1.9 GiB) on a 1 mm MRBrainS T1w whose head fills a fifth of the
    grid, with a correlation of 0.9996 between the two corrected heads. ``PasteCrop`` puts
    the result back on the whole grid.
    """

    input_spec = _HeadCropInputSpec
    output_spec = _HeadCropOutputSpec

    def _run_interface(self, runtime):
        img, mask = load_3d(self.inputs.in_file), load_3d(self.inputs.mask)
        box = head_crop(mask, N4_MARGIN)
        for key, source, suffix in (("out_file", img, "_crop"), ("out_mask", mask, "_cropmask")):
            out = fname_presuffix(self.inputs.in_file, suffix=suffix, newpath=runtime.cwd)
            out = out.removesuffix(".gz")
            nib.save(source.slicer[box], out)
            self._results[key] = out
        return runtime


class _PasteCropInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="a processed box of ``full_file``")
    full_file = File(exists=True, mandatory=True, desc="the whole image the box came from")


class _PasteCropOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="``full_file`` with the box replaced by ``in_file``")


class PasteCrop(SimpleInterface):
    """Put a processed box (``HeadCrop``, placed by its affine) back into the whole image:
    ``<full_file>_corrected.nii.gz``, float32, the original voxels outside the box."""

    input_spec = _PasteCropInputSpec
    output_spec = _PasteCropOutputSpec

    def _run_interface(self, runtime):
        full, crop = load_3d(self.inputs.full_file), load_3d(self.inputs.in_file)
        data = full.get_fdata(dtype=np.float32)
        data[crop_box(crop.shape, crop.affine, data.shape, full.affine)] = \
            crop.get_fdata(dtype=np.float32)
        out = fname_presuffix(self.inputs.full_file, suffix="_corrected", newpath=runtime.cwd)
        if not out.endswith(".gz"):
            out += ".gz"
        write_like(data, full, out)
        self._results["out_file"] = out
        return runtime


class _SkullStrippedInputSpec(BaseInterfaceInputSpec):
    # not exists=True: the path is set when the graph is built, the file checked when it runs
    in_file = File(mandatory=True, desc="an input image as given")
    metadata = traits.Dict(desc="JSON sidecar content to complete")


class _SkullStrippedOutputSpec(TraitedSpec):
    skull_stripped = traits.Bool(desc="whether the image looks skull-stripped")
    metadata = traits.Dict(desc="``metadata`` with ``SkullStripped`` set")


class SkullStripped(SimpleInterface):
    """Whether an input looks skull-stripped (``preprocessing.looks_skull_stripped``), as the
    ``SkullStripped`` key that BIDS requires in the sidecar of a preprocessed image."""

    input_spec = _SkullStrippedInputSpec
    output_spec = _SkullStrippedOutputSpec

    def _run_interface(self, runtime):
        img = load_3d(self.inputs.in_file)
        stripped = looks_skull_stripped(np.asanyarray(img.dataobj),
                                        tuple(nib.affines.voxel_sizes(img.affine)))
        self._results["skull_stripped"] = stripped
        self._results["metadata"] = {**self.inputs.metadata, "SkullStripped": stripped}
        return runtime


class _StackInputSpec(BaseInterfaceInputSpec):
    in_files = InputMultiObject(File(exists=True), mandatory=True,
                                desc="co-registered images on one grid, one per modality")
    in_masks = InputMultiObject(File(exists=True), mandatory=True,
                                desc="head mask of each image, on the same grid")
    modalities = traits.List(traits.Enum(*MODALITIES), mandatory=True,
                             desc="modality of each entry of in_files")


class _StackOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="4D float32 z-scores, channels in MODALITIES order")
    out_mask = File(exists=True, desc="union of the modalities' head masks (uint8)")


class ZScoreStack(SimpleInterface):
    """Z-score each modality inside its head mask and stack them as channels.

    Absent modalities are all-zero channels, so the output always has
    ``len(MODALITIES)`` channels in the fixed order.
    """

    input_spec = _StackInputSpec
    output_spec = _StackOutputSpec

    def _run_interface(self, runtime):
        files, masks = self.inputs.in_files, self.inputs.in_masks
        if not len(files) == len(masks) == len(self.inputs.modalities):
            raise ValueError(f"{len(files)} images and {len(masks)} masks for "
                             f"{len(self.inputs.modalities)} modality names")
        stack, union, ref = zscore_stack(dict(zip(self.inputs.modalities, zip(files, masks))))
        out = fname_presuffix(self.inputs.in_files[0], suffix="_zstack", newpath=runtime.cwd)
        out_mask = fname_presuffix(self.inputs.in_files[0], suffix="_headmask",
                                   newpath=runtime.cwd)
        write_like(stack, ref, out)
        write_like(union, ref, out_mask, np.uint8)
        self._results["out_file"] = out
        self._results["out_mask"] = out_mask
        return runtime


def zscore_stack(images: dict[str, tuple[str, str]]
                 ) -> tuple[np.ndarray, np.ndarray, nib.Nifti1Image]:
    """Stack ``{name: (image, head mask)}`` files (one grid) as z-scores ``(X, Y, Z, 3)``."""
    ref = None
    stack = union = None
    for name, (path, mask_path) in images.items():
        img, mask_img = load_3d(path), load_3d(mask_path)
        if ref is None:
            ref = img
            stack = np.zeros(img.shape + (len(MODALITIES),), np.float32)
            union = np.zeros(img.shape, bool)
        for other in (img, mask_img):
            if other.shape != ref.shape or not np.allclose(other.affine, ref.affine, atol=1e-3):
                raise ValueError(f"{path}: grid {other.shape} differs from the reference "
                                 f"grid {ref.shape}; co-register it first")
        mask = np.asarray(mask_img.dataobj) > 0
        stack[..., MODALITIES.index(name)] = zscore(img.get_fdata(dtype=np.float32), mask)
        union |= mask
    return stack, union, ref
