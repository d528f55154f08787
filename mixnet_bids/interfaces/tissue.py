"""Nipype interfaces: the output convention's maps from the fused probabilities, and the
volumes table."""

from __future__ import annotations

import json
import logging
import os

import nibabel as nib
import numpy as np
import pandas as pd
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    InputMultiObject,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)

from mixnet_bids.conventions import STRUCTURES, segment
from mixnet_bids.labels import CONVENTIONS, TASK_CLASSES, TISSUES
from mixnet_bids.preprocessing import stripped_signal, write_like
from mixnet_bids.volumes import tissue_volumes, volumes_table

LOGGER = logging.getLogger("nipype.interface")


def _load_mask(path: str, shape: tuple[int, ...], what: str) -> np.ndarray:
    mask = np.asarray(nib.load(path).dataobj) > 0
    if mask.shape != shape:
        raise ValueError(f"{what} shape {mask.shape} differs from the probabilities {shape}")
    return mask


class _ConventionMapsInputSpec(BaseInterfaceInputSpec):
    in_probs = File(exists=True, mandatory=True,
                    desc="fused 4D probabilities of the networks' classes, on the "
                         "reference grid or a box of it (placed by its affine)")
    networks = traits.Enum(*TASK_CLASSES, mandatory=True, desc="the networks' task")
    convention = traits.Enum(*CONVENTIONS, mandatory=True, desc="the output convention")
    reference = File(exists=True, mandatory=True,
                     desc="the reference image: the grid and header of every output")
    template_tiv = File(exists=True, mandatory=True,
                        desc="the template's intracranial mask on the reference grid")
    signal_masks = InputMultiObject(File(exists=True),
                                    desc="each input's signal mask (all but its zero "
                                         "background) on the same grid")
    refine = traits.Bool(True, usedefault=True,
                         desc="refine the tissue split by a Gaussian model of the reference "
                              "image's intensities (``refinement.refine``)")
    trust_stripping = traits.Bool(False, usedefault=True,
                                  desc="when the signal masks are those of skull-stripped "
                                       "inputs, every voxel of them is tissue; the workflow "
                                       "sets it by ``conventions.stripping_rule``")


class _ConventionMapsOutputSpec(TraitedSpec):
    out_probs = File(exists=True, desc="4D probabilities of the convention's classes")
    out_dseg = File(exists=True, desc="the convention's labels (uint8)")
    out_uncertainty = File(exists=True, desc="normalised entropy (0 certain, 1 uniform)")
    out_tiv = File(exists=True, desc="TIV mask (uint8)")
    out_probsegs = traits.List(File(exists=True), desc="GM, WM, CSF maps, 0 outside the TIV")
    out_structures = traits.List(File(exists=True),
                                 desc="cerebellum, brainstem maps (when the networks give "
                                      "them), 0 outside the TIV")
    structure_names = traits.List(traits.Str, desc="names of ``out_structures``")
    out_tissue_dseg = File(exists=True, desc="tissue labels (0 BG, 1 GM, 2 WM, 3 CSF), for "
                                             "conventions that are not the 3 tissues")
    refinement = traits.Dict(desc="the intensity refinement's fit (empty when it did not run)")
    skull_stripped = traits.Bool(desc="whether the stripping tool's brain was taken as the "
                                      "brain (``trust_stripping`` and skull-stripped inputs)")


