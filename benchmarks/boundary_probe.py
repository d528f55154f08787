"""Where each method puts the tissue boundaries on a BrainWeb render of the generalisation
benchmark: how often it calls a voxel GM, against the fraction of the voxel that GM fills.

The benchmark renders BrainWeb's 0.5 mm crisp anatomies into 1 mm voxels by averaging
(``synth.render_volume``, factor 2 per axis) and takes the majority label as the reference.
Here the 1 mm voxels made of GM and CSF only (the GM/CSF border) and those made of GM and WM
only (the GM/WM border) are binned by their GM fraction (0/8 to 8/8 of their 0.5 mm
sub-voxels; the pure voxels of bins 0 and 8 only where they touch a mixed voxel of that
border), and each method's dseg (tissue codes 1 GM, 2 WM, 3 CSF: the app's whole-brain
dseg, the benchmark's peers) gives, per bin, the share of voxels it calls GM. A method that
follows the partial volume switches near 4/8 (the last row, "50 % point", interpolates
where the share reaches one half; the reference: GM from 5/8 at the GM/CSF
border and from 4/8 at the GM/WM border, ties going to the lower BrainWeb label); one that
switches earlier at the GM/CSF border, or later at the GM/WM border, draws GM thicker than
the reference.

With ``--reference`` (the benchmark's ``truth/sub-<id>_dseg.nii.gz``, any condition, MRBrainS
included), it also prints each method's Dice and tissue volumes against the reference's and the
voxels it gives the wrong tissue, by reference tissue (thousands): where the boundaries
move, and which way.

    R=runs/bench-generalisation/brainweb
    python benchmarks/boundary_probe.py --brainweb ../shared/data/brainweb20 --subject 05 \\
        --reference $R/truth/sub-05_dseg.nii.gz \\
        --dseg mixnet-bids=$R/mixnet-bids/out/sub-05/anat/sub-05_desc-wholebrain_dseg.nii.gz \\
        atropos=$R/peers/sub-05_method-atropos_mask-app_dseg.nii.gz
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from mixnet_bids.evaluation.markdown import table as markdown_table
from mixnet_bids.evaluation.metrics import tissue_dice
from mixnet_bids.training.synth import block_sum, load_label_volumes

#: BrainWeb crisp labels of the three tissues.
BRAINWEB = {"CSF": 1, "GM": 2, "WM": 3}
#: Sub-voxels per 1 mm voxel (0.5 mm labels, factor 2 per axis).
SUBVOXELS = 8
#: Tissue codes of the dsegs and of the benchmark's references (255: not scored).
TISSUE_CODES = {"GM": 1, "WM": 2, "CSF": 3}
NOT_SCORED = 255


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
    called = dseg == TISSUE_CODES["GM"]
    return {border: [float(called[fraction == k].mean()) if (fraction == k).any()
                     else float("nan") for k in range(SUBVOXELS + 1)]
            for border, fraction in borders.items()}


def switch_point(shares: list[float]) -> float:
    """The GM fraction (in sub-voxels, 0..8) where the share called GM first reaches 0.5,
    interpolated linearly between bins; -inf if the pure non-GM bin is already there, inf if
    no bin is."""
    for k, share in enumerate(shares):
        if share >= 0.5:
            if k == 0:
                return float("-inf")
            below = shares[k - 1]
            return k - 1 + (0.5 - below) / (share - below)
    return float("inf")


def confusion(reference: np.ndarray, dseg: np.ndarray) -> dict[str, float]:
    """Dice and volume of each tissue against the reference's, and the reference's voxels of
    one tissue called another (``"GM->WM"``: reference GM called WM), on the scored
    voxels."""
    scored = reference != NOT_SCORED
    out = {f"{name} Dice": value for name, value in tissue_dice(dseg, reference).items()}
    for name, code in TISSUE_CODES.items():
        out[f"{name} volume / reference"] = float(((dseg == code) & scored).sum()
                                                  / (reference == code).sum())
    for name, code in TISSUE_CODES.items():
        for other, other_code in TISSUE_CODES.items():
            if other != name:
                out[f"{name}->{other}"] = float(((reference == code) & (dseg == other_code))
                                                .sum())
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--brainweb", type=Path, help="BrainWeb label maps (the border "
                        "tables of a brainweb-condition case)")
    parser.add_argument("--subject", help="BrainWeb subject of the border tables, e.g. 05")
    parser.add_argument("--reference", type=Path,
                        help="the benchmark's reference dseg: volumes and confusions")
    parser.add_argument("--dseg", nargs="+", required=True, metavar="NAME=FILE",
                        help="tissue dsegs (1 GM, 2 WM, 3 CSF) on the benchmark's grid")
    args = parser.parse_args(argv)
    if (args.brainweb is None) != (args.subject is None):
        parser.error("--brainweb and --subject go together")
    if args.brainweb is None and args.reference is None:
        parser.error("give --brainweb and --subject (border tables), --reference, or both")
    dsegs = {}
    for item in args.dseg:
        name, _, path = item.partition("=")
        dsegs[name] = nib.load(path)
    if args.reference is not None:
        ref_img = nib.load(args.reference)
        reference = np.asarray(ref_img.dataobj)
        rows = {}
        for name, img in dsegs.items():
            if img.shape != ref_img.shape:
                raise SystemExit(f"{img.get_filename()}: shape {img.shape} differs from the "
                                 f"reference {args.reference} {ref_img.shape}")
            rows[name] = confusion(reference, np.asarray(img.dataobj))
        keys = list(next(iter(rows.values())))
        print(markdown_table(["method", *keys], [
            [name, *(f"{v:.3f}" if "Dice" in k else f"{v:.2f}" if "volume" in k
                     else f"{v / 1000:.1f}k"
                     for k, v in row.items())] for name, row in rows.items()]))
    if args.brainweb is None:
        return 0
    borders, affine = gm_fractions(args.brainweb, args.subject.removeprefix("sub-"))
    shares = {}
    for name, img in dsegs.items():
        if img.shape != next(iter(borders.values())).shape or not np.allclose(
                img.affine, affine, atol=1e-3):
            raise SystemExit(f"{img.get_filename()}: not on the benchmark's 1 mm grid of "
                             f"BrainWeb {args.subject} (shape {img.shape}); pass the dseg of "
                             "the brainweb condition")
        shares[name] = gm_share(borders, np.asarray(img.dataobj))
    for border, fraction in borders.items():
        counts = [int((fraction == k).sum()) for k in range(SUBVOXELS + 1)]
        header = [f"{border} border: GM sub-voxels of 8", "voxels",
                  *(f"{name}: called GM" for name in shares)]
        rows = [[str(k), str(counts[k]), *(f"{shares[n][border][k]:.2f}" for n in shares)]
                for k in range(SUBVOXELS + 1)]
        rows.append(["50 % point", "", *(f"{switch_point(shares[n][border]):.1f}"
                                         for n in shares)])
        print(markdown_table(header, rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
