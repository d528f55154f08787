"""Nipype interfaces for quality control: registration scores and the subject report
(thin wrappers over ``mixnet_bids.reports``)."""

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
        from mixnet_bids.reports.qc import registration_scores

        registered = self.inputs.registered if isdefined(self.inputs.registered) else []
        self._results["qc"] = registration_scores(
            self.inputs.reference, self.inputs.head_mask,
            dict(zip(self.inputs.modalities, registered)))
        return runtime


class _SubjectReportInputSpec(BaseInterfaceInputSpec):
    out_file = traits.Str(mandatory=True, desc="absolute path of the HTML report")
    title = traits.Str(mandatory=True)
    reference = File(exists=True, mandatory=True, desc="bias-corrected reference image")
    reference_name = traits.Str(desc="file name of the input the reference comes from")
    dseg = File(exists=True, mandatory=True)
    probsegs = InputMultiObject(File(exists=True), mandatory=True,
                                desc="GM, WM, CSF probability maps")
    template_mask = File(exists=True, desc="template brain mask registered to the subject")
    registered = InputMultiObject(File(exists=True), desc="modalities on the reference grid")
    modalities = traits.List(traits.Str, desc="names of ``registered``, in order")
    volumes = File(exists=True, mandatory=True, desc="the one-row volumes TSV")
    settings_json = traits.Str(mandatory=True, desc="the run's settings (JSON)")
    command_line = traits.Str(desc="the command that started the run")
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
        from mixnet_bids.reports import subject_report
        from mixnet_bids.versions import software_versions

        def optional(name: str):
            value = getattr(self.inputs, name)
            return value if isdefined(value) else None

        registered = optional("registered") or []
        template_mask = optional("template_mask")
        out = subject_report(
            Path(self.inputs.out_file), title=self.inputs.title,
            reference=Path(self.inputs.reference), dseg=Path(self.inputs.dseg),
            probsegs=[Path(p) for p in self.inputs.probsegs],
            registered={m: Path(p) for m, p in zip(optional("modalities") or [], registered)},
            volumes_tsv=Path(self.inputs.volumes),
            settings=json.loads(self.inputs.settings_json), versions=software_versions(),
            warnings=optional("warnings") or [], task=self.inputs.task,
            networks=optional("networks"),
            template_mask=Path(template_mask) if template_mask else None,
            reference_name=optional("reference_name"), command_line=optional("command_line"))
        self._results["out_file"] = str(out)
        return runtime
