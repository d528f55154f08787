"""Probe of inference-time choices on the generalisation benchmark's cases: plane weights,
and test-time left-right mirroring, scored without retraining.

It reads what one app run left in its work folder (``-w``): the z-score stack and the head
mask that the networks see, and the signal mask. Every plane's network runs on them as the
app runs it (``predict.predict_plane``, the shipped weights, the host's precision), once as
is and once on the left-right mirrored volume (mirrored back before averaging). The fused
whole-brain dseg of each variant is scored against the benchmark's reference: GM, WM and CSF
Dice, on the voxels the reference does not ignore. It mirrors the whole volume itself, so
that the plain and mirrored runs of each plane can be fused in every combination (the app's
``predict_plane(mirror=True)`` mirrors the head's box, the same function: both gave 0.9297 /
0.9456 / 0.7081 on BrainWeb 05); it holds six full-grid probability volumes (a few GB).

    mixnet-bids runs/bench-generalisation/brainweb/bids runs/probes/tta/out participant \\
        --participant-label 05 -w runs/probes/tta/work-brainweb/05
    python benchmarks/inference_probe.py --work runs/probes/tta/work-brainweb/05 \\
        --reference runs/bench-generalisation/brainweb/truth/sub-05_dseg.nii.gz
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from mixnet_bids.conventions import convention_probabilities
from mixnet_bids.evaluation.metrics import dice
from mixnet_bids.inference.planes import PLANES, canonical_zooms, to_canonical
from mixnet_bids.inference.precision import choose_precision
from mixnet_bids.inference.predict import fuse, predict_plane
from mixnet_bids.inference.weights import load_model, networks_for
from mixnet_bids.labels import TISSUES

#: Plane weights (sagittal, coronal, axial) scored.
WEIGHTINGS = {"1:1:4": (1, 1, 4), "1:1:2": (1, 1, 2), "1:1:1": (1, 1, 1),
              "axial": (0, 0, 1)}


def canonical(path: Path) -> tuple[np.ndarray, np.ndarray]:
    img = nib.load(str(path))
    return to_canonical(np.asarray(img.dataobj, dtype=np.float32), img.affine)


def probe_planes(work: Path, precision: str) -> tuple[dict, dict, np.ndarray]:
    """``({plane: probs}, {plane: mirrored-run probs}, signal)`` on the canonical grid."""
    (zstack,) = work.rglob("*_zstack.nii.gz")
    (head,) = work.rglob("*_headmask.nii.gz")
    (signal,) = work.rglob("*_signal.nii.gz")
    image, affine = canonical(zstack)
    mask = canonical(head)[0] > 0
    zooms = canonical_zooms(affine)
    _, files = networks_for("wholebrain", list(PLANES), "v3")
    plain, mirrored = {}, {}
    for plane in PLANES:
        model, _ = load_model(files[plane])
        start = time.perf_counter()
        plain[plane] = predict_plane(model, image, mask, zooms, plane, precision=precision)
        mirror = predict_plane(model, image[::-1].copy(), mask[::-1].copy(), zooms, plane,
                               precision=precision)
        mirrored[plane] = np.ascontiguousarray(mirror[::-1])
        print(f"  {plane}: {time.perf_counter() - start:.1f} s for both runs", flush=True)
    return plain, mirrored, canonical(signal)[0] > 0


def score(probs: np.ndarray, signal: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Whole-brain dseg of fine-class ``probs`` (zero background kept background), Dice."""
    probs = convention_probabilities(probs, "fine", "wholebrain")
    dseg = np.where(signal, np.argmax(probs, axis=-1), 0)
    keep = reference <= len(TISSUES)
    return {t: round(dice(dseg[keep] == i + 1, reference[keep] == i + 1), 4)
            for i, t in enumerate(TISSUES)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="an app run's work folder")
    parser.add_argument("--reference", type=Path, required=True,
                        help="the benchmark's truth/sub-<label>_dseg.nii.gz of that case")
    parser.add_argument("--out", type=Path, help="append the scores to this JSON-lines file")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    _, files = networks_for("wholebrain", list(PLANES), "v3")
    precision = choose_precision("auto", files, torch.device("cpu"), "wholebrain")[0]
    plain, mirrored, signal = probe_planes(args.work, precision)
    reference = canonical(args.reference)[0].astype(np.uint8)
    both = {p: 0.5 * (plain[p] + mirrored[p]) for p in PLANES}
    rows = {}
    for name, weights in WEIGHTINGS.items():
        w = dict(zip(PLANES, weights))
        rows[name] = score(fuse(plain, w), signal, reference)
        rows[name + " mirrored"] = score(fuse(both, w), signal, reference)
        if name == "1:1:4":
            axial_only = {**plain, "axial": both["axial"]}
            rows[name + " axial mirrored"] = score(fuse(axial_only, w), signal, reference)
    for name, row in rows.items():
        print(f"{name:20s} " + " ".join(f"{t} {v:.4f}" for t, v in row.items()))
    if args.out:
        with open(args.out, "a") as handle:
            handle.write(json.dumps({"work": str(args.work), "precision": precision,
                                     "scores": rows}) + "\n")


if __name__ == "__main__":
    main()
