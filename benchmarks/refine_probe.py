"""The intensity refinement's prior exponent, swept on the outputs of a generalisation
benchmark run made without it (``mixnet-bids --no-refine``).

For every case of the run, the app's GM/WM/CSF probseg maps (background: the rest) and its
N4-corrected T1w (``desc-preproc``) go through ``refinement.refine`` once per exponent, and
the labels are scored against the benchmark's reference, with the tissue Dice the app wrote
(exponent "none") beside them. The refinement of the app works on the fine classes' fused
probabilities before the TIV bounds them; on the tissue maps the fit is the same but for
voxels outside the TIV, which carry no tissue here.

With ``--stripped-brain``, skull-stripped cases (``SkullStripped`` in the app's
``desc-preproc_T1w.json``) first take every non-zero voxel of their input as tissue
(``conventions.brain_only``), as the app does unless ``--ignore-stripping``; there, voxels
outside the run's TIV carry no tissue shares and take a third of each tissue.

    python benchmarks/generalisation.py --mrbrains ../shared/data/mrbrains18 \\
        --brainweb ../shared/data/brainweb20 --work runs/bench-norefine \\
        --out runs/bench-norefine/results --app-args=--no-refine
    python benchmarks/refine_probe.py runs/bench-norefine --exponents 1 2 4 6 8 16
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from mixnet_bids.conventions import brain_only
from mixnet_bids.evaluation.markdown import table as markdown_table
from mixnet_bids.evaluation.metrics import tissue_dice
from mixnet_bids.labels import TISSUES
from mixnet_bids.preprocessing import signal_mask
from mixnet_bids.refinement import refine


def load(path: Path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj)


def cases(work: Path) -> list[tuple[str, str, Path, Path]]:
    """``(condition, subject, anat folder, reference)`` of every case the run has."""
    found = []
    for reference in sorted(work.glob("*/truth/sub-*_dseg.nii.gz")):
        condition, subject = reference.parents[1].name, reference.name.split("_")[0]
        anat = work / condition / "mixnet-bids" / "out" / subject / "anat"
        if anat.is_dir():
            found.append((condition, subject, anat, reference))
    return found


def tissue_maps(anat: Path, subject: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(background/GM/WM/CSF probabilities, the preprocessed T1w, the app's dseg)``."""
    tissues = np.stack([load(anat / f"{subject}_label-{t}_probseg.nii.gz") for t in TISSUES],
                       axis=-1).astype(np.float32)
    background = np.clip(1.0 - tissues.sum(axis=-1, keepdims=True), 0.0, 1.0)
    (dseg,) = anat.glob(f"{subject}_desc-*_dseg.nii.gz")
    return (np.concatenate([background, tissues], axis=-1),
            load(anat / f"{subject}_desc-preproc_T1w.nii.gz").astype(np.float32), load(dseg))


def stripped_signal_of(work: Path, condition: str, subject: str,
                       anat: Path) -> np.ndarray | None:
    """The input's signal mask when the app found the input skull-stripped, else None."""
    sidecar = json.loads((anat / f"{subject}_desc-preproc_T1w.json").read_text())
    if not sidecar.get("SkullStripped"):
        return None
    sources = list((work / condition / "bids" / subject / "anat").glob("*_T1w.nii.gz"))
    if len(sources) != 1:
        raise SystemExit(f"{work / condition / 'bids' / subject}: no single T1w input; "
                         "--stripped-brain needs the benchmark's inputs beside its outputs")
    return signal_mask(load(sources[0]))


def sweep(work: Path, exponents: list[float], stripped_brain: bool = False) -> dict:
    """``{condition: {exponent or "none": [Dice dicts]}}`` and the mean seconds."""
    scores: dict = {}
    seconds = []
    for condition, subject, anat, reference_path in cases(work):
        probs, image, dseg = tissue_maps(anat, subject)
        reference = load(reference_path)
        signal = stripped_signal_of(work, condition, subject, anat) if stripped_brain else None
        if signal is not None:
            brain_only(probs, signal, np.eye(4, dtype=np.float32))
            dseg = np.argmax(probs, axis=-1).astype(np.uint8)
        row = scores.setdefault(condition, {"none": []})
        row["none"].append(tissue_dice(dseg, reference))
        for exponent in exponents:
            start = time.perf_counter()
            refined, _ = refine(probs.copy(), image, np.eye(4, dtype=np.float32), exponent)
            seconds.append(time.perf_counter() - start)
            labels = np.argmax(refined, axis=-1).astype(np.uint8)
            row.setdefault(exponent, []).append(tissue_dice(labels, reference))
        print(f"{condition} {subject}: done", flush=True)
    return {"scores": scores, "seconds": float(np.mean(seconds)) if seconds else 0.0}


def markdown(result: dict, exponents: list[float]) -> str:
    header = ["condition", "no refinement", *(f"exponent {e:g}" for e in exponents)]
    rows = []
    for condition, row in result["scores"].items():
        cells = [condition]
        for key in ["none", *exponents]:
            means = [np.nanmean([d[t] for d in row[key]]) for t in TISSUES]
            cells.append(" / ".join(f"{m:.3f}" for m in means))
        rows.append(cells)
    return (markdown_table(header, rows) + f"\n\nDice GM / WM / CSF, mean over the subjects; "
            f"{result['seconds']:.1f} s per refinement on average.\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("work", type=Path, help="the benchmark's --work folder")
    parser.add_argument("--exponents", type=float, nargs="+", default=[1, 2, 4, 6, 8, 16])
    parser.add_argument("--stripped-brain", action="store_true",
                        help="in skull-stripped cases every non-zero voxel is tissue")
    args = parser.parse_args(argv)
    if not cases(args.work):
        raise SystemExit(f"{args.work}: no benchmark case with app outputs; run "
                         "benchmarks/generalisation.py --work there first")
    print(markdown(sweep(args.work, args.exponents, args.stripped_brain), args.exponents))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
