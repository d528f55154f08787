"""Output conventions: the classes the app writes, which voxels each covers, and how they
come from the networks' fused probabilities.

The user chooses the convention (``--task``): ``wholebrain`` (GM, WM and CSF in the
cerebrum, cerebellum and brainstem), ``3label`` (the MRBrainS challenge's GM, WM and CSF:
the cerebellum and brainstem are background) or ``8label`` (the MRBrainS structures).
Each convention is a grouping of the fine classes (``labels.CONVENTIONS``), so fine
networks give every convention by summing probabilities; the older 3label and 8label
networks give their own convention only (and 8label networks also the 3label tissues).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage

from mixnet_bids.inference.predict import normalised_entropy
from mixnet_bids.labels import (
    CLASS_NAMES,
    CONVENTIONS,
    TASK_CLASSES,
    TISSUES,
    convention_matrix,
    to_3label,
)
from mixnet_bids.refinement import refine

#: The convention whose GM/WM/CSF a convention reports (the probseg maps and volumes):
#: the 8 MRBrainS structures report the MRBrainS tissues.
TISSUE_CONVENTION: dict[str, str] = {"wholebrain": "wholebrain", "3label": "3label",
                                     "8label": "3label"}
#: Abbreviation and title of each class of a convention (index = dseg value).
_TITLES: dict[str, tuple[tuple[str, str], ...]] = {
    "wholebrain": tuple(zip(TASK_CLASSES["3label"], CLASS_NAMES["3label"])),
    "3label": tuple(zip(TASK_CLASSES["3label"], CLASS_NAMES["3label"])),
    "8label": tuple(zip(TASK_CLASSES["8label"], CLASS_NAMES["8label"])),
}
#: Structures reported beside the tissues, by the network classes that make them up; only
#: networks that have those classes report them.
STRUCTURES: dict[str, dict[str, tuple[str, ...]]] = {
    "cerebellum": {"fine": ("cbGM", "cbWM"), "8label": ("CB",)},
    "brainstem": {"fine": ("BS",), "8label": ("BS",)},
}
#: How far (mm) beyond the networks' brain the registered template mask adds to the TIV
#: (``tiv_mask``). Measured on the 18 runs of the generalisation benchmark of 2026-12-05
#: (MRBrainS 1, 4, 5, 14 at 1 mm: whole head, skull-stripped, biased; three BrainWeb heads,
#: whole and skull-stripped), the TIV's volume against the true intracranial mask's: the
#: whole registered template mask added (the former definition) -3 % to +27 %, mean
#: absolute error 4.4 % (two affine registrations grew the mask over the skull: +18 %,
#: +27 %); the networks' brain alone -11 % to 0 % (they call a thin rim of outer CSF
#: background); the template within 2 / 3 / 4 / 5 mm of it: mean -1.7 / 0.0 / +0.8 /
#: +1.4 %, mean absolute error 3.0 / 2.7 / 2.9 / 3.1 %, range -6 to +4 / -4 to +8 / -3 to
#: +10 / -3 to +13 %. In-sample: the reach was chosen on these runs (7 heads), recomputed
#: from their outputs (made before the axial mirroring).
TIV_REACH_MM = 3.0
#: Slack (mm) on the reach: voxel sizes read from an affine carry float noise, and on a
#: 1 or 3 mm grid many voxels lie exactly ``TIV_REACH_MM`` away.
_REACH_SLACK_MM = 1e-3


def _covers(fine_class: str) -> str:
    """What one fine class covers, in words."""
    if fine_class == "BG":
        return "everything outside the brain and its CSF"
    return CLASS_NAMES["fine"][TASK_CLASSES["fine"].index(fine_class)].lower()


def class_table(convention: str) -> list[tuple[str, str]]:
    """``(abbreviation, name)`` per class of ``convention``; the name says which voxels the
    class covers, e.g. ``Gray matter = cerebral cortex + deep gray matter (...) + cerebellar
    cortex`` in ``wholebrain``."""
    return [(short, f"{title} = " + " + ".join(_covers(f) for f in group))
            for (short, title), group in zip(_TITLES[convention], CONVENTIONS[convention])]


def structure_coverage(structure: str, convention: str) -> str:
    """Where a structure's voxels are counted in ``convention``'s GM/WM/CSF, in words."""
    tissues = TISSUE_CONVENTION[convention]
    fine = STRUCTURES[structure]["fine"]
    counted = [name for name, group in zip(TISSUES, CONVENTIONS[tissues][1:])
               if set(fine) & set(group)]
    if counted:
        return f"included in {' and '.join(f'{t}_ml' for t in counted)} in this convention"
    return f"not included in {', '.join(f'{t}_ml' for t in TISSUES)}: background in the " \
           f"{tissues} convention"


def _grouping(networks: str, convention: str) -> np.ndarray:
    """``(n network classes, n convention classes)`` 0/1 matrix summing the networks'
    probabilities into the convention's classes."""
    if networks == "fine":
        return convention_matrix(convention)
    n = len(TASK_CLASSES[networks])
    if networks == convention:
        return np.eye(n, dtype=np.float32)
    if networks == "8label" and convention == "3label":
        groups = to_3label(np.arange(n, dtype=np.uint8), networks)
        return (groups[:, None] == np.arange(len(TASK_CLASSES["3label"]))).astype(np.float32)
    raise ValueError(f"{networks} networks cannot give the {convention} classes; "
                     "use fine networks")


