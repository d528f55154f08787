"""Probe: on a thick-slice T1w, should the plane fusion weight the plane of the slices?

The default fusion (1:1:4, sagittal:coronal:axial) weights the axial network most, as the
paper did for MRBrainS' 3 mm axial slices: the plane in which the image is sharp. A scan
with thick coronal or sagittal slices is sharp in another plane; the networks of the other
two planes see slices stretched across the thick axis. This probe renders the held-out
BrainWeb heads, skull-stripped, in thick slices of each given orientation and thickness
(``synth.render_volume``, the generalisation benchmark's procedure for its condition (f)),
runs the app on each (one thread; its work folder kept), then every plane's network on what
the app's networks saw (``inference_probe.probe_planes``), and scores fusions against the
render's reference (whole-brain GM / WM / CSF Dice), each as the app finishes it
(``conventions.segment``: the stripped brain, the intensity refinement on the app's
N4-corrected image) and raw (the fused argmax inside the signal):

- ``1:1:4 (app)``: the app's default, the axial network mirrored;
- ``slice plane x4``: the plane of the slices weighted 4, the others 1, that plane mirrored;
- ``1:1:1``, all planes mirrored.

Rows go to ``<work>/scores.jsonl``; the table is printed.

    python benchmarks/slice_plane_probe.py --brainweb ../shared/data/brainweb20 \\
        --work runs/probes/slice-plane --slices coronal sagittal --thickness 1.5 3
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from generalisation import BRAINWEB_TISSUE, Case, app_command, save, tissue_codes
from inference_probe import canonical, probe_planes, score

from mixnet_bids.conventions import segment
from mixnet_bids.evaluation.metrics import dice
from mixnet_bids.inference.planes import PLANES, canonical_zooms
from mixnet_bids.inference.precision import choose_precision
from mixnet_bids.inference.predict import fuse
from mixnet_bids.inference.weights import networks_for
from mixnet_bids.labels import TISSUES
from mixnet_bids.preprocessing import stripped_signal
from mixnet_bids.training.recipes import BRAINWEB_HELD_OUT
from mixnet_bids.training.synth import load_label_volumes, render_volume

#: the RAS axis across each orientation's slices
SLICE_AXIS = {"sagittal": 0, "coronal": 1, "axial": 2}


def build(volume, slices: str, thickness: float, root: Path) -> Case:
    """The skull-stripped render of ``volume`` in ``thickness``-mm ``slices``, as a BIDS T1w."""
    spacing = [1.0, 1.0, 1.0]
    spacing[SLICE_AXIS[slices]] = thickness
    data, labels, affine = render_volume(volume, np.random.default_rng(0), spacing, "mprage",
                                         skull_stripped=True)
    label = volume.name.removeprefix("sub-")
    bids = root / "bids"
    bids.mkdir(parents=True, exist_ok=True)
    (bids / "dataset_description.json").write_text(json.dumps(
        {"Name": "slice-plane probe", "BIDSVersion": "1.9.0"}))
    t1w = save(data, affine, bids / f"sub-{label}" / "anat" / f"sub-{label}_T1w.nii.gz",
               np.float32)
    reference = save(tissue_codes(labels, BRAINWEB_TISSUE), affine,
                     root / "truth" / f"sub-{label}_dseg.nii.gz", np.uint8)
    return Case(f"{slices}-{thickness:g}mm", label, bids, t1w, reference, reference)


def fusions(plain: dict, mirrored: dict, slices: str) -> dict[str, dict]:
    """The compared fusions' probabilities."""
    both = {p: 0.5 * (plain[p] + mirrored[p]) for p in PLANES}
    app = {**plain, "axial": both["axial"]}
    sharp = {**plain, slices: both[slices]}
    return {"1:1:4 (app)": fuse(app, {"sagittal": 1, "coronal": 1, "axial": 4}),
            "slice plane x4": fuse(sharp, {p: 4 if p == slices else 1 for p in PLANES}),
            "1:1:1": fuse(both, {p: 1 for p in PLANES})}


def app_scores(probs: np.ndarray, work: Path, signal: np.ndarray,
               reference: np.ndarray) -> dict[str, float]:
    """Dice of the dseg the app derives from fused fine-class ``probs`` (``segment``, with
    the refinement on the app's N4-corrected image of ``work``)."""
    (corrected,) = work.rglob("*_T1w_corrected.nii.gz")
    (template,) = work.rglob("*desc-brain_mask_trans.nii.gz")
    intensities, affine = canonical(corrected)
    zooms = canonical_zooms(affine)
    dseg = segment(probs, "fine", "wholebrain", canonical(template)[0] > 0, zooms, signal,
                   intensities, stripped_signal(signal, zooms)).dseg
    keep = reference <= len(TISSUES)
    return {t: round(dice(dseg[keep] == i + 1, reference[keep] == i + 1), 4)
            for i, t in enumerate(TISSUES)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    parser.add_argument("--brainweb", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("runs/probes/slice-plane"))
    parser.add_argument("--slices", nargs="+", default=["coronal", "sagittal"],
                        choices=list(SLICE_AXIS))
    parser.add_argument("--thickness", nargs="+", type=float, default=[1.5, 3.0])
    parser.add_argument("--subjects", nargs="+", default=list(BRAINWEB_HELD_OUT))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    precision = choose_precision("auto", networks_for("wholebrain", list(PLANES), "v3")[1],
                                 torch.device("cpu"), "wholebrain")[0]
    volumes = load_label_volumes(args.brainweb, args.subjects)
    scores = args.work / "scores.jsonl"
    for slices in args.slices:
        for thickness in args.thickness:
            for volume in volumes:
                root = args.work / f"{slices}-{thickness:g}mm"
                case = build(volume, slices, thickness, root)
                work = root / "work" / case.subject
                shutil.rmtree(work, ignore_errors=True)
                command = app_command(case, root / "out", work, "wholebrain", None)
                with open(root / f"sub-{case.subject}.log", "w") as log:
                    if subprocess.call(command, stdout=log, stderr=subprocess.STDOUT):
                        raise SystemExit(f"mixnet-bids failed on {case.image}; see {log.name}")
                plain, mirrored, signal = probe_planes(work, precision)
                reference = canonical(case.reference)[0].astype(np.uint8)
                rows = {}
                for name, probs in fusions(plain, mirrored, slices).items():
                    rows[name] = app_scores(probs, work, signal, reference)
                    rows[name + ", raw"] = score(probs, signal, reference)
                shutil.rmtree(work, ignore_errors=True)
                with open(scores, "a") as handle:
                    handle.write(json.dumps({"case": case.condition, "subject": case.subject,
                                             "scores": rows}) + "\n")
                for name, row in rows.items():
                    print(f"{case.condition} sub-{case.subject} {name:20s} "
                          + " ".join(f"{t} {v:.4f}" for t, v in row.items()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
