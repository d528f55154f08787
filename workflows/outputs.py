"""Derivative writers: one small sink per output, all through ``DerivativesDataSink``."""

from __future__ import annotations

from pathlib import Path

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from mixnet_bids.config import Settings
from mixnet_bids.conventions import TISSUE_CONVENTION, class_table
from mixnet_bids.interfaces.bids import DerivativesDataSink, derivative_name
from mixnet_bids.interfaces.preproc import SkullStripped
from mixnet_bids.labels import TISSUES
from mixnet_bids.sidecars import TISSUE_NAMES, own_uri, raw_uri, template_uri
from mixnet_bids.volumes import TIV_SOURCES
from mixnet_bids.workflows.preprocessing import choose_reference

#: How each input modality's preprocessed image is named: (acq entity, suffix).
PREPROC_NAMES = {"T1w": (None, "T1w"), "IR": ("IR", "T1w"), "FLAIR": (None, "FLAIR")}


def init_outputs_wf(*, settings: Settings, subject: str, session: str | None,
                    images: dict[str, str], base_directory: Path | None = None,
                    stripping_rule: bool = False, name: str = "outputs_wf") -> pe.Workflow:
    """Write one subject's derivatives under their BIDS names into ``base_directory``
    (default ``settings.output_dir``; the app stages them in the work dir). Each image
    gets a JSON sidecar: its Description, Sources (BIDS URIs of the files it was made
    from, ``mixnet_bids.sidecars``) and SpatialReference (the input image whose grid it
    keeps, or the template), and for the preprocessed inputs SkullStripped, as detected on
    the input (``preprocessing.looks_skull_stripped``); ``images`` are the input files,
    ``{modality: path}``; ``stripping_rule``: whether skull-stripped inputs take the
    stripping mask as the brain (``conventions.stripping_rule``), for the descriptions.

    Workflow Graph
        .. workflow::

            from pathlib import Path
            from mixnet_bids.config import Settings
            from mixnet_bids.workflows.outputs import init_outputs_wf
            wf = init_outputs_wf(settings=Settings(Path("b"), Path("o"), Path("w")),
                                 subject="01", session=None,
                                 images={"T1w": "b/sub-01/anat/sub-01_T1w.nii.gz"})

    Inputs
        ``dseg`` (the convention's classes), ``dseg3`` (tissue labels, for a convention
        that is not the 3 tissues), ``probs`` (4D), ``uncertainty``,
        ``probsegs`` (GM, WM, CSF), ``template_probsegs`` (modulated, per output space),
        ``tiv_mask``, ``volumes`` (+ ``volumes_meta``),
        ``<modality>_preproc``.

    Outputs
        ``outputnode.out``: the paths of all written files.
    """
    workflow = pe.Workflow(name=name)
    modalities = list(images)
    fields = ["dseg", "dseg3", "probs", "uncertainty", "probsegs", "template_probsegs",
              "tiv_mask", "volumes", "volumes_meta"] + [f"{m}_preproc" for m in modalities]
    inputnode = pe.Node(niu.IdentityInterface(fields=fields), name="inputnode")
    task = settings.task
    common = dict(base_directory=str(base_directory or settings.output_dir), subject=subject,
                  session=session)


    def uri(suffix: str, **entities) -> str:
        return own_uri(derivative_name({"sub": subject, "ses": session, **entities}, suffix,
                                       ".nii.gz"))

    reference = choose_reference(modalities)
    preprocs = {m: uri(PREPROC_NAMES[m][1], acq=PREPROC_NAMES[m][0], desc="preproc")
                for m in modalities}
    reference_grid = {"SpatialReference": raw_uri(settings.bids_dir, images[reference])}
    on_reference = {**reference_grid, "Sources": list(preprocs.values())}
    sinks = []

    def sink(name: str, field: str, suffix: str, metadata: dict | None = None,
             **entities) -> pe.Node:
        node = pe.Node(DerivativesDataSink(suffix=suffix, metadata=metadata or {}, **common,
                                           **entities),
                       name=name, run_without_submitting=True)
        workflow.connect(inputnode, field, node, "in_file")
        sinks.append(node)
        return node

    # how the labels were made, beyond the networks
    how = (", refined by a Gaussian model of the reference image's tissue intensities"
           if settings.refine else "")
    if stripping_rule:
        how += "; in skull-stripped inputs every voxel not set to 0 is tissue"

    def labels(desc: str) -> dict:
        return {**on_reference, "Description": f"Segmentation labels (MixNet "
                f"{settings.model_version}{how}), named in desc-{desc}_dseg.tsv at the "
                "root"}

    sink("ds_dseg", "dseg", "dseg", labels(task), desc=task)
    if TISSUE_CONVENTION[task] != task:
        sink("ds_dseg3", "dseg3", "dseg", labels(TISSUE_CONVENTION[task]),
             desc=TISSUE_CONVENTION[task])
    sink("ds_uncertainty", "uncertainty", "uncertainty", {
        **on_reference, "Description": "Normalised entropy of the fused class probabilities: "
                                       "0 certain, 1 every class equally likely"}, desc=task)
    sink("ds_tiv", "tiv_mask", "mask", {
        **reference_grid, "Type": "Brain",
        "Description": f"Intracranial mask, whose volume is the TIV: {TIV_SOURCES['networks']}"
                       + (f"; in skull-stripped inputs, {TIV_SOURCES['skull-stripping']}"
                          if stripping_rule else ""),
        "Sources": [preprocs[reference], template_uri("res-1_desc-brain_mask.nii.gz"),
                    template_uri("res-2_T1w.nii.gz")]}, desc="tiv")
    if settings.save_probabilities:
        sink("ds_probs", "probs", "probseg", {
            **on_reference, "Description": f"Fused probabilities of the {task} classes along "
                                           f"the 4th axis, in the order of desc-{task}_dseg.tsv"},
             desc=task)

    def probseg(space: str | None, tissue: str) -> dict:
        name = TISSUE_NAMES[tissue]
        if space is None:
            covers = dict(class_table(TISSUE_CONVENTION[task]))[tissue]
            return {**on_reference, "Description": f"Probability of {covers}{how}; 0 "
                                                   "outside the TIV mask (desc-tiv)"}
        return {"SpatialReference": template_uri("res-2_T1w.nii.gz"),
                "Resolution": {"2": "2 mm isotropic voxels, the template's res-2 grid"},
                "Sources": [uri("probseg", label=tissue)],
                "Description": f"Probability of {name} in {space}, modulated: warped by a "
                               "nonlinear (SyN) registration and multiplied by its Jacobian "
                               f"determinant, so that it keeps the subject's {name} volume"}
    spaces = [(None, "probsegs", {})] + [
        (space, "template_probsegs", {"space": space, "res": "2", "desc": "modulated"})
        for space in settings.output_spaces]
    for space, field, entities in spaces:
        tag = f"_{space}" if space else ""
        for i, tissue in enumerate(TISSUES):
            select = pe.Node(niu.Select(index=i), name=f"select_{tissue}{tag}",
                             run_without_submitting=True)
            workflow.connect(inputnode, field, select, "inlist")
            node = pe.Node(DerivativesDataSink(suffix="probseg", label=tissue, **common,
                                               metadata=probseg(space, tissue), **entities),
                           name=f"ds_probseg_{tissue}{tag}", run_without_submitting=True)
            workflow.connect(select, "out", node, "in_file")
            sinks.append(node)
    for modality in modalities:
        acq, suffix = PREPROC_NAMES[modality]
        metadata = {**reference_grid,
                    "Description": "The input, bias-corrected (ANTs N4)",
                    "Sources": [raw_uri(settings.bids_dir, images[modality])]}
        if modality != reference:
            metadata["Description"] += (f", rigidly registered to the {reference} image and "
                                        "resampled on its grid")
            metadata["Sources"].append(preprocs[reference])
        # SkullStripped: whether the input, and so its bias-corrected copy, looks stripped
        stripped = pe.Node(SkullStripped(in_file=str(images[modality]), metadata=metadata),
                           name=f"skull_stripped_{modality}")
        preproc = sink(f"ds_preproc_{modality}", f"{modality}_preproc", suffix,
                       acquisition=acq, desc="preproc")
        workflow.connect(stripped, "metadata", preproc, "metadata")
    volumes = sink("ds_volumes", "volumes", "volumes", desc=task, extension=".tsv")
    workflow.connect(inputnode, "volumes_meta", volumes, "metadata")

    # every written file, so that publishing waits for all of them
    written = pe.Node(niu.Merge(len(sinks)), name="written", run_without_submitting=True)
    outputnode = pe.Node(niu.IdentityInterface(fields=["out"]), name="outputnode")
    for i, node in enumerate(sinks, start=1):
        workflow.connect(node, "out_file", written, f"in{i}")
    workflow.connect(written, "out", outputnode, "out")
    return workflow
