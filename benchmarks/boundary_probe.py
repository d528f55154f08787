"""Where each method puts the tissue boundaries on a BrainWeb render of the generalisation
benchmark: how often it calls a voxel GM, against the fraction of the voxel that GM fills.

The benchmark renders BrainWeb's 0.5 mm crisp anatomies into 1 mm voxels by averaging
(``synth.render_volume``, factor 2 per axis) and takes the majority label as the reference.
Here the 1 mm voxels made of GM and CSF only (the GM/CSF border) and those made of GM and WM
only (the GM/WM border) are binned by their GM fraction (0/8 to 8/8 of their 0.5 mm
sub-voxels; the pure voxels of bins 0 and 8 only where they touch a mixed voxel of that
border), and each method's dseg (tissue codes 1 GM, 2 WM, 3 CSF: the app's whole-brain
dseg, the benchmark's peers) gives, per bin, the share of voxels it calls GM. A method that
follows the partial volume switches near 4/8 (the reference: GM from 5/8 at the GM/CSF
border and from 4/8 at the GM/WM border, ties going to the lower BrainWeb label); one that
switches earlier at the GM/CSF border, or later at the GM/WM border, draws GM thicker than
the reference.

    python benchmarks/boundary_probe.py --brainweb ../shared/data/brainweb20 --subject 05 \\
        --dseg mixnet-bids=runs/bench-generalisation/brainweb/mixnet-bids/out/sub-05/anat/sub-05_desc-wholebrain_dseg.nii.gz \\
        atropos=runs/bench-generalisation/brainweb/peers/sub-05_method-atropos_mask-app_dseg.nii.gz
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from mixnet_bids.evaluation.markdown import table as markdown_table
from mixnet_bids.training.synth import block_sum, load_label_volumes

#: BrainWeb crisp labels of the three tissues, and the dseg codes of the same tissues.
BRAINWEB = {"CSF": 1, "GM": 2, "WM": 3}
DSEG_GM = 1
#: Sub-voxels per 1 mm voxel (0.5 mm labels, factor 2 per axis).
SUBVOXELS = 8


def gm_fractions(brainweb: Path, subject: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per 1 mm voxel of the benchmark's render: ``({border: GM sub-voxels, -1 off the
    border}, affine)`` for the ``"GM/CSF"`` and ``"GM/WM"`` borders; a pure voxel is on a
    border where it touches (6-connected) a mixed voxel of it."""
    (volume,) = load_label_volumes(brainweb, [subject])
    if not np.allclose(volume.zooms, 0.5):
        raise ValueError(f"BrainWeb {subject}: expected 0.5 mm labels, got {volume.zooms}")
    shape = tuple(n // 2 for n in volume.labels.shape)
    crisp = volume.labels[:shape[0] * 2, :shape[1] * 2, :shape[2] * 2]
    counts = {name: block_sum(crisp == value, [2, 2, 2], np.uint8)
              for name, value in BRAINWEB.items()}
    borders = {}
    for other in ("CSF", "WM"):
        only_two = counts["GM"] + counts[other] == SUBVOXELS
        gm = counts["GM"].astype(np.int16)
        mixed = only_two & (gm > 0) & (gm < SUBVOXELS)
        on_border = mixed | (only_two & ndimage.binary_dilation(mixed))
        borders[f"GM/{other}"] = np.where(on_border, gm, -1)
    scale = np.diag([2.0, 2.0, 2.0, 1.0])
    scale[:3, 3] = 0.5
    return borders, volume.affine @ scale


def gm_share(borders: dict[str, np.ndarray], dseg: np.ndarray) -> dict[str, list[float]]:
    """Per border, the share of voxels called GM in each GM-fraction bin (0..8)."""
    called = dseg == DSEG_GM
    return {border: [float(called[fraction == k].mean()) if (fraction == k).any()
                     else float("nan") for k in range(SUBVOXELS + 1)]
            for border, fraction in borders.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--brainweb", type=Path, required=True, help="BrainWeb label maps")
    parser.add_argument("--subject", required=True, help="BrainWeb subject, e.g. 05")
    parser.add_argument("--dseg", nargs="+", required=True, metavar="NAME=FILE",
                        help="tissue dsegs (1 GM, 2 WM, 3 CSF) on the benchmark's grid")
    args = parser.parse_args(argv)
    borders, affine = gm_fractions(args.brainweb, args.subject.removeprefix("sub-"))
    shares = {}
    for item in args.dseg:
        name, _, path = item.partition("=")
        img = nib.load(path)
        if img.shape != next(iter(borders.values())).shape or not np.allclose(
                img.affine, affine, atol=1e-3):
            raise SystemExit(f"{path}: not on the benchmark's 1 mm grid of BrainWeb "
                             f"{args.subject} (shape {img.shape}); pass the dseg of the "
                             "brainweb condition")
        shares[name] = gm_share(borders, np.asarray(img.dataobj))
    for border, fraction in borders.items():
        counts = [int((fraction == k).sum()) for k in range(SUBVOXELS + 1)]
        header = [f"{border} border: GM sub-voxels of 8", "voxels",
                  *(f"{name}: called GM" for name in shares)]
        rows = [[str(k), str(counts[k]), *(f"{shares[n][border][k]:.2f}" for n in shares)]
                for k in range(SUBVOXELS + 1)]
        print(markdown_table(header, rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
