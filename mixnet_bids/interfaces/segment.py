"""Nipype interfaces for per-plane inference and plane fusion."""

from __future__ import annotations

import os

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    InputMultiObject,
    SimpleInterface,
    TraitedSpec,
    traits,
)
from nipype.utils.filemanip import fname_presuffix

from mixnet_bids.inference.planes import PLANES


class _PlaneInferenceInputSpec(BaseInterfaceInputSpec):
    zstack = File(exists=True, mandatory=True, desc="4D z-score stack (3 channels)")
    head_mask = File(exists=True, mandatory=True, desc="head mask on the same grid")
    plane = traits.Enum(*PLANES, mandatory=True)
    weights = File(exists=True, mandatory=True, desc="weight file (.pt with .json sidecar)")
    device = traits.Str("cpu", usedefault=True)
    precision = traits.Enum("float32", "bfloat16", usedefault=True,
                            desc="float32, or bfloat16 autocast (inference.precision)")
    mirror = traits.Bool(False, usedefault=True,
                         desc="also run on the left-right mirrored volume and average")
    # hashed: the probabilities depend on the thread count (torch's multi-threaded sums)
    num_threads = traits.Int(1, usedefault=True, desc="torch threads")
    progress = traits.Bool(False, usedefault=True, nohash=True, desc="show a progress bar")


class _PlaneInferenceOutputSpec(TraitedSpec):
    out_probs = File(exists=True, desc="4D class probabilities on the head's box of the "
                                       "input grid (uncompressed)")


class PlaneInference(SimpleInterface):
    """Run one plane's MixNet slice by slice; probabilities on the head's box of the
    reference grid."""

    input_spec = _PlaneInferenceInputSpec
    output_spec = _PlaneInferenceOutputSpec

    def _run_interface(self, runtime):
        import torch

        from mixnet_bids.inference.predict import choose_device
        from mixnet_bids.inference.segment import write_plane_probabilities

        torch.set_num_threads(max(1, self.inputs.num_threads))
        out = fname_presuffix(self.inputs.zstack, suffix=f"_{self.inputs.plane}_probs.nii",
                              newpath=runtime.cwd, use_ext=False)
        write_plane_probabilities(self.inputs.zstack, self.inputs.head_mask,
                                  self.inputs.plane, self.inputs.weights, out,
                                  choose_device(self.inputs.device), self.inputs.progress,
                                  self.inputs.precision, self.inputs.mirror)
        self._results["out_probs"] = out
        return runtime


class _FusionInputSpec(BaseInterfaceInputSpec):
    in_probs = InputMultiObject(File(exists=True), mandatory=True)
    planes = traits.List(traits.Enum(*PLANES), mandatory=True)
    plane_weights = traits.Dict(traits.Str, traits.Float, mandatory=True)


class _FusionOutputSpec(TraitedSpec):
    out_probs = File(exists=True, desc="fused 4D probabilities of the networks' classes, "
                                       "on the planes' grid (the head's box)")


class Fusion(SimpleInterface):
    """Weighted average of the planes' probabilities."""

    input_spec = _FusionInputSpec
    output_spec = _FusionOutputSpec

    def _run_interface(self, runtime):
        from mixnet_bids.inference.segment import fuse_files

        out = os.path.join(runtime.cwd, "fused_probs.nii")
        fuse_files(self.inputs.in_probs, self.inputs.planes, self.inputs.plane_weights, out)
        self._results["out_probs"] = out
        return runtime
