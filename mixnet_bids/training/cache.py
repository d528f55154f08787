"""Preprocessed-volume cache for training: the app's own preprocessing graph, run once.

Each labelled subject of a BIDS dataset goes through ``init_preproc_wf`` (N4, rigid
co-registration to the reference modality, z-scored channel stack) exactly as in the
app; the z-scores and the manual labels (on the reference grid) are stored, reoriented to
RAS+, in ``<cache>/sub-<id>[_ses-<id>].npz``, with the ``PREPROCESSING_VERSION`` that made
them: a file of another version (or of none, made before versions were stored) is made again,
so that a network never trains on z-scores the app no longer computes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from bids import BIDSLayout
from nibabel.processing import resample_from_to

from mixnet_bids.bids import DEFAULT_QUERIES, collect_modalities, subject_key
from mixnet_bids.inference.planes import canonical_zooms, to_canonical
from mixnet_bids.io import atomic_write
from mixnet_bids.preprocessing import PREPROCESSING_VERSION, load_3d

LOGGER = logging.getLogger(__name__)


@dataclass
class CachedSubject:
    """One preprocessed subject, RAS+ oriented."""

    name: str
    image: np.ndarray       # (X, Y, Z, 3) float32 z-scores, channels in MODALITIES order
    labels: np.ndarray      # (X, Y, Z) uint8 manual labels
    zooms: tuple[float, float, float]
    modalities: tuple[str, ...]


def subject_names(labels: list[str]) -> set[str]:
    """``sub-<label>`` names (as in ``CachedSubject.name``) of labels given with or without
    the ``sub-`` prefix."""
    return {f"sub-{label.removeprefix('sub-')}" for label in labels}


def run_preproc(images: dict[str, str], work_dir: str | Path, name: str) -> dict[str, str]:
    """Run the app's preprocessing graph on ``{modality: path}``: the z-score stack and the
    head mask, from the graph's ``outputnode``."""
    from mixnet_bids.runtime import prepare_runtime

    prepare_runtime()
    from nipype.interfaces import utility as niu
    from nipype.pipeline import engine as pe

    from mixnet_bids.workflows.preprocessing import init_preproc_wf

    preproc = init_preproc_wf(modalities=list(images), name="preproc")
    for modality, path in images.items():
        setattr(preproc.inputs.inputnode, modality, str(Path(path).absolute()))
    workflow = pe.Workflow(name=name, base_dir=str(Path(work_dir).absolute()))
    # the outputnode's consumer (Nipype drops an identity node that feeds nothing)
    collect = pe.Node(niu.Merge(2), name="collect")
    workflow.connect([(preproc, collect, [("outputnode.zstack", "in1"),
                                          ("outputnode.head_mask", "in2")])])
    graph = workflow.run(plugin="MultiProc", plugin_args={"n_procs": 2})
    zstack, head_mask = next(n for n in graph.nodes() if n.name == "collect").result.outputs.out
    return {"zstack": zstack, "head_mask": head_mask}


def labels_on_grid(labels_file: str | Path, reference: nib.Nifti1Image) -> np.ndarray:
    """Manual labels on the reference grid (nearest neighbour when the grids differ)."""
    labels = load_3d(labels_file)
    if labels.shape != reference.shape or not np.allclose(labels.affine, reference.affine,
                                                          atol=1e-3):
        labels = resample_from_to(labels, reference, order=0)
    return np.asarray(labels.dataobj).astype(np.uint8)


def build_cache(bids_dir: str | Path, labels_dir: str | Path, cache_dir: str | Path,
                work_dir: str | Path, subjects: list[str] | None = None) -> list[Path]:
    """Preprocess every labelled subject once; existing cache files are kept."""
    layout = BIDSLayout(str(bids_dir), validate=False)
    labels_layout = BIDSLayout(str(labels_dir), validate=False, is_derivative=True)
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for dseg in labels_layout.get(suffix="dseg", extension=[".nii", ".nii.gz"]):
        sub = dseg.entities["subject"]
        ses = dseg.entities.get("session")
        if subjects and sub not in subjects:
            continue
        key = subject_key(sub, ses)
        target = cache_dir / f"{key}.npz"
        written.append(target)
        made_by = cache_version(target)
        if made_by == PREPROCESSING_VERSION:
            continue
        if made_by is not None:
            LOGGER.warning("%s: made by preprocessing version %s, this code is version %d; "
                           "preprocessing it again", target, made_by or "unrecorded",
                           PREPROCESSING_VERSION)
        images = collect_modalities(layout, sub, ses, DEFAULT_QUERIES)
        if not images:
            raise ValueError(f"{dseg.path}: no T1w, IR or FLAIR image for {key}")
        LOGGER.info("preprocessing %s (%s)", key, ", ".join(images))
        # the version in the graph's name keeps Nipype from reusing another version's nodes
        outputs = run_preproc(images, work_dir, name=f"preproc_{key.replace('-', '_')}"
                                                     f"_v{PREPROCESSING_VERSION}")
        stack = nib.load(outputs["zstack"])
        labels = labels_on_grid(dseg.path, stack.slicer[..., 0])
        image, affine = to_canonical(stack.get_fdata(dtype=np.float32), stack.affine)
        labels, _ = to_canonical(labels, stack.affine)
        atomic_write(target, lambda tmp: np.savez(
            tmp, image=image.astype(np.float16), labels=labels, affine=affine,
            modalities=np.array(list(images)), preprocessing=PREPROCESSING_VERSION))
    return written


def cache_version(path: Path) -> int | None:
    """The ``PREPROCESSING_VERSION`` that made a cache file: ``None`` when there is no file,
    0 when the file records none."""
    if not path.exists():
        return None
    with np.load(path) as npz:
        return int(npz["preprocessing"]) if "preprocessing" in npz.files else 0


def load_cached(path: str | Path) -> CachedSubject:
    """Read one cache file."""
    with np.load(path) as npz:
        return CachedSubject(
            name=Path(path).stem,
            image=npz["image"].astype(np.float32),
            labels=npz["labels"],
            zooms=canonical_zooms(npz["affine"]),
            modalities=tuple(str(m) for m in npz["modalities"]),
        )

