"""``mixnet-bids-eval``: score segmentations against manual labels (MRBrainS18 metrics).

Pairs a derivatives folder's ``*_desc-<task>_dseg.nii.gz`` with the manual
``*_dseg.nii.gz`` of the same subject (and session) in a labels folder, writes one TSV row
per subject and label, and prints the mean per label. The task is the one the app's outputs
are of (the app writes one per run); ``--task`` chooses when a folder holds several.

    mixnet-bids-eval OUTPUT_DIR LABELS_DIR --out metrics.tsv
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from mixnet_bids.evaluation.metrics import evaluate
from mixnet_bids.inference.planes import canonical_zooms, to_canonical
from mixnet_bids.labels import SCORED_CLASSES


def _key(path: Path) -> str:
    parts = path.name.split("_")
    return "_".join(p for p in parts if p.startswith(("sub-", "ses-")))


def score_pair(pred_file: Path, ref_file: Path, task: str) -> list[dict]:
    """Metrics of one prediction file against one raw MRBrainS-style label file."""
    pred_img, ref_img = nib.load(pred_file), nib.load(ref_file)
    if pred_img.shape != ref_img.shape or not np.allclose(pred_img.affine, ref_img.affine,
                                                          atol=1e-3):
        raise ValueError(f"{pred_file}: grid {pred_img.shape} differs from {ref_file} "
                         f"{ref_img.shape}; resample the prediction to the label grid")
    pred, affine = to_canonical(np.asarray(pred_img.dataobj).astype(np.uint8), pred_img.affine)
    ref, _ = to_canonical(np.asarray(ref_img.dataobj).astype(np.uint8), ref_img.affine)
    return evaluate(pred, ref, task, canonical_zooms(affine), axial_axis=2)


def dseg_files(derivatives: Path) -> dict[str, list[Path]]:
    """The ``*_desc-<task>_dseg.nii*`` files below ``derivatives`` by scored task (one walk
    of the folder)."""
    found: dict[str, list[Path]] = {}
    for path in derivatives.rglob("*_dseg.nii*"):
        for task in SCORED_CLASSES:
            if f"_desc-{task}_dseg.nii" in path.name:
                found.setdefault(task, []).append(path)
    return {task: sorted(found[task]) for task in sorted(found)}


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and s.d. per label."""
    return table.groupby("label", sort=False)[["dice", "hd95_mm", "vs"]].agg(["mean", "std"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mixnet-bids-eval", description=__doc__.split("\n")[0],
                                     allow_abbrev=False)
    parser.add_argument("derivatives", type=Path, help="mixnet-bids output folder")
    parser.add_argument("labels", type=Path, help="folder with manual *_dseg.nii.gz")
    parser.add_argument("--task", choices=sorted(SCORED_CLASSES),
                        help="classes of the segmentations to score: the app's --task of "
                             "the run (default: the one task whose dseg files the folder "
                             "holds; wholebrain leaves MRBrainS' cerebellum and brainstem "
                             "unscored, it does not split them)")
    parser.add_argument("--out", type=Path, help="TSV to write (default: print only)")
    args = parser.parse_args(argv)
    found = dseg_files(args.derivatives)
    if args.task is None:
        if len(found) != 1:
            held = (f"dseg files of {', '.join(found)}" if found
                    else "no *_desc-<task>_dseg.nii[.gz] files")
            print(f"mixnet-bids-eval: {args.derivatives} holds {held}; pass --task (one of "
                  f"{', '.join(sorted(SCORED_CLASSES))})", file=sys.stderr)
            return 1
        (args.task,) = found
    refs = {_key(p): p for p in args.labels.rglob("*_dseg.nii*")}
    rows = []
    for pred in found.get(args.task, []):
        key = _key(pred)
        if key not in refs:
            continue
        for row in score_pair(pred, refs[key], args.task):
            rows.append({"subject": key, **row})
    if not rows:
        print(f"mixnet-bids-eval: no {args.task} dseg in {args.derivatives} matches a manual "
              f"label file in {args.labels} (the manual labels are *_dseg.nii[.gz] files named "
              f"by sub-<label>[_ses-<label>])", file=sys.stderr)
        return 1
    table = pd.DataFrame(rows)
    if args.out:
        table.to_csv(args.out, sep="\t", index=False, float_format="%.4f")
    print(summarise(table).round(4).to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
