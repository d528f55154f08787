"""Automatic QC checks of one subject's results, each with what it means and what to do.

Two kinds of input: the numbers of the volumes table (``table_flags``: also applied to every
row of a cohort) and the images (``image_measures``: the segmentation against the template
brain mask registered to the subject, and against the zero background of the reference).
Every threshold below says what it was set from.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from mixnet_bids.conventions import TIV_REACH_MM
from mixnet_bids.labels import TISSUES
from mixnet_bids.preprocessing import signal_mask


@dataclass(frozen=True)
class Check:
    title: str
    meaning: str
    action: str


@dataclass(frozen=True)
class Flag:
    check: str      # a key of CHECKS
    message: str    # the numbers that raised it


CHECKS: dict[str, Check] = {
    "outside_brain": Check(
        "Tissue outside the template brain mask",
        "A large share of what the networks call tissue lies outside the MNI152 brain mask "
        "registered to the subject: tissue labelled on scalp, skull, eyes or neck, or a "
        "template registration that missed the head.",
        "Look at the segmentation and template figures: if the outline misses the brain, "
        "see 'Template registration'; if tissue covers the scalp, the image is unlike the "
        "training data (contrast, field of view): exclude it or preprocess it differently."),
    "zero_background": Check(
        "Tissue on zero background",
        "Voxels that are exactly 0 and connected to the image border (air set to 0 by the "
        "scanner or a skull-stripping tool) are labelled tissue. They carry no signal, so "
        "the app never labels them: this means the output does not belong to this input.",
        "Rerun the subject with --overwrite; report it if it persists."),
    "above_tiv": Check(
        "Tissue volumes above the TIV",
        "A tissue volume, or GM + WM + CSF, exceeds the total intracranial volume, which by "
        "definition contains them.",
        "The volumes table was edited or mixed with another run's: rerun the subject."),
    "fractions": Check(
        "Implausible volumes",
        "A tissue fraction of the TIV, GM + WM + CSF over the TIV, or the TIV itself is "
        "outside the range of adult heads: typically CSF labelled where cortex is (high "
        "CSF, low GM), a CSF rim around the brain, or a TIV grown over the scalp.",
        "Look at the segmentation figure where the labels change; compare the subject in "
        "the group report. Exclude the subject from volume analyses if the labels are wrong."),
    "registration": Check(
        "Template registration",
        "The MNI152 brain mask registered (affine) to the subject overlaps little with the "
        "brain the networks segment. Either the registration failed (the outline in the "
        "template figure does not follow the brain) or the segmentation did.",
        "If the outline misses the brain: check the image orientation (qform/sform) and the "
        "field of view, crop a very large field of view, then rerun. The TIV takes its "
        f"outer rim (up to {TIV_REACH_MM:g} mm beyond the networks' brain) from this "
        "registration: check the TIV outline."),
    "ambiguity": Check(
        "Networks hesitate",
        "On average the networks' two most likely classes are close: the image is unlike "
        "the images they were trained on (contrast, resolution, noise, bias), and the "
        "labels are unreliable even where they look plausible.",
        "Look at the hesitation and segmentation figures; treat the volumes with caution or "
        "exclude the subject."),
    "nmi": Check(
        "Modality registration",
        "A modality registered to the reference shares little information with it inside "
        "the head (normalised mutual information).",
        "Check that modality's figure: the outlines should follow its anatomy. If not, run "
        "without that modality."),
}

#: Mean margin (``volumes.tissue_margin`` inside the tissue) below which a run is flagged.
#: The normalised entropy of the same probabilities does not separate runs: its mean is
#: 0.52-0.61 in good and bad runs alike, because the networks spread probability over
#: classes even where they are right. The margin asks whether the first two classes are
#: close. Measured with the former 3-label networks on T1w alone, with the GM Dice against
#: the manual labels in brackets: MRBrainS 1, 4, 5 and 14 as acquired 0.452-0.476
#: (0.78-0.83); MRBrainS 1 resampled to 1 mm 0.441 (0.71), also skull-stripped 0.429 (0.71);
#: a BrainWeb head rendered MPRAGE-like 0.419 (0.83). Failed runs: MRBrainS 1 at 1 mm with a
#: strong bias field and gamma 0.6 0.400 (0.63); the BrainWeb head skull-stripped 0.389
#: (0.61). The cut sits between them. The demo's MNI152 template, an average of scans, gives
#: 0.402 and is flagged. The shipped fine networks (wholebrain, the full generalisation
#: benchmark of 2026-12-05: 18 runs, GM Dice 0.71-0.93, none failed) give 0.470-0.648, the
#: demo 0.604: no good run is flagged, but without a failed run the cut is not calibrated
#: for them and may miss failures.
MARGIN_WARN = 0.41
#: Registration NMI below which the report warns. Measured as RegistrationQC computes it
#: (bias-corrected images inside the head mask), MRBrainS subject 1: registered IR 1.040 and
#: FLAIR 1.057; shifted by 1 / 2 / 4 voxels IR 1.033 / 1.022 / 1.011, FLAIR 1.047 / 1.034 /
#: 1.019. Lower for a modality with less contrast to the reference, so a warning, not a
#: failure; the cohort report's robust z-scores compare like with like.
NMI_WARN = 1.03
#: Plausible tissue fractions of the TIV. Adult GM is 0.35-0.55 of the TIV, WM 0.25-0.45 and
#: CSF 0.10-0.35 (more with age); the 3-label convention leaves the cerebellum and brainstem
#: (10-15 % of the TIV) out of GM and WM, hence the lower bounds. Good runs measured 0.35-0.40
#: GM, 0.24-0.28 WM, 0.20-0.24 CSF. Wide on purpose: a flag must mean something is wrong.
FRACTION_RANGES = {"GM": (0.25, 0.60), "WM": (0.15, 0.50), "CSF": (0.03, 0.40)}
#: Smallest plausible (GM + WM + CSF) / TIV: good runs of the former 3-label networks
#: 0.79-0.90 (their TIV added the whole template mask's cerebellum, brainstem and margins to
#: the tissues); the whole-brain fine networks with the TIV of ``conventions.tiv_mask``, the
#: generalisation benchmark's 18 runs, 0.85-0.94 (GM 0.38-0.50, WM 0.27-0.34, CSF
#: 0.13-0.24 of the TIV); in the 3label convention, which leaves the cerebellum and brainstem
#: out, MRBrainS subject 1 (tests/integration/test_pipeline.py) 0.86 with all modalities,
#: 0.79-0.81 from its T1w alone.
MIN_BRAIN_FRACTION = 0.70
#: Plausible TIV (mL): adults 1.1-2.1 L (the MNI152 brain 1.89 L), children from 2 years
#: above 0.9 L; a TIV grown over the scalp measured 3.2 L.
TIV_RANGE_ML = (800.0, 2300.0)
#: Slack (mL) for the rounding of the volumes table before a volume counts as above the TIV.
VOLUME_SLACK_ML = 0.5
#: Share of the segmented tissue (voxels) outside the registered template brain mask that
#: raises a flag: good runs 0.0-0.13 (the 1 mm MRBrainS T1w the most), networks labelling
#: the scalp 0.58.
MAX_OUTSIDE_BRAIN = 0.25
#: Dice of the registered template brain mask with the segmented tissue below which the
#: registration is flagged: good runs 0.88-1.0 (0.88 where the 3-label networks leave the
#: cerebellum to the background); scalp labelled as tissue 0.59. The MNI152 brain mask
#: against itself moved as a failed registration would: shifted by 10 / 20 mm 0.90 / 0.80,
#: rotated by 30 degrees 0.82, scaled by 0.8 or 1.25 0.68.
MIN_TEMPLATE_DICE = 0.80


def _finite(row: Mapping, key: str) -> float | None:
    value = row.get(key)
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def table_flags(row: Mapping) -> list[Flag]:
    """Flags from one row of a volumes table (any of its columns may be missing)."""
    flags = []
    tiv = _finite(row, "TIV_ml")
    if tiv is not None:
        above = [f"{c} {row[c]:.1f} mL" for c in (*(f"{t}_ml" for t in TISSUES), "brain_ml")
                 if _finite(row, c) is not None and row[c] > tiv + VOLUME_SLACK_ML]
        if above:
            flags.append(Flag("above_tiv", f"{', '.join(above)} > TIV {tiv:.1f} mL"))
        low, high = TIV_RANGE_ML
        if not low <= tiv <= high:
            flags.append(Flag("fractions", f"TIV {tiv:.0f} mL outside {low:.0f}-{high:.0f} mL"))
    for tissue, (low, high) in FRACTION_RANGES.items():
        value = _finite(row, f"{tissue}_fraction")
        if value is not None and not low <= value <= high:
            flags.append(Flag("fractions", f"{tissue}_fraction {value:.3f} outside "
                                           f"{low:.2f}-{high:.2f}"))
    brain = _finite(row, "brain_ml")
    if brain is not None and tiv and brain / tiv < MIN_BRAIN_FRACTION:
        flags.append(Flag("fractions", f"(GM + WM + CSF) / TIV {brain / tiv:.3f} < "
                                       f"{MIN_BRAIN_FRACTION}"))
    margin = _finite(row, "mean_margin")
    if margin is not None and margin < MARGIN_WARN:
        flags.append(Flag("ambiguity", f"mean_margin {margin:.3f} < {MARGIN_WARN}"))
    for column in row:
        value = _finite(row, column)
        if str(column).startswith("nmi_") and value is not None and value < NMI_WARN:
            flags.append(Flag("nmi", f"{column[4:]}: NMI {value:.3f} < {NMI_WARN}"))
    return flags


def image_measures(dseg: np.ndarray, template_mask: np.ndarray | None,
                   reference: np.ndarray, voxel_ml: float) -> dict[str, float]:
    """QC measures of a segmentation (labels, 0 background) on its reference grid.

    ``outside_brain``: share of the tissue voxels outside ``template_mask`` (the template
    brain mask registered to the subject); ``template_dice``: Dice of the two;
    ``zero_background_ml``: tissue on the reference's zero background
    (``preprocessing.signal_mask``). Without a template mask only the last.
    """
    tissue = np.asarray(dseg) > 0
    if reference.shape != tissue.shape:
        raise ValueError(f"dseg shape {tissue.shape} differs from the reference "
                         f"{reference.shape}")
    out = {"zero_background_ml": float((tissue & ~signal_mask(reference)).sum() * voxel_ml)}
    if template_mask is not None:
        brain = np.asarray(template_mask) > 0.5
        if brain.shape != tissue.shape:
            raise ValueError(f"template mask shape {brain.shape} differs from the dseg "
                             f"{tissue.shape}")
        n_tissue, n_brain = int(tissue.sum()), int(brain.sum())
        out["outside_brain"] = float((tissue & ~brain).sum() / n_tissue) if n_tissue else 0.0
        out["template_dice"] = (2.0 * float((tissue & brain).sum()) / (n_tissue + n_brain)
                                if n_tissue + n_brain else 0.0)
    return out


def image_flags(measures: Mapping[str, float]) -> list[Flag]:
    """Flags from ``image_measures``."""
    flags = []
    if measures.get("zero_background_ml", 0.0) > 0:
        flags.append(Flag("zero_background", f"{measures['zero_background_ml']:.1f} mL of "
                                             "tissue on zero background"))
    if measures.get("outside_brain", 0.0) > MAX_OUTSIDE_BRAIN:
        flags.append(Flag("outside_brain", f"{100 * measures['outside_brain']:.0f} % of the "
                                           "tissue outside the template brain mask (flagged "
                                           f"above {100 * MAX_OUTSIDE_BRAIN:.0f} %)"))
    if "template_dice" in measures and measures["template_dice"] < MIN_TEMPLATE_DICE:
        flags.append(Flag("registration", f"Dice of the template brain mask with the "
                                          f"segmented tissue {measures['template_dice']:.2f} "
                                          f"< {MIN_TEMPLATE_DICE}"))
    return flags


def flag_lines(flags: list[Flag]) -> list[str]:
    """One line per flag: the check's title and its numbers."""
    return [f"{CHECKS[f.check].title}: {f.message}" for f in flags]


def registration_scores(reference: str, head_mask: str,
                        registered: Mapping[str, str]) -> dict[str, float]:
    """``{'nmi_<modality>': NMI}``: each registered modality's normalised mutual
    information with the reference inside the head mask (all files on one grid)."""
    import nibabel as nib

    from mixnet_bids.evaluation.metrics import normalised_mutual_information

    ref = np.asarray(nib.load(reference).dataobj, np.float32)
    mask = np.asarray(nib.load(head_mask).dataobj) > 0
    return {f"nmi_{name}": round(normalised_mutual_information(
                ref, np.asarray(nib.load(path).dataobj, np.float32), mask), 4)
            for name, path in registered.items()}
