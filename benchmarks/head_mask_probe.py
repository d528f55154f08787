"""How much of the brain the head mask keeps: the voxels outside it are 0 in the z-scores
the networks see (``preprocessing.zscore``).

Two thresholds of the deviation from the background level side by side: Otsu's on the
deviations (the app's head mask) and Otsu's on their logarithm (``log_otsu``; the app's in
preprocessing version 3, withdrawn: docs/results.md). On every
MRBrainS subject and modality, as the files come (the preprocessing masks them before N4):
labelled voxels (labels 1-8) outside the mask, and the mask's volume. On the BrainWeb
anatomies kept out of training, rendered by ``synth.render_volume`` (1 mm, each contrast,
whole head and skull-stripped): brain voxels (GM, WM, CSF) outside the mask, and the mask's
volume beside the head's (or, stripped, the non-zero voxels').

    python benchmarks/head_mask_probe.py --mrbrains ../shared/data/mrbrains18 \\
        --brainweb ../shared/data/brainweb20
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nibabel as nib
import numpy as np
from skimage.filters import threshold_otsu

from mixnet_bids.evaluation.markdown import table as markdown_table
from mixnet_bids.preprocessing import head_mask
from mixnet_bids.training.recipes import BRAINWEB_HELD_OUT
from mixnet_bids.training.synth import (
    RENDER_INTENSITIES,
    fill_holes_2d,
    load_label_volumes,
    render_volume,
)

#: ``log_otsu`` adds this share of the largest deviations (99.9th percentile) to every
#: deviation before the logarithm, so that exact zeros (a resampled or zero-filled
#: background) stay finite and below any tissue.
LOG_FLOOR = 1e-3


def log_otsu(deviation: np.ndarray) -> float:
    """Otsu's threshold of the logarithm of the deviations from the background level.

    Air and tissue differ by a factor rather than an offset: air is noise near 0, tissue
    spans a few-fold range. Otsu's threshold of the deviations themselves is drawn up by the
    brightest tissue (scalp fat in a T1w head is two to three times as bright as the brain)
    and leaves dark CSF, and in IR nulled tissue, outside the head. The logarithm also
    spreads the background noise: where a bias field and a contrast change lift it, the
    threshold falls into it.
    """
    # an image almost entirely at the background level: the largest deviation instead
    top = float(np.percentile(deviation, 99.9)) or float(deviation.max())
    floor = LOG_FLOOR * top
    return float(np.exp(threshold_otsu(np.log(deviation + floor)))) - floor


THRESHOLDS = {"Otsu": threshold_otsu, "Otsu of the log": log_otsu}
MRBRAINS_FILES = {"T1w": "reg_T1", "IR": "IR", "FLAIR": "FLAIR"}


def cells(data: np.ndarray, inside: np.ndarray, voxel_ml: float) -> list[str]:
    """``voxels of inside left out, mask mL`` per threshold."""
    out = []
    for rule in THRESHOLDS.values():
        mask = head_mask(data, rule)
        out.append(f"{int((inside & ~mask).sum())} ({mask.sum() * voxel_ml:.0f} mL)")
    return out


def mrbrains_rows(root: Path) -> list[list[str]]:
    rows = []
    subjects = [p for p in root.iterdir() if (p / "segm.nii.gz").is_file()]
    for subject in sorted(subjects, key=lambda p: int(p.name)):
        labels = np.asarray(nib.load(subject / "segm.nii.gz").dataobj)
        inside = (labels >= 1) & (labels <= 8)
        for modality, stem in MRBRAINS_FILES.items():
            path = subject / "orig" / f"{stem}.nii.gz"
            if not path.is_file():
                continue
            img = nib.load(path)
            voxel_ml = float(np.prod(img.header.get_zooms()[:3])) / 1000
            rows.append([f"MRBrainS {subject.name}", modality, f"{int(inside.sum())}",
                         *cells(img.get_fdata(dtype=np.float32), inside, voxel_ml)])
            print(f"{subject.name} {modality}: done", flush=True)
    return rows


def brainweb_rows(root: Path) -> list[list[str]]:
    rows = []
    for volume in load_label_volumes(root, list(BRAINWEB_HELD_OUT)):
        for contrast in RENDER_INTENSITIES:
            for stripped in (False, True):
                image, labels, affine = render_volume(volume, np.random.default_rng(0), 1.0,
                                                      contrast, skull_stripped=stripped)
                voxel_ml = abs(float(np.linalg.det(affine[:3, :3]))) / 1000
                brain = np.isin(labels, (1, 2, 3))
                truth = image != 0 if stripped else fill_holes_2d(labels > 0)
                rows.append([f"BrainWeb {volume.name}{', stripped' if stripped else ''}",
                             contrast, f"{int(brain.sum())} ({truth.sum() * voxel_ml:.0f} mL)",
                             *cells(image, brain, voxel_ml)])
                print(f"{volume.name} {contrast} {stripped}: done", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mrbrains", type=Path, help="the MRBrainS18 folder")
    parser.add_argument("--brainweb", type=Path, help="the BrainWeb label maps")
    args = parser.parse_args(argv)
    rows = (mrbrains_rows(args.mrbrains) if args.mrbrains else []) + \
        (brainweb_rows(args.brainweb) if args.brainweb else [])
    header = ["image", "contrast", "brain voxels (head or non-zero mL)",
              *(f"left out by {name} (mask mL)" for name in THRESHOLDS)]
    print(markdown_table(header, rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
