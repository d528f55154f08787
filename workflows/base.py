"""Top-level graphs: ``init_mixnet_wf`` -> ``init_single_subject_wf`` -> sub-workflows."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from mixnet_bids.bids import subject_key
from mixnet_bids.config import Settings
from mixnet_bids.conventions import stripping_rule
from mixnet_bids.inference.predict import mirrored_planes
from mixnet_bids.inference.weights import networks_for
from mixnet_bids.interfaces.bids import PublishSubject, report_name
from mixnet_bids.interfaces.reports import RegistrationQC, SubjectReport
from mixnet_bids.interfaces.segment import Fusion, PlaneInference
from mixnet_bids.interfaces.tissue import ConventionMaps, TissueVolumes
from mixnet_bids.workflows.outputs import init_outputs_wf
from mixnet_bids.workflows.preprocessing import choose_reference, init_preproc_wf
from mixnet_bids.workflows.templates import init_template_outputs_wf, init_tiv_wf

#: The graph that holds every subject of a run; its folder in the work folder holds one
#: folder per subject graph (``subject_workflow_name``).
MIXNET_WF = "mixnet_wf"


def subject_workflow_name(subject: str, session: str | None) -> str:
    return f"single_subject_{subject_key(subject, session).replace('-', '_')}_wf"


def init_mixnet_wf(*, settings: Settings,
                   subjects: list[tuple[str, str | None, dict[str, str]]],
                   warnings: dict[str, list[str]] | None = None,
                   crash_dirs: dict[str, Path] | None = None) -> pe.Workflow:
    """All participants of a run in one graph: one single-subject graph per (subject, session).

    MultiProc runs the steps of every subject side by side within ``--nprocs`` and
    ``--mem-gb``. The subject graphs share no node, so a step that fails stops only the
    later steps of its own subject: the others finish and publish.

    Inputs
        ``subjects``: ``(subject, session, {modality: path})``; ``warnings`` (the input
        checks' warnings) and ``crash_dirs`` (the folder for crash files), each by subject
        key (``subject_key``).

    Workflow Graph
        .. workflow::

            from pathlib import Path
            from mixnet_bids.bids import subject_key
from mixnet_bids.config import Settings
            from mixnet_bids.workflows.base import init_mixnet_wf
            wf = init_mixnet_wf(
                settings=Settings(Path("bids"), Path("out"), Path("work")),
                subjects=[("01", None, {"T1w": "sub-01_T1w.nii.gz"})])
    """
    workflow = pe.Workflow(name=MIXNET_WF)
    workflow.base_dir = str(settings.work_dir)
    for subject, session, images in subjects:
        key = subject_key(subject, session)
        subject_wf = init_single_subject_wf(settings=settings, subject=subject,
                                            session=session, images=images,
                                            warnings=(warnings or {}).get(key))
        if crash_dirs and key in crash_dirs:  # a node's own config wins over the graph's
            for name in subject_wf.list_node_names():
                subject_wf.get_node(name).config = {
                    "execution": {"crashdump_dir": str(crash_dirs[key])}}
        workflow.add_nodes([subject_wf])
    return workflow


def staging_dir(settings: Settings, workflow_name: str) -> Path:
    """Where a subject's derivatives are assembled before the ``publish`` node moves them:
    in the subject graph's own work folder."""
    return Path(settings.work_dir) / MIXNET_WF / workflow_name / "derivatives"


def init_single_subject_wf(*, settings: Settings, subject: str, session: str | None,
                           images: dict[str, str], warnings: list[str] | None = None,
                           name: str | None = None) -> pe.Workflow:
    """One subject/session: preprocessing, per-plane MixNet, fusion, the output convention's
    maps and TIV, volumes, QC report, outputs.

    The networks are those that serve ``settings.task`` (``networks_for``: fine networks
    when installed, else the convention's own).

    Inputs
        ``inputnode.<modality>``: the image of each modality of ``images`` (``{modality:
        path}`` for any non-empty subset of T1w, IR, FLAIR; set from it);
        ``warnings``: the input checks' warnings, shown in the report.

    Outputs
        BIDS-Derivatives and the HTML report, assembled in ``staging_dir`` (see
        ``init_outputs_wf``), then moved into ``settings.output_dir`` at once by the last
        node, ``publish``; ``outputnode.report``: the published report.
    """
    key = subject_key(subject, session)
    workflow = pe.Workflow(name=name or subject_workflow_name(subject, session))
    staging = staging_dir(settings, workflow.name)
    inputnode = pe.Node(niu.IdentityInterface(fields=list(images)), name="inputnode")
    for modality, path in images.items():
        setattr(inputnode.inputs, modality, str(path))
    outputnode = pe.Node(niu.IdentityInterface(fields=["report"]), name="outputnode")

    preproc = init_preproc_wf(modalities=list(images))
    workflow.connect([(inputnode, preproc, [(m, f"inputnode.{m}") for m in images])])

    networks, weight_files = networks_for(settings.task, settings.planes,
                                          settings.model_version, settings.weights_dir)
    strip_rule = stripping_rule(networks, settings.trust_stripping)
    merge_probs = pe.Node(niu.Merge(len(settings.planes)), name="merge_probs")
    for i, plane in enumerate(settings.planes, start=1):
        infer = pe.Node(
            PlaneInference(plane=plane, device=settings.device, precision=settings.precision,
                           mirror=plane in mirrored_planes(settings.planes, settings.mirror),
                           num_threads=settings.omp_nthreads, progress=settings.progress,
                           weights=str(weight_files[plane])),
            name=f"mixnet_{plane}", n_procs=settings.omp_nthreads, mem_gb=2.0)
        workflow.connect([
            (preproc, infer, [("outputnode.zstack", "zstack"),
                              ("outputnode.head_mask", "head_mask")]),
            (infer, merge_probs, [("out_probs", f"in{i}")]),
        ])

    fusion = pe.Node(Fusion(planes=list(settings.planes),
                            plane_weights=dict(settings.plane_weights)),
                     name="fusion", mem_gb=2.0)
    convention_maps = pe.Node(ConventionMaps(networks=networks, convention=settings.task,
                                             refine=settings.refine,
                                             trust_stripping=strip_rule),
                              name="convention_maps", mem_gb=3.0)
    tiv_wf = init_tiv_wf()
    volumes = pe.Node(TissueVolumes(convention=settings.task, subject=subject,
                                    session=session), name="volumes", mem_gb=1.0)
    outputs_wf = init_outputs_wf(settings=settings, subject=subject, session=session,
                                 images=images, base_directory=staging,
                                 stripping_rule=strip_rule)
    reference = choose_reference(list(images))
    others = [m for m in images if m != reference]
    merge_registered = pe.Node(niu.Merge(max(1, len(others))), name="merge_registered",
                               run_without_submitting=True)
    for i, modality in enumerate(others, start=1):
        workflow.connect(preproc, f"outputnode.{modality}_preproc",
                         merge_registered, f"in{i}")
    registration_qc = pe.Node(RegistrationQC(modalities=others), name="registration_qc")
    report = pe.Node(SubjectReport(
        out_file=str(staging / report_name(subject, session)), task=settings.task,
        networks=networks, title=f"mixnet-bids: {key}", modalities=others,
        warnings=list(warnings or []), reference_name=Path(images[reference]).name,
        command_line=shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        settings_json=settings.to_json()), name="report", mem_gb=1.0)
    publish = pe.Node(PublishSubject(staging=str(staging),
                                     base_directory=str(settings.output_dir),
                                     subject=subject, session=session), name="publish")

    workflow.connect([
        (merge_probs, fusion, [("out", "in_probs")]),
        (fusion, convention_maps, [("out_probs", "in_probs")]),
        (preproc, convention_maps, [("outputnode.signal_masks", "signal_masks"),
                                    ("outputnode.reference", "reference")]),
        (tiv_wf, convention_maps, [("outputnode.tiv_mask", "template_tiv")]),
        (preproc, tiv_wf, [("outputnode.reference", "inputnode.reference"),
                           ("outputnode.head_mask", "inputnode.head_mask")]),
        (convention_maps, volumes, [("out_probsegs", "probsegs"),
                                    ("out_structures", "structures"),
                                    ("structure_names", "structure_names"),
                                    ("out_tiv", "tiv_mask"), ("out_dseg", "dseg"),
                                    ("skull_stripped", "skull_stripped"),
                                    ("out_uncertainty", "uncertainty")]),
        (preproc, registration_qc, [("outputnode.reference", "reference"),
                                    ("outputnode.head_mask", "head_mask")]),
        (registration_qc, volumes, [("qc", "qc")]),
        (preproc, report, [("outputnode.reference", "reference")]),
        (tiv_wf, report, [("outputnode.tiv_mask", "template_mask")]),
        (convention_maps, report, [("out_dseg", "dseg"), ("out_probsegs", "probsegs")]),
        (volumes, report, [("out_tsv", "volumes")]),
        (outputs_wf, publish, [("outputnode.out", "in_files")]),
        (report, publish, [("out_file", "report")]),
        (publish, outputnode, [("report", "report")]),
        (convention_maps, outputs_wf, [("out_dseg", "inputnode.dseg"),
                                       ("out_probs", "inputnode.probs"),
                                       ("out_uncertainty", "inputnode.uncertainty"),
                                       ("out_probsegs", "inputnode.probsegs"),
                                       ("out_tissue_dseg", "inputnode.dseg3"),
                                       ("out_tiv", "inputnode.tiv_mask")]),
        (volumes, outputs_wf, [("out_tsv", "inputnode.volumes"),
                               ("metadata", "inputnode.volumes_meta")]),
    ])
    if others:
        workflow.connect([(merge_registered, registration_qc, [("out", "registered")]),
                          (merge_registered, report, [("out", "registered")])])
    for modality in images:
        workflow.connect(preproc, f"outputnode.{modality}_preproc",
                         outputs_wf, f"inputnode.{modality}_preproc")
    if settings.output_spaces:
        template_wf = init_template_outputs_wf()
        workflow.connect([
            (preproc, template_wf, [("outputnode.reference", "inputnode.reference")]),
            (convention_maps, template_wf, [("out_tiv", "inputnode.tiv_mask"),
                                            ("out_probsegs", "inputnode.probsegs")]),
            (tiv_wf, template_wf, [("outputnode.to_template", "inputnode.affine")]),
            (template_wf, outputs_wf, [("outputnode.probsegs", "inputnode.template_probsegs")]),
        ])
    return workflow