def convention_probabilities(probs: np.ndarray, networks: str, convention: str) -> np.ndarray:
    """The networks' class probabilities ``(..., C)`` -> ``convention``'s ``(..., n)``."""
    return probs @ _grouping(networks, convention)


def structure_probabilities(probs: np.ndarray, networks: str) -> dict[str, np.ndarray]:
    """Cerebellum and brainstem probabilities, for networks that have those classes."""
    classes = TASK_CLASSES[networks]
    return {name: probs[..., [classes.index(c) for c in by_task[networks]]].sum(axis=-1)
            for name, by_task in STRUCTURES.items() if networks in by_task}


def tissue_labels(dseg: np.ndarray, convention: str) -> np.ndarray:
    """A convention's dseg -> its tissue labels (0 background, 1 GM, 2 WM, 3 CSF)."""
    if TISSUE_CONVENTION[convention] == convention:
        return dseg
    return to_3label(dseg.astype(np.uint8), convention)


@dataclass
class Segmentation:
    """What the app writes for one convention, on the reference grid."""

    #: ``(X, Y, Z, n)`` probabilities of the convention's classes (summing to 1)
    probs: np.ndarray
    #: argmax of ``probs`` (uint8; 0 background)
    dseg: np.ndarray
    #: normalised entropy of ``probs`` (0 certain, 1 uniform)
    uncertainty: np.ndarray
    #: the total intracranial volume's mask (see ``tiv_mask``)
    tiv: np.ndarray
    #: GM, WM, CSF probabilities of the tissue convention, 0 outside ``tiv``
    tissues: dict[str, np.ndarray]
    #: cerebellum and brainstem probabilities (when the networks give them), 0 outside ``tiv``
    structures: dict[str, np.ndarray]
    #: tissue labels, for conventions that are not themselves the 3 tissues (8label)
    tissue_dseg: np.ndarray | None
    #: the intensity refinement's fit (``refinement.fit_tissues``), None when it did not run
    refinement: dict | None = None


def tiv_mask(template_mask: np.ndarray, brain_probability: np.ndarray, dseg: np.ndarray,
             zooms: Sequence[float], reach_mm: float = TIV_REACH_MM) -> np.ndarray:
    """The TIV: every voxel the networks find more likely brain than not (and every voxel
    the dseg calls tissue), plus the voxels of the template's intracranial mask registered to
    the subject that lie within ``reach_mm`` of them (``zooms``: voxel sizes in mm).

    The networks' brain contains the segmented tissue by construction, so tissue volumes
    never exceed the TIV; the template adds the thin rim of outer CSF that the networks call
    background. Only near the brain: an affine registration that grows the mask over the
    skull must not grow the TIV (``TIV_REACH_MM`` says what this was measured on). Without
    any brain voxel, the template mask. The same for every convention of one set of networks
    (the networks' own background).
    """
    template = np.asarray(template_mask) > 0
    brain = (brain_probability > 0.5) | (dseg > 0)
    if not brain.any():
        return template
    distance = ndimage.distance_transform_edt(~brain, sampling=tuple(zooms))
    near = distance <= reach_mm + _REACH_SLACK_MM
    return brain | (template & near)


def refinement_grouping(networks: str) -> np.ndarray:
    """The tissues the intensity refinement fits (``refinement.refine``): fine networks'
    whole-brain tissues (every brain voxel takes part), else the MRBrainS tissues."""
    return _grouping(networks, "wholebrain" if networks == "fine" else "3label")


