"""Where the cross-validation's errors are: which tissue each misclassified voxel of a
held-out subject is in the reference and in the prediction, and whether it lies on a border
of the two.

For each held-out subject whose fold has all three planes, the fold's networks predict the
subject as the cross-validation scores it (``crossval.fused_probabilities``, all its
modalities, the MRBrainS 3 labels); with ``--each-plane``, each plane's network alone too.
With ``--shipped``, the shipped networks predict it as well:
MRBrainS subjects are among their training data, so the two side by side separate what the
networks do not generalise from what they do not fit.

Each error is a pair (reference class -> predicted class), in mL. "On the border" means the
predicted class is in the reference within one voxel in the axial plane (the MRBrainS labels
were drawn on 3 mm axial slices): a disagreement on where a border lies, not a misread
region. Each error also names what it is made of: the MRBrainS structures of the reference
(the 8 labels) and the networks' most likely fine class, each with its share, and how sure
the networks were: the median probability they gave the predicted class there (low: a
hesitation that a small shift of the border would undo; near 1, a confident misreading).

    python benchmarks/cv_error_probe.py --cv checkpoints/wholebrain-synth-v2/cv/fine_v3 \\
        --cache cache --subjects 1 4 --shipped

``--dseg PRED REF`` reads the same errors off any tissue segmentation (0 background, 1 GM,
2 WM, 3 CSF; 255 in the reference not scored), e.g. the app's whole-brain dseg against a
generalisation benchmark's reference:

    B=runs/bench-generalisation/brainweb
    python benchmarks/cv_error_probe.py --dseg \\
        $B/mixnet-bids/out/sub-05/anat/sub-05_desc-wholebrain_dseg.nii.gz \\
        $B/truth/sub-05_dseg.nii.gz
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cv_refine_probe import finished_folds, scores  # noqa: E402

from mixnet_bids.conventions import convention_probabilities  # noqa: E402
from mixnet_bids.evaluation.markdown import table as markdown_table  # noqa: E402
from mixnet_bids.evaluation.metrics import tissue_dice  # noqa: E402
from mixnet_bids.inference.planes import PLANES, to_canonical  # noqa: E402
from mixnet_bids.inference.weights import weight_path  # noqa: E402
from mixnet_bids.labels import IGNORE_INDEX, TASK_CLASSES, map_labels  # noqa: E402
from mixnet_bids.training.crossval import fused_probabilities  # noqa: E402

CLASSES = ("background", "GM", "WM", "CSF")


def error_table(pred: np.ndarray, ref: np.ndarray, voxel_ml: float,
                ) -> dict[tuple[int, int], tuple[float, float]]:
    """``{(reference class, predicted class): (mL, mL of it on the border)}`` for every
    pair that differs, over the voxels whose reference is not ``IGNORE_INDEX``. A voxel is on
    the border when its predicted class occurs in the reference within one voxel in the
    plane of the first two axes."""
    scored = ref != IGNORE_INDEX
    out = {}
    for p in range(len(CLASSES)):
        near = ndimage.maximum_filter(ref == p, size=(3, 3, 1))
        for r in range(len(CLASSES)):
            if r == p:
                continue
            wrong = scored & (ref == r) & (pred == p)
            if wrong.any():
                out[(r, p)] = (wrong.sum() * voxel_ml, (wrong & near).sum() * voxel_ml)
    return out


def ranked(pred: np.ndarray, ref: np.ndarray, voxel_ml: float,
           ) -> tuple[list, list[str]]:
    """The errors of ``error_table``, largest first, and the cells of their summary row:
    all errors in mL and the share of them on a border."""
    errors = sorted(error_table(pred, ref, voxel_ml).items(), key=lambda e: -e[1][0])
    total = sum(ml for _, (ml, _) in errors)
    border = sum(b for _, (_, b) in errors)
    return errors, ["all errors", f"{total:.1f}", f"{border / total:.0%}" if total else "-"]


def composition(values: np.ndarray, names: tuple[str, ...], most: int = 2) -> str:
    """The ``most`` commonest of ``values`` (indices into ``names``) with their shares."""
    counts = np.bincount(values, minlength=len(names))
    order = np.argsort(counts)[::-1][:most]
    return ", ".join(f"{names[k]} {counts[k] / values.size:.0%}" for k in order if counts[k])


def probe(subject, networks: dict[str, dict[str, Path]], top: int) -> list[list[str]]:
    """Rows ``[subject, networks, Dice, error, mL, on the border, reference structures,
    predicted fine classes, median probability of the predicted class]`` of one subject:
    its ``top`` largest errors under each set of fine ``networks``."""
    ref = map_labels(subject.labels, "3label")
    structures = np.where(ref == IGNORE_INDEX, 0, subject.labels).astype(np.int64)
    voxel_ml = float(np.prod(subject.zooms)) / 1000.0
    rows = []
    for name, weights in networks.items():
        fused, net_task = fused_probabilities(subject, weights, subject.modalities)
        if net_task != "fine":
            raise ValueError(f"{name}: {net_task} networks; the probe reads fine classes")
        tissues = convention_probabilities(fused, net_task, "3label")
        pred = np.argmax(tissues, axis=-1)
        fine = np.argmax(fused, axis=-1)
        dices = " / ".join(f"{d:.3f}" for d in scores(pred, subject.labels, "3label"))
        errors, summary = ranked(pred, ref, voxel_ml)
        rows.append([subject.name, name, dices, *summary, "", "", ""])
        for (r, p), (ml, border) in errors[:top]:
            wrong = (ref == r) & (pred == p)
            rows.append(["", "", "", f"{CLASSES[r]} -> {CLASSES[p]}", f"{ml:.1f}",
                         f"{border / ml:.0%}",
                         composition(structures[wrong], TASK_CLASSES["8label"]),
                         composition(fine[wrong], TASK_CLASSES["fine"]),
                         f"{np.median(tissues[..., p][wrong]):.2f}"])
        print(f"{subject.name} {name}: done", flush=True)
    return rows


def dseg_rows(pred_file: Path, ref_file: Path, top: int) -> list[list[str]]:
    """The rows of ``probe`` for a tissue segmentation against a reference on its grid."""
    images = [nib.load(f) for f in (pred_file, ref_file)]
    pred, ref = (to_canonical(np.asarray(img.dataobj).astype(np.int64), img.affine)[0]
                 for img in images)
    if pred.shape != ref.shape or not np.allclose(images[0].affine, images[1].affine,
                                                  atol=1e-3):
        raise SystemExit(f"{pred_file} and {ref_file} are not on the same grid")
    ref = np.where(ref > 3, IGNORE_INDEX, ref)
    dices = " / ".join(f"{d:.3f}" for d in tissue_dice(pred, ref).values())
    voxel_ml = float(np.prod(images[0].header.get_zooms()[:3])) / 1000.0
    errors, summary = ranked(pred, ref, voxel_ml)
    rows = [[pred_file.name, "", dices, *summary, "", "", ""]]
    rows += [["", "", "", f"{CLASSES[r]} -> {CLASSES[p]}", f"{ml:.1f}", f"{border / ml:.0%}",
              "", "", ""] for (r, p), (ml, border) in errors[:top]]
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cv", type=Path,
                        help="a recipe's cross-validation folder (one folder per subject)")
    parser.add_argument("--cache", type=Path, help="the preprocessing cache")
    parser.add_argument("--subjects", nargs="+", default=[])
    parser.add_argument("--dseg", nargs=2, type=Path, action="append", default=[],
                        metavar=("PRED", "REF"),
                        help="a tissue segmentation and its reference (repeatable)")
    parser.add_argument("--shipped", action="store_true",
                        help="also predict with the shipped fine networks (trained on them)")
    parser.add_argument("--each-plane", action="store_true",
                        help="also each plane's network of the fold alone")
    parser.add_argument("--top", type=int, default=6, help="errors listed per prediction")
    args = parser.parse_args(argv)
    if args.subjects and not (args.cv and args.cache):
        parser.error("--subjects needs --cv and --cache")
    if not (args.subjects or args.dseg):
        parser.error("give --subjects (with --cv and --cache) or --dseg")
    rows = []
    for pred_file, ref_file in args.dseg:
        rows += dseg_rows(pred_file, ref_file, args.top)
    for subject, weights in finished_folds(args.cv, args.cache, args.subjects):
        networks = {"held out (its fold)": weights}
        if args.each_plane:
            networks.update({f"{p} alone (its fold)": {p: weights[p]} for p in PLANES})
        if args.shipped:
            networks["trained on (shipped)"] = {p: weight_path("fine", p, "v3") for p in PLANES}
        rows += probe(subject, networks, args.top)
    header = ["subject", "networks", "Dice GM / WM / CSF", "error (reference -> predicted)",
              "mL", "on the border", "in the reference", "networks' fine class",
              "median p(predicted)"]
    print(markdown_table(header, rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
