"""Preprocessing graph: N4 per modality, rigid co-registration, z-scored channel stack."""

from __future__ import annotations

from nipype.interfaces import utility as niu
from nipype.interfaces.ants import ApplyTransforms
from nipype.pipeline import engine as pe

from mixnet_bids.interfaces.preproc import HeadCrop, HeadMask, PasteCrop, SignalMask, ZScoreStack
from mixnet_bids.preprocessing import ants_threads, n4_interface, rigid_registration_interface


def choose_reference(modalities: list[str]) -> str:
    """The reference modality: T1w when present, else FLAIR, else IR."""
    for name in ("T1w", "FLAIR", "IR"):
        if name in modalities:
            return name
    raise ValueError(f"no usable modality among {modalities}")


def init_preproc_wf(*, modalities: list[str], name: str = "preproc_wf") -> pe.Workflow:
    """Bias-correct, co-register and z-score the available modalities.

    Each modality gets a head mask in its own space (background-level aware; a
    skull-stripped image's whole signal, see ``preprocessing.normalisation_mask``) that
    guides N4 (run on the mask's bounding box alone,
    ``HeadCrop``/``PasteCrop``) and, moved with the registration, bounds the z-scoring on
    the reference grid; and a signal mask (all but its zero background,
    see ``preprocessing.signal_mask``), moved the same way. Every ANTs step runs with
    ``preprocessing.ANTS_THREADS`` threads, whatever the machine, so the results do not
    depend on it.

    Workflow Graph
        .. workflow::

            from mixnet_bids.workflows.preprocessing import init_preproc_wf
            wf = init_preproc_wf(modalities=["T1w", "FLAIR"])

    Inputs
        one field per modality, named as in ``modalities`` (``T1w``, ``IR``, ``FLAIR``):
        the raw 3D image.

    Outputs
        ``<modality>_preproc``: the N4-corrected image on the reference grid;
        ``zstack``: 4D float32 z-scores in ``MODALITIES`` channel order;
        ``head_mask``: union of the head masks; ``reference``: the reference image;
        ``signal_masks``: each modality's signal mask on the reference grid (a list).
    """
    if not modalities:
        raise ValueError("at least one modality is needed")
    reference = choose_reference(modalities)
    ordered = [reference] + [m for m in modalities if m != reference]

    workflow = pe.Workflow(name=name)
    inputnode = pe.Node(niu.IdentityInterface(fields=ordered), name="inputnode")
    outputnode = pe.Node(
        niu.IdentityInterface(
            fields=[f"{m}_preproc" for m in ordered] + ["zstack", "head_mask", "reference",
                                                        "signal_masks"]),
        name="outputnode")
    merge = pe.Node(niu.Merge(len(ordered)), name="merge")
    merge_masks = pe.Node(niu.Merge(len(ordered)), name="merge_masks")
    merge_signal = pe.Node(niu.Merge(len(ordered)), name="merge_signal")
    stack = pe.Node(ZScoreStack(modalities=ordered), name="zscore", mem_gb=1.0)

    n4_reference = mask_reference = None
    for i, modality in enumerate(ordered, start=1):
        mask = pe.Node(HeadMask(), name=f"n4_mask_{modality}")
        signal = pe.Node(SignalMask(), name=f"signal_{modality}")
        crop = pe.Node(HeadCrop(), name=f"n4_crop_{modality}")
        n4 = pe.Node(n4_interface(), name=f"n4_{modality}", mem_gb=1.0)
        uncrop = pe.Node(PasteCrop(), name=f"n4_paste_{modality}")
        workflow.connect([
            (inputnode, mask, [(modality, "in_file")]),
            (inputnode, crop, [(modality, "in_file")]),
            (inputnode, signal, [(modality, "in_file")]),
            (mask, crop, [("out_file", "mask")]),
            (crop, n4, [("out_file", "input_image"), ("out_mask", "mask_image")]),
            (n4, uncrop, [("output_image", "in_file")]),
            (inputnode, uncrop, [(modality, "full_file")]),
        ])
        if modality == reference:  # first in ``ordered``
            n4_reference, mask_reference = uncrop, mask
            corrected, field = uncrop, "out_file"
            workflow.connect([
                (uncrop, outputnode, [("out_file", "reference")]),
                (mask, merge_masks, [("out_file", f"in{i}")]),
                (signal, merge_signal, [("out_file", f"in{i}")]),
            ])
        else:
            reg = pe.Node(rigid_registration_interface(), name=f"register_{modality}",
                          mem_gb=1.0)
            # the head mask drawn in the modality's own space follows it to the reference
            mask_to_ref = pe.Node(ApplyTransforms(interpolation="NearestNeighbor",
                                                  dimension=3, float=True, **ants_threads()),
                                  name=f"mask_to_reference_{modality}")
            workflow.connect([
                (n4_reference, reg, [("out_file", "fixed_image")]),
                (mask_reference, reg, [("out_file", "fixed_image_masks")]),
                (uncrop, reg, [("out_file", "moving_image")]),
                (mask, mask_to_ref, [("out_file", "input_image")]),
                (n4_reference, mask_to_ref, [("out_file", "reference_image")]),
                (reg, mask_to_ref, [("forward_transforms", "transforms")]),
                (mask_to_ref, merge_masks, [("output_image", f"in{i}")]),
            ])
            signal_to_ref = pe.Node(ApplyTransforms(interpolation="NearestNeighbor",
                                                    dimension=3, float=True,
                                                    **ants_threads()),
                                    name=f"signal_to_reference_{modality}")
            workflow.connect([
                (signal, signal_to_ref, [("out_file", "input_image")]),
                (n4_reference, signal_to_ref, [("out_file", "reference_image")]),
                (reg, signal_to_ref, [("forward_transforms", "transforms")]),
                (signal_to_ref, merge_signal, [("output_image", f"in{i}")]),
            ])
            corrected, field = reg, "warped_image"
        workflow.connect([
            (corrected, merge, [(field, f"in{i}")]),
            (corrected, outputnode, [(field, f"{modality}_preproc")]),
        ])

    workflow.connect([
        (merge, stack, [("out", "in_files")]),
        (merge_masks, stack, [("out", "in_masks")]),
        (stack, outputnode, [("out_file", "zstack"), ("out_mask", "head_mask")]),
        (merge_signal, outputnode, [("out", "signal_masks")]),
    ])
    return workflow
