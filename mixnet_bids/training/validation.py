"""Validation scores for the learning curves: one plane's network on volumes it never saw.

Two kinds of validation volume:
- a held-out MRBrainS subject (cross-validation folds), scored in the MRBrainS 3 labels;
- held-out BrainWeb anatomies rendered as 1 mm MPRAGE-like T1w (``synth.render_volume``, a
  procedure unlike the training synthesis), scored in the whole-brain tissues. The shipped
  networks train on every MRBrainS subject, so these are their validation set.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mixnet_bids.conventions import convention_probabilities
from mixnet_bids.evaluation.metrics import tissue_dice as evaluation_dice
from mixnet_bids.inference.planes import to_canonical
from mixnet_bids.inference.predict import predict_plane
from mixnet_bids.labels import TISSUES, map_labels
from mixnet_bids.model import MixNet
from mixnet_bids.preprocessing import head_mask, zscore
from mixnet_bids.training.cache import CachedSubject

#: BrainWeb label -> whole-brain tissue (1 GM, 2 WM, 3 CSF; everything else background)
_BRAINWEB_TISSUE = {1: 3, 2: 1, 3: 2}


@dataclass
class ValidationCase:
    """A volume and its reference tissues (0 background, 1 GM, 2 WM, 3 CSF, IGNORE_INDEX)."""

    name: str
    image: np.ndarray                  # (X, Y, Z, 3) canonical z-scores, absent channels 0
    reference: np.ndarray              # (X, Y, Z) uint8
    zooms: tuple[float, float, float]
    #: "wholebrain" or "3label" (cerebellum and brainstem background)
    convention: str


def mrbrains_case(subject: CachedSubject) -> ValidationCase:
    """A cached MRBrainS subject with all its modalities, in the MRBrainS 3 labels."""
    return ValidationCase(subject.name, subject.image, map_labels(subject.labels, "3label"),
                          subject.zooms, "3label")


def brainweb_cases(folder: Path, subjects: tuple[str, ...], spacing: float = 1.0,
                   seed: int = 0) -> list[ValidationCase]:
    """Held-out BrainWeb anatomies as 1 mm MPRAGE-like T1w, z-scored in the app's head mask."""
    from mixnet_bids.training.synth import load_label_volumes, render_volume

    cases = []
    for volume in load_label_volumes(Path(folder), list(subjects)):
        image, labels, affine = render_volume(volume, np.random.default_rng(seed), spacing)
        labels, _ = to_canonical(labels, affine)
        image, affine = to_canonical(image, affine)
        channels = np.zeros(image.shape + (3,), np.float32)
        channels[..., 0] = zscore(image, head_mask(image))
        reference = np.zeros(labels.shape, np.uint8)
        for label, tissue in _BRAINWEB_TISSUE.items():
            reference[labels == label] = tissue
        cases.append(ValidationCase(volume.name, channels, reference,
                                    (spacing, spacing, spacing), "wholebrain"))
    return cases


def tissue_dice(model: MixNet, task: str, cases: list[ValidationCase],
                plane: str) -> dict[str, float]:
    """Mean Dice per tissue of one plane's network over ``cases``."""
    scores = {t: [] for t in TISSUES}
    was_training = model.training
    for case in cases:
        head = np.any(case.image != 0, axis=-1)
        probs = predict_plane(model, case.image, head, case.zooms, plane)
        pred = np.argmax(convention_probabilities(probs, task, case.convention), axis=-1)
        for tissue, value in evaluation_dice(pred, case.reference).items():
            scores[tissue].append(value)
    model.train(was_training)
    # a tissue absent from every case's reference and prediction has no Dice (NaN)
    return {t: float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
            for t, v in scores.items()}


def main(argv: list[str] | None = None) -> int:
    """Score weight files on the validation sets, each set apart (probes in docs/results.md):

        python -m mixnet_bids.training.validation WEIGHTS.pt ... --brainweb DIR \\
            --cache cache --mrbrains-subjects 1
    """
    import argparse

    from mixnet_bids.inference.weights import load_model
    from mixnet_bids.training.cache import load_cached
    from mixnet_bids.training.recipes import BRAINWEB_HELD_OUT

    parser = argparse.ArgumentParser(description=main.__doc__.splitlines()[0],
                                     allow_abbrev=False)
    parser.add_argument("weights", type=Path, nargs="+", help="one plane's weight files")
    parser.add_argument("--brainweb", type=Path, help="BrainWeb label maps (held-out anatomies)")
    parser.add_argument("--cache", type=Path, help="training cache (MRBrainS subjects)")
    parser.add_argument("--mrbrains-subjects", nargs="*", default=[], metavar="LABEL")
    args = parser.parse_args(argv)
    sets = {}
    if args.brainweb:
        sets["BrainWeb held-out, whole brain"] = brainweb_cases(args.brainweb,
                                                                BRAINWEB_HELD_OUT[:2])
    for label in args.mrbrains_subjects:
        subject = load_cached(Path(args.cache) / "preproc" / f"sub-{label}.npz")
        sets[f"MRBrainS sub-{label}, 3 labels"] = [mrbrains_case(subject)]
    print("| weights | validation set | GM | WM | CSF |\n| --- | --- | --- | --- | --- |")
    for path in args.weights:
        model, meta = load_model(path)
        for name, cases in sets.items():
            dice = tissue_dice(model, meta["task"], cases, meta["plane"])
            print(f"| {path} | {name} | " + " | ".join(f"{dice[t]:.3f}" for t in TISSUES)
                  + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
