"""Convert the MRBrainS18 folder layout to a BIDS dataset with manual labels.

``<src>/<id>/orig/{reg_T1,IR,FLAIR}.nii.gz`` and ``<src>/<id>/segm.nii.gz`` become::

    <dst>/sub-<id>/anat/sub-<id>_T1w.nii.gz            (reg_T1, when present)
    <dst>/sub-<id>/anat/sub-<id>_acq-IR_T1w.nii.gz
    <dst>/sub-<id>/anat/sub-<id>_FLAIR.nii.gz
    <dst>/derivatives/manual/sub-<id>/anat/sub-<id>_dseg.nii.gz

Files are hard-linked when possible (same file system), else copied.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
from pathlib import Path

SOURCES = {"T1w": "orig/reg_T1.nii.gz", "acq-IR_T1w": "orig/IR.nii.gz",
           "FLAIR": "orig/FLAIR.nii.gz"}
MRBRAINS_LABELS = {
    0: "Background", 1: "Cortical gray matter", 2: "Basal ganglia", 3: "White matter",
    4: "White matter lesions", 5: "Cerebrospinal fluid", 6: "Ventricles", 7: "Cerebellum",
    8: "Brain stem", 9: "Infarction", 10: "Other",
}


def _place(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        return
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _write_json(path: Path, content: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=2) + "\n")


def mrbrains_to_bids(src: str | Path, dst: str | Path,
                     subjects: list[str] | None = None) -> list[str]:
    """Convert MRBrainS subjects (all by default) and return their labels."""
    src, dst = Path(src), Path(dst)
    found = sorted(p.name for p in src.iterdir() if (p / "segm.nii.gz").is_file())
    subjects = [s for s in found if subjects is None or s in subjects]
    if not subjects:
        raise ValueError(f"{src}: no MRBrainS subject folders (<id>/segm.nii.gz) found")
    for sub in subjects:
        if not re.fullmatch(r"[A-Za-z0-9]+", sub):
            raise ValueError(f"{src / sub}: folder name is not a valid BIDS label")
        anat = dst / f"sub-{sub}" / "anat"
        for suffix, rel in SOURCES.items():
            if (src / sub / rel).is_file():
                _place(src / sub / rel, anat / f"sub-{sub}_{suffix}.nii.gz")
        _place(src / sub / "segm.nii.gz",
               dst / "derivatives" / "manual" / f"sub-{sub}" / "anat" / f"sub-{sub}_dseg.nii.gz")
    _write_json(dst / "dataset_description.json", {
        "Name": "MRBrainS18 training data (converted)", "BIDSVersion": "1.9.0",
        "License": "MRBrainS challenge terms: no redistribution"})
    _write_json(dst / "derivatives" / "manual" / "dataset_description.json", {
        "Name": "MRBrainS18 manual labels", "BIDSVersion": "1.9.0",
        "DatasetType": "derivative", "GeneratedBy": [{"Name": "Manual"}]})
    tsv = "index\tname\n" + "".join(f"{k}\t{v}\n" for k, v in MRBRAINS_LABELS.items())
    (dst / "derivatives" / "manual" / "dseg.tsv").write_text(tsv)
    return subjects


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path, help="MRBrainS18 folder (one folder per subject)")
    parser.add_argument("dst", type=Path, help="BIDS dataset to create")
    args = parser.parse_args(argv)
    subjects = mrbrains_to_bids(args.src, args.dst)
    print(f"converted {len(subjects)} subjects into {args.dst}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