class ConventionMaps(SimpleInterface):
    """The output convention's probabilities, labels, uncertainty, TIV and tissue maps
    (``conventions.segment``), computed on the probabilities' box and written on the whole
    reference grid."""

    input_spec = _ConventionMapsInputSpec
    output_spec = _ConventionMapsOutputSpec

    def _run_interface(self, runtime):
        from mixnet_bids.preprocessing import crop_box, paste

        img = nib.load(self.inputs.in_probs)
        fused = np.asarray(img.dataobj, dtype=np.float32)
        like = nib.load(self.inputs.reference)
        grid = like.shape[:3]
        box = crop_box(fused.shape, img.affine, grid, like.affine)
        template = _load_mask(self.inputs.template_tiv, grid, "template TIV mask")
        signal, stripped = None, False
        if isdefined(self.inputs.signal_masks) and self.inputs.signal_masks:
            signal = np.zeros(grid, bool)
            for path in self.inputs.signal_masks:
                signal |= _load_mask(path, grid, f"signal mask {path}")
            stripped = (self.inputs.trust_stripping
                        and stripped_signal(signal, like.header.get_zooms()[:3]))
            signal = signal[box]
        self._results["skull_stripped"] = stripped
        if stripped:
            LOGGER.info("skull-stripped inputs: every voxel they do not set to 0 is tissue")
        intensities = (np.asarray(like.dataobj, dtype=np.float32)[box]
                       if self.inputs.refine else None)
        result = segment(fused, self.inputs.networks, self.inputs.convention, template[box],
                         img.header.get_zooms()[:3], signal, intensities, stripped)
        del fused, intensities
        self._results["refinement"] = result.refinement or {}
        if result.refinement:
            fit = result.refinement
            LOGGER.info("intensity refinement, GM / WM / CSF: means %s, SDs %s (%d EM "
                        "iterations)", " / ".join(f"{v:.4g}" for v in fit["mean"]),
                        " / ".join(f"{v:.4g}" for v in fit["sd"]), fit["iterations"])

        def write(data: np.ndarray, name: str, dtype: type = np.float32,
                  fill: float | list[float] = 0) -> str:
            path = os.path.join(runtime.cwd, name)
            write_like(paste(data, img.affine, grid, like.affine, fill), like, path, dtype)
            return path

        # outside the box the probability of background is 1: background, certain, and
        # outside the TIV
        background = [1.0] + [0.0] * (result.probs.shape[-1] - 1)
        self._results["out_probs"] = write(result.probs, "probs.nii.gz", fill=background)
        self._results["out_dseg"] = write(result.dseg, "dseg.nii.gz", np.uint8)
        self._results["out_uncertainty"] = write(result.uncertainty, "uncertainty.nii.gz")
        tiv = np.zeros(grid, np.uint8, order="F")
        tiv[box] = result.tiv
        tiv_path = os.path.join(runtime.cwd, "tiv_mask.nii.gz")
        write_like(tiv, like, tiv_path, np.uint8)
        self._results["out_tiv"] = tiv_path
        self._results["out_probsegs"] = [write(result.tissues[t], f"{t}_probseg.nii.gz")
                                         for t in TISSUES]
        self._results["out_structures"] = [write(prob, f"{name}_probseg.nii.gz")
                                           for name, prob in result.structures.items()]
        self._results["structure_names"] = list(result.structures)
        if result.tissue_dseg is not None:
            self._results["out_tissue_dseg"] = write(result.tissue_dseg, "tissue_dseg.nii.gz",
                                                     np.uint8)
        return runtime


class _VolumesInputSpec(BaseInterfaceInputSpec):
    probsegs = InputMultiObject(File(exists=True), mandatory=True,
                                desc="GM, WM, CSF probability maps")
    structures = InputMultiObject(File(exists=True), desc="cerebellum, brainstem maps")
    structure_names = traits.List(traits.Enum(*STRUCTURES), desc="names of ``structures``")
    tiv_mask = File(exists=True, mandatory=True, desc="TIV mask on the same grid")
    dseg = File(exists=True, mandatory=True, desc="the convention's labels")
    uncertainty = File(exists=True, mandatory=True)
    convention = traits.Enum(*CONVENTIONS, mandatory=True)
    subject = traits.Str(mandatory=True)
    session = traits.Either(None, traits.Str, usedefault=True)
    qc = traits.Dict(traits.Str, traits.Float, desc="extra QC columns (e.g. nmi_FLAIR)")
    skull_stripped = traits.Bool(False, usedefault=True,
                                 desc="whether the TIV mask is the skull-stripped inputs' "
                                      "non-zero voxels (``ConventionMaps.skull_stripped``)")


class _VolumesOutputSpec(TraitedSpec):
    out_tsv = File(exists=True)
    metadata = traits.Dict()


class TissueVolumes(SimpleInterface):
    """One-row TSV: probability-weighted volumes inside the TIV (mL), TIV, fractions and
    QC scores; ``metadata`` describes each column for its JSON sidecar."""

    input_spec = _VolumesInputSpec
    output_spec = _VolumesOutputSpec

    def _run_interface(self, runtime):
        tiv_img = nib.load(self.inputs.tiv_mask)
        grid = tiv_img.shape[:3]
        voxel_ml = float(np.prod(tiv_img.header.get_zooms()[:3])) / 1000.0

        def load(path: str) -> np.ndarray:
            data = np.asarray(nib.load(path).dataobj, dtype=np.float32)
            if data.shape != grid:
                raise ValueError(f"{path}: shape {data.shape} differs from the TIV mask {grid}")
            return data

        if len(self.inputs.probsegs) != len(TISSUES):
            raise ValueError(f"{len(self.inputs.probsegs)} probseg maps; give "
                             f"{', '.join(TISSUES)}")
        structures = self.inputs.structures if isdefined(self.inputs.structures) else []
        names = self.inputs.structure_names if isdefined(self.inputs.structure_names) else []
        if len(structures) != len(names):
            raise ValueError(f"{len(structures)} structure maps for {len(names)} names")
        volumes = tissue_volumes(
            dict(zip(TISSUES, map(load, self.inputs.probsegs))), load(self.inputs.tiv_mask),
            voxel_ml, dict(zip(names, map(load, structures))), dseg=load(self.inputs.dseg),
            uncertainty=load(self.inputs.uncertainty))
        row, meta = volumes_table(self.inputs.subject, self.inputs.session, volumes,
                                  self.inputs.qc, self.inputs.convention,
                                  "skull-stripping" if self.inputs.skull_stripped
                                  else "networks")
        out = os.path.join(runtime.cwd, "volumes.tsv")
        pd.DataFrame([row]).to_csv(out, sep="\t", index=False, float_format="%.4f",
                                   na_rep="n/a")
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
