"""Nipype interfaces over the plain preprocessing functions (head mask, signal mask,
skull-stripping detection, z-score stack)."""

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
    head_mask,
    load_3d,
    looks_skull_stripped,
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
    """Head mask robust to the background level (see ``preprocessing.head_mask``)."""

    suffix = "_mask"

    def _mask(self, img) -> np.ndarray:
        return head_mask(img.get_fdata(dtype=np.float32))


class SignalMask(_MaskInterface):
    """Voxels that are not zero background (see ``preprocessing.signal_mask``)."""

    suffix = "_signal"

    def _mask(self, img) -> np.ndarray:
        return signal_mask(np.asanyarray(img.dataobj))


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
