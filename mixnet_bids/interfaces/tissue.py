"""Nipype interfaces: tissue maps from fused probabilities, and the volumes table."""

from __future__ import annotations

import json
import os

import nibabel as nib
import numpy as np
import pandas as pd
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    traits,
)

from mixnet_bids.labels import TASK_CLASSES
from mixnet_bids.preprocessing import write_like
from mixnet_bids.volumes import COLUMN_DESCRIPTIONS, tissue_probabilities, tissue_volumes


class _TissueMapsInputSpec(BaseInterfaceInputSpec):
    in_probs = File(exists=True, mandatory=True, desc="fused 4D class probabilities")
    task = traits.Enum(*TASK_CLASSES, mandatory=True)


class _TissueMapsOutputSpec(TraitedSpec):
    out_probsegs = traits.List(File(exists=True), desc="GM, WM, CSF probability maps")
    out_dseg3 = File(exists=True, desc="3-label dseg (0 BG, 1 GM, 2 WM, 3 CSF)")


class TissueMaps(SimpleInterface):
    """GM/WM/CSF probability maps and the 3-label dseg derived from any task."""

    input_spec = _TissueMapsInputSpec
    output_spec = _TissueMapsOutputSpec

    def _run_interface(self, runtime):
        img = nib.load(self.inputs.in_probs)
        probs = np.asarray(img.dataobj, dtype=np.float32)
        like = img.slicer[..., 0]
        maps = tissue_probabilities(probs, self.inputs.task)
        outs = []
        for tissue, prob in maps.items():
            outs.append(os.path.join(runtime.cwd, f"{tissue}_probseg.nii.gz"))
            write_like(prob, like, outs[-1])
        stacked = np.stack([1.0 - sum(maps.values())] + list(maps.values()), axis=-1)
        dseg3 = os.path.join(runtime.cwd, "dseg_3label.nii.gz")
        write_like(np.argmax(stacked, axis=-1), like, dseg3, np.uint8)
        self._results["out_probsegs"] = outs
        self._results["out_dseg3"] = dseg3
        return runtime


class _VolumesInputSpec(BaseInterfaceInputSpec):
    in_dseg = File(exists=True, mandatory=True)
    in_probs = File(exists=True, mandatory=True)
    in_uncertainty = File(exists=True, mandatory=True)
    tiv_mask = File(exists=True, desc="intracranial mask on the same grid")
    task = traits.Enum(*TASK_CLASSES, mandatory=True)
    subject = traits.Str(mandatory=True)
    session = traits.Either(None, traits.Str, usedefault=True)
    qc = traits.Dict(traits.Str, traits.Float, desc="extra QC columns (e.g. nmi_FLAIR)")


class _VolumesOutputSpec(TraitedSpec):
    out_tsv = File(exists=True)
    metadata = traits.Dict()


class TissueVolumes(SimpleInterface):
    """One-row TSV: tissue volumes (mL, voxels), TIV, fractions and a QC score."""

    input_spec = _VolumesInputSpec
    output_spec = _VolumesOutputSpec

    def _run_interface(self, runtime):
        dseg_img = nib.load(self.inputs.in_dseg)
        dseg = np.asarray(dseg_img.dataobj)
        probs = np.asarray(nib.load(self.inputs.in_probs).dataobj, dtype=np.float32)
        uncertainty = np.asarray(nib.load(self.inputs.in_uncertainty).dataobj, np.float32)
        voxel_ml = float(np.prod(dseg_img.header.get_zooms()[:3])) / 1000.0
        tiv_ml = None
        if self.inputs.tiv_mask:
            tiv = np.asarray(nib.load(self.inputs.tiv_mask).dataobj) > 0
            if tiv.shape != dseg.shape:
                raise ValueError(f"TIV mask shape {tiv.shape} differs from dseg {dseg.shape}")
            tiv_ml = float(tiv.sum()) * voxel_ml
        row = {"participant_id": f"sub-{self.inputs.subject}"}
        if self.inputs.session:
            row["session_id"] = f"ses-{self.inputs.session}"
        row.update(tissue_volumes(dseg, probs, self.inputs.task, voxel_ml, tiv_ml, uncertainty))
        row.update(self.inputs.qc or {})
        out = os.path.join(runtime.cwd, "volumes.tsv")
        pd.DataFrame([row]).to_csv(out, sep="\t", index=False, float_format="%.4f",
                                   na_rep="n/a")
        meta = {k: v for k, v in COLUMN_DESCRIPTIONS.items() if k in row}
        meta["participant_id"] = {"Description": "BIDS participant label"}
        self._results["out_tsv"] = out
        self._results["metadata"] = json.loads(json.dumps(meta))
        return runtime


class _MaskImageInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True)
    mask_file = File(exists=True, mandatory=True)


class _OutFileSpec(TraitedSpec):
    out_file = File(exists=True)


class MaskImage(SimpleInterface):
    """Zero an image outside a mask on the same grid."""

    input_spec = _MaskImageInputSpec
    output_spec = _OutFileSpec

    def _run_interface(self, runtime):
        img = nib.load(self.inputs.in_file)
        mask = np.asarray(nib.load(self.inputs.mask_file).dataobj) > 0
        if mask.shape != img.shape[:3]:
            raise ValueError(f"mask shape {mask.shape} differs from image {img.shape}")
        out = os.path.join(runtime.cwd, "masked.nii.gz")
        write_like(img.get_fdata(dtype=np.float32) * mask, img, out)
        self._results["out_file"] = out
        return runtime


class _ModulateInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="probability map in template space")
    jacobian = File(exists=True, mandatory=True, desc="Jacobian determinant, same grid")


class Modulate(SimpleInterface):
    """Multiply a warped probability map by the Jacobian determinant (VBM modulation)."""

    input_spec = _ModulateInputSpec
    output_spec = _OutFileSpec

    def _run_interface(self, runtime):
        img = nib.load(self.inputs.in_file)
        jac = np.asarray(nib.load(self.inputs.jacobian).dataobj, dtype=np.float32)
        if jac.shape != img.shape:
            raise ValueError(f"Jacobian shape {jac.shape} differs from map {img.shape}")
        out = os.path.join(runtime.cwd, os.path.basename(self.inputs.in_file).replace(
            ".nii.gz", "_modulated.nii.gz"))
        write_like(img.get_fdata(dtype=np.float32) * np.clip(jac, 0, None), img, out)
        self._results["out_file"] = out
        return runtime
