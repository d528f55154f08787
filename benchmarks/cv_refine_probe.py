"""The intensity refinement on the cross-validation's held-out subjects: real scans that the
networks of their fold never saw, so the honest test of what the refinement does on MRBrainS
(the generalisation benchmark's MRBrainS cases are training subjects of the shipped
networks).

For each held-out subject whose fold has all three planes, the fold's networks predict the
subject as the cross-validation scores it (``crossval.fused_probabilities``: the cached,
N4-corrected, z-scored images), with all its modalities and with T1w alone. The fused
probabilities are scored as they are and refined by the T1w (what the app does), in the
MRBrainS 3 labels and the whole-brain tissues. Dice only. (A refinement by every modality
given, one Gaussian per tissue over the co-registered images, was probed at ``bd3c53f``
and dropped: ``docs/results.md``.)

    python benchmarks/cv_refine_probe.py --cv checkpoints/wholebrain-synth-v2/cv/fine_v3 \\
        --cache cache --subjects 1 4
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from mixnet_bids.conventions import refinement_grouping
from mixnet_bids.evaluation.markdown import table as markdown_table
from mixnet_bids.evaluation.metrics import dice
from mixnet_bids.inference.planes import PLANES
from mixnet_bids.labels import IGNORE_INDEX, map_labels
from mixnet_bids.model import MODALITIES
from mixnet_bids.refinement import refine
from mixnet_bids.training.cache import load_cached
from mixnet_bids.training.crossval import fused_probabilities, labels_in

TASKS = ("3label", "wholebrain")


def fold_weights(cv: Path, subject: str) -> dict[str, Path] | None:
    """The fold's finished plane networks, or None while a plane is missing."""
    files = {p: cv / subject / p / f"mixnet_v3_fine_{p}.pt" for p in PLANES}
    return files if all(f.is_file() for f in files.values()) else None


def finished_folds(cv: Path, cache: Path, labels: list[str]):
    """``(cached held-out subject, its fold's plane networks)`` for each of ``labels`` whose
    fold has finished every plane; the others are named and skipped."""
    for label in labels:
        name = f"sub-{label.removeprefix('sub-')}"
        weights = fold_weights(cv, name)
        if weights is None:
            print(f"{name}: its fold has not finished every plane; skipped", flush=True)
            continue
        yield load_cached(cache / "preproc" / f"{name}.npz"), weights


def scores(pred: np.ndarray, labels: np.ndarray, task: str) -> tuple[float, ...]:
    """Dice of GM, WM, CSF (``task``'s classes 1-3) against raw MRBrainS labels."""
    ref = map_labels(labels, task)
    keep = ref != IGNORE_INDEX
    return tuple(dice((pred == k) & keep, (ref == k) & keep) for k in (1, 2, 3))


def probe(subject, weights: dict[str, Path]) -> list[list[str]]:
    """Rows ``[subject, modalities, method, task, Dice]`` of one held-out subject."""
    rows = []
    groups = refinement_grouping("fine")
    t1w = subject.image[..., MODALITIES.index("T1w")]
    for keep in (subject.modalities, ("T1w",)):
        fused, net_task = fused_probabilities(subject, weights, keep)
        methods = {"networks": fused, "refined by T1w": refine(fused.copy(), t1w, groups)[0]}
        for method, probs in methods.items():
            for task in TASKS:
                dices = scores(labels_in(probs, net_task, task), subject.labels, task)
                rows.append([subject.name, "+".join(keep), method, task,
                             " / ".join(f"{d:.3f}" for d in dices)])
        print(f"{subject.name} {'+'.join(keep)}: done", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cv", type=Path, required=True,
                        help="a recipe's cross-validation folder (one folder per subject)")
    parser.add_argument("--cache", type=Path, required=True, help="the preprocessing cache")
    parser.add_argument("--subjects", nargs="+", required=True)
    args = parser.parse_args(argv)
    rows = []
    for subject, weights in finished_folds(args.cv, args.cache, args.subjects):
        rows += probe(subject, weights)
    header = ["subject", "modalities", "method", "classes", "Dice GM / WM / CSF"]
    print(markdown_table(header, rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
