"""Derivative writers: one small sink per output, all through ``DerivativesDataSink``."""

from __future__ import annotations

from pathlib import Path

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from mixnet_bids.config import Settings
from mixnet_bids.interfaces.bids import DerivativesDataSink
from mixnet_bids.labels import TISSUES

#: How each input modality's preprocessed image is named: (acq entity, suffix).
PREPROC_NAMES = {"T1w": (None, "T1w"), "IR": ("IR", "T1w"), "FLAIR": (None, "FLAIR")}


def init_outputs_wf(*, settings: Settings, subject: str, session: str | None,
                    modalities: list[str], base_directory: Path | None = None,
                    name: str = "outputs_wf") -> pe.Workflow:
    """Write one subject's derivatives under their BIDS names into ``base_directory``
    (default ``settings.output_dir``; the app stages them in the work dir).

    Workflow Graph
        .. workflow::

            from pathlib import Path
            from mixnet_bids.config import Settings
            from mixnet_bids.workflows.outputs import init_outputs_wf
            wf = init_outputs_wf(settings=Settings(Path("b"), Path("o"), Path("w")),
                                 subject="01", session=None, modalities=["T1w"])

    Inputs
        ``dseg`` (task classes), ``dseg3``, ``probs`` (4D), ``uncertainty``,
        ``probsegs`` (GM, WM, CSF), ``template_probsegs`` (modulated, per output space),
        ``tiv_mask``, ``volumes`` (+ ``volumes_meta``),
        ``<modality>_preproc``.

    Outputs
        ``outputnode.out``: the paths of all written files.
    """
    workflow = pe.Workflow(name=name)
    fields = ["dseg", "dseg3", "probs", "uncertainty", "probsegs", "template_probsegs",
              "tiv_mask", "volumes", "volumes_meta"] + [f"{m}_preproc" for m in modalities]
    inputnode = pe.Node(niu.IdentityInterface(fields=fields), name="inputnode")
    task = settings.task
    common = dict(base_directory=str(base_directory or settings.output_dir), subject=subject,
                  session=session)

    sinks = []

    def sink(name: str, field: str, suffix: str, **entities) -> pe.Node:
        node = pe.Node(DerivativesDataSink(suffix=suffix, **common, **entities),
                       name=name, run_without_submitting=True)
        workflow.connect(inputnode, field, node, "in_file")
        sinks.append(node)
        return node

    sink("ds_dseg", "dseg", "dseg", desc=task)
    if task != "3label":
        sink("ds_dseg3", "dseg3", "dseg", desc="3label")
    sink("ds_uncertainty", "uncertainty", "uncertainty", desc=task)
    sink("ds_tiv", "tiv_mask", "mask", desc="tiv")
    if settings.save_probabilities:
        sink("ds_probs", "probs", "probseg", desc=task)
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
                                               **entities),
                           name=f"ds_probseg_{tissue}{tag}", run_without_submitting=True)
            workflow.connect(select, "out", node, "in_file")
            sinks.append(node)
    for modality in modalities:
        acq, suffix = PREPROC_NAMES[modality]
        sink(f"ds_preproc_{modality}", f"{modality}_preproc", suffix, acquisition=acq,
             desc="preproc")
    volumes = sink("ds_volumes", "volumes", "volumes", desc=task, extension=".tsv")
    workflow.connect(inputnode, "volumes_meta", volumes, "metadata")

    # every written file, so that publishing waits for all of them
    outputnode = pe.Node(niu.Merge(len(sinks)), name="outputnode",
                         run_without_submitting=True)
    for i, node in enumerate(sinks, start=1):
        workflow.connect(node, "out_file", outputnode, f"in{i}")
    return workflow
