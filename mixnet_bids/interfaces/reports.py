"""Nipype interfaces for quality control: registration scores and the subject report."""

from __future__ import annotations

import json
from pathlib import Path

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    InputMultiObject,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)

#: Mean uncertainty above which the report warns. Measured with the shipped 3-label
#: weights: T1w only, MRBrainS subject 1 0.70 and the demo 0.66 (Dice 0.64 / 0.65 for GM).
UNCERTAINTY_WARN = 0.75
#: Registration NMI below which the report warns. Measured as this node computes it
#: (bias-corrected images inside the head mask), MRBrainS subject 1: registered IR 1.040 and
#: FLAIR 1.057; shifted by 1 / 2 / 4 voxels IR 1.033 / 1.022 / 1.011, FLAIR 1.047 / 1.034 /
#: 1.019. Lower for a modality with less contrast to the reference, so a warning, not a
#: failure; the cohort report's robust z-scores compare like with like.
NMI_WARN = 1.03


class _RegistrationQCInputSpec(BaseInterfaceInputSpec):
    reference = File(exists=True, mandatory=True)
    head_mask = File(exists=True, mandatory=True, desc="head mask on the reference grid")
    registered = InputMultiObject(File(exists=True), desc="modalities on the reference grid")
    modalities = traits.List(traits.Str, desc="names of ``registered``, in order")


class _RegistrationQCOutputSpec(TraitedSpec):
    qc = traits.Dict(traits.Str, traits.Float, desc="{'nmi_<modality>': NMI}")


class RegistrationQC(SimpleInterface):
    """Normalised mutual information of each registered modality with the reference."""

    input_spec = _RegistrationQCInputSpec
    output_spec = _RegistrationQCOutputSpec

    def _run_interface(self, runtime):
        import nibabel as nib
        import numpy as np

        from mixnet_bids.evaluation.metrics import normalised_mutual_information

        reference = np.asarray(nib.load(self.inputs.reference).dataobj, np.float32)
        mask = np.asarray(nib.load(self.inputs.head_mask).dataobj) > 0
        registered = self.inputs.registered if isdefined(self.inputs.registered) else []
        qc = {}
        for name, path in zip(self.inputs.modalities, registered):
            image = np.asarray(nib.load(path).dataobj, np.float32)
            qc[f"nmi_{name}"] = round(normalised_mutual_information(reference, image, mask), 4)
        self._results["qc"] = qc
        return runtime


class _SubjectReportInputSpec(BaseInterfaceInputSpec):
    out_file = traits.Str(mandatory=True, desc="absolute path of the HTML report")
    title = traits.Str(mandatory=True)
    reference = File(exists=True, mandatory=True, desc="bias-corrected reference image")
    dseg = File(exists=True, mandatory=True)
    uncertainty = File(exists=True, mandatory=True)
    registered = InputMultiObject(File(exists=True), desc="modalities on the reference grid")
    modalities = traits.List(traits.Str, desc="names of ``registered``, in order")
    volumes = File(exists=True, mandatory=True, desc="the one-row volumes TSV")
    settings_json = traits.Str(mandatory=True, desc="the run's settings (JSON)")
    warnings = traits.List(traits.Str, desc="warnings found by the input checks")
    task = traits.Str(mandatory=True, desc="the output convention")
    networks = traits.Str(desc="the task of the networks that gave it")


class _SubjectReportOutputSpec(TraitedSpec):
    out_file = File(exists=True)


class SubjectReport(SimpleInterface):
    """Write the subject's self-contained HTML report (rerun every time: it is staged)."""

    input_spec = _SubjectReportInputSpec
    output_spec = _SubjectReportOutputSpec
    always_run = True

    def _run_interface(self, runtime):
        import pandas as pd

        from mixnet_bids.reports import subject_report
        from mixnet_bids.versions import software_versions

        row = pd.read_csv(self.inputs.volumes, sep="\t").iloc[0]
        registered = self.inputs.registered if isdefined(self.inputs.registered) else []
        out = subject_report(
            Path(self.inputs.out_file), title=self.inputs.title,
            reference=Path(self.inputs.reference), dseg=Path(self.inputs.dseg),
            uncertainty=Path(self.inputs.uncertainty),
            registered={m: Path(p) for m, p in zip(self.inputs.modalities, registered)},
            volumes_tsv=Path(self.inputs.volumes),
            settings=json.loads(self.inputs.settings_json), versions=software_versions(),
            warnings=list(self.inputs.warnings) + qc_warnings(row), task=self.inputs.task,
            networks=self.inputs.networks if isdefined(self.inputs.networks) else None)
        self._results["out_file"] = str(out)
        return runtime


def qc_warnings(row) -> list[str]:
    """Warnings from a subject's QC numbers (a volumes TSV row)."""
    warnings = []
    uncertainty = row.get("mean_uncertainty")
    if uncertainty is not None and uncertainty > UNCERTAINTY_WARN:
        warnings.append(f"mean uncertainty {uncertainty:.2f} > {UNCERTAINTY_WARN}: the "
                        "segmentation is unsure; look at the images")
    for column, value in row.items():
        if str(column).startswith("nmi_") and value < NMI_WARN:
            warnings.append(f"{column[4:]} registration: NMI {value:.3f} < {NMI_WARN}; "
                            "check the registration figure")
    return warnings
