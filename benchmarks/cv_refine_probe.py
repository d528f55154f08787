"""The intensity refinement on the cross-validation's held-out subjects: real scans that the
networks of their fold never saw, so the honest test of what the refinement does on MRBrainS
(the generalisation benchmark's MRBrainS cases are training subjects of the shipped
networks).

For each held-out subject whose fold has all three planes, the fold's networks predict the
subject as the cross-validation scores it (``crossval.fused_probabilities``: the cached,
N4-corrected, z-scored images), with all its modalities and with T1w alone (``--inputs``
names other subsets, e.g. ``IR+FLAIR FLAIR``; a subset the subject lacks is skipped). The
fused probabilities are scored as they are and refined as the app refines them: by its
reference image, the T1w when the inputs have one, else the FLAIR, else the IR
(``mixnet_bids.workflows.preprocessing.choose_reference``); in the MRBrainS 3 labels and the
whole-brain tissues. Dice only. (A refinement by every modality given, one Gaussian per
tissue over the co-registered images, was probed at ``bd3c53f`` and dropped:
``docs/results.md``.)

    python benchmarks/cv_refine_probe.py --cv checkpoints/wholebrain-synth-v2/cv/fine_v3 \\
        --cache cache --subjects 1 4 [--inputs IR+FLAIR FLAIR]
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
from mixnet_bids.workflows.preprocessing import choose_reference

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


def subsets(subject, inputs: list[str] | None) -> list[tuple[str, ...]]:
    """The modality subsets to probe: those of ``inputs`` (``"IR+FLAIR"`` and so on) that
    the subject has, in the order given, repeats dropped, each subset's modalities in the
    order of ``MODALITIES``; by default all its modalities, and T1w alone."""
    wanted = inputs or ["+".join(subject.modalities), "T1w"]
    out = []
    for names in wanted:
        parts = set(names.split("+"))
        keep = tuple(m for m in MODALITIES if m in parts)
        if parts <= set(subject.modalities) and keep not in out:
            out.append(keep)
    return out


def probe(subject, weights: dict[str, Path], inputs: list[str] | None = None
          ) -> list[list[str]]:
    """Rows ``[subject, modalities, method, task, Dice]`` of one held-out subject."""
    rows = []
    groups = refinement_grouping("fine")
    for keep in subsets(subject, inputs):
        reference = choose_reference(list(keep))
        image = subject.image[..., MODALITIES.index(reference)]
        fused, net_task = fused_probabilities(subject, weights, keep)
        methods = {"networks": fused,
                   f"refined by {reference}": refine(fused.copy(), image, groups)[0]}
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
    parser.add_argument("--inputs", nargs="+", metavar="MODALITIES",
                        help="modality subsets such as IR+FLAIR or FLAIR (default: all the "
                             "subject's modalities, and T1w alone)")
    args = parser.parse_args(argv)
    unknown = {m for names in args.inputs or [] for m in names.split("+")} - set(MODALITIES)
    if unknown:
        parser.error(f"--inputs: unknown modality {', '.join(sorted(unknown))}; "
                     f"choose from {', '.join(MODALITIES)}, joined by +")
    rows = []
    for subject, weights in finished_folds(args.cv, args.cache, args.subjects):
        rows += probe(subject, weights, args.inputs)
    header = ["subject", "modalities", "method", "classes", "Dice GM / WM / CSF"]
    print(markdown_table(header, rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