def brain_only(fused: np.ndarray, inside: np.ndarray, groups: np.ndarray) -> None:
    """Inside ``inside``, the probability of the background class (0) moved, in place, to
    the brain classes in the proportions the networks give them. Where the networks give
    the brain no probability at all, each tissue of ``groups`` (``(C, 4)``: background, GM,
    WM, CSF) takes a third, shared equally by its classes."""
    probs = fused[inside]
    probs[:, 0] = 0.0
    mass = probs.sum(axis=1, keepdims=True)
    tissues = groups[1:, 1:]                         # brain classes x tissues
    even = (tissues / tissues.sum(axis=0)).sum(axis=1) / tissues.shape[1]
    probs[:, 1:] = np.where(mass > 0, probs[:, 1:] / np.where(mass > 0, mass, 1.0), even)
    fused[inside] = probs


def stripping_rule(networks: str, trust_stripping: bool = True) -> bool:
    """Whether skull-stripped inputs take their stripping tool's brain as the brain
    (``segment``'s ``stripped``): unless the user says otherwise (``--ignore-stripping``),
    with fine networks, whose background is everything outside the brain. The older 3label
    networks' background also holds the cerebellum and brainstem, so it cannot apply."""
    return trust_stripping and networks == "fine"


def segment(fused: np.ndarray, networks: str, convention: str, template_mask: np.ndarray,
            zooms: Sequence[float], signal: np.ndarray | None = None,
            intensities: np.ndarray | None = None, stripped: bool = False) -> Segmentation:
    """Everything the app derives from the fused probabilities of ``networks``' classes.

    ``signal``: the voxels where some input image is not zero background (see
    ``preprocessing.signal_mask``); elsewhere the probability of background is set to 1, so
    the zero background of a skull-stripped input is never tissue. ``stripped``: the inputs
    are skull-stripped (``preprocessing.stripped_signal``), so their stripping tool has
    already said what is brain: every voxel of ``signal`` is tissue (``brain_only``; fine
    networks only, whose background is everything outside the brain), and the TIV is
    ``signal``. The networks and the refinement say which tissue. Tissue and structure
    probabilities are set to 0 outside the TIV (``tiv_mask``; ``zooms``: the voxel sizes in
    mm), so that GM + WM + CSF never exceeds it: the voxels this drops are more likely
    background than not, and the dseg calls them background too.

    ``intensities``: the N4-corrected reference image on the same grid; when given, the
    tissue split of the networks' brain is refined by a Gaussian model of its intensities
    (``refinement.refine``), and ``Segmentation.refinement`` records the fit.
    """
    fused = np.array(fused, dtype=np.float32)
    if signal is not None:
        if signal.shape != fused.shape[:-1]:
            raise ValueError(f"signal mask shape {signal.shape} differs from the "
                             f"probabilities {fused.shape[:-1]}")
        fused[~signal] = 0.0
        fused[~signal, 0] = 1.0
    groups = refinement_grouping(networks)
    if stripped:
        if signal is None or not stripping_rule(networks):
            raise ValueError("a skull-stripped input's brain needs its signal mask and fine "
                             f"networks (got {networks} networks)")
        brain_only(fused, signal, groups)
    fit = None
    if intensities is not None:
        fused, fit = refine(fused, intensities, groups)  # our copy
    probs = convention_probabilities(fused, networks, convention)
    probs /= np.maximum(probs.sum(axis=-1, keepdims=True), np.float32(1e-12))
    dseg = np.argmax(probs, axis=-1).astype(np.uint8)
    tiv = signal.copy() if stripped else tiv_mask(template_mask, 1.0 - fused[..., 0], dseg,
                                                     zooms)
    tissue_convention = TISSUE_CONVENTION[convention]
    if tissue_convention == convention:
        tissue_probs, tissue_dseg = probs, None
    else:
        tissue_probs = convention_probabilities(fused, networks, tissue_convention)
        tissue_probs /= np.maximum(tissue_probs.sum(axis=-1, keepdims=True),
                                   np.float32(1e-12))
        tissue_dseg = np.argmax(tissue_probs, axis=-1).astype(np.uint8)
    tissues = {t: tissue_probs[..., i + 1] * tiv for i, t in enumerate(TISSUES)}
    structures = {name: prob * tiv
                  for name, prob in structure_probabilities(fused, networks).items()}
    return Segmentation(probs=probs, dseg=dseg, uncertainty=normalised_entropy(probs),
                        tiv=tiv, tissues=tissues, structures=structures,
                        tissue_dseg=tissue_dseg, refinement=fit)
