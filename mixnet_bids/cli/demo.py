"""``mixnet-bids-demo [OUTPUT_DIR]``: a BIDS dataset built from nilearn's MNI152 T1, run end
to end (participant + group) offline."""

from __future__ import annotations

import argparse
import json
from importlib import resources
from pathlib import Path

DEMO_SUBJECT = "01"
#: The demo image is the template resampled to this voxel size (mm) to keep it quick.
DEMO_VOXEL_MM = 1.5


def build_demo_dataset(bids_dir: Path) -> Path:
    """Write ``sub-01/anat/sub-01_T1w.nii.gz`` (MNI152 2009a T1 from nilearn) + metadata."""
    import nibabel as nib
    from nibabel.processing import resample_to_output

    t1 = nib.load(str(resources.files("nilearn.datasets") / "data"
                      / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"))
    small = resample_to_output(t1, voxel_sizes=(DEMO_VOXEL_MM,) * 3, order=3)
    data = small.get_fdata()
    data[data < 0] = 0
    anat = bids_dir / f"sub-{DEMO_SUBJECT}" / "anat"
    anat.mkdir(parents=True, exist_ok=True)
    out = nib.Nifti1Image(data.astype("float32"), small.affine)
    out.header.set_xyzt_units("mm")
    nib.save(out, str(anat / f"sub-{DEMO_SUBJECT}_T1w.nii.gz"))
    (bids_dir / "dataset_description.json").write_text(json.dumps({
        "Name": "mixnet-bids demo (ICBM 2009a MNI152 T1 shipped with nilearn)",
        "BIDSVersion": "1.9.0", "DatasetType": "raw"}, indent=2) + "\n")
    (bids_dir / "participants.tsv").write_text("participant_id\nsub-01\n")
    return bids_dir


def main(argv: list[str] | None = None) -> int:
    from mixnet_bids.cli.parser import build_parser, positive_int
    from mixnet_bids.cli.run import run
    from mixnet_bids.inference.planes import PLANES
    from mixnet_bids.inference.weights import default_convention

    parser = argparse.ArgumentParser(prog="mixnet-bids-demo", description=__doc__,
                                     allow_abbrev=False)
    parser.add_argument("output_dir", nargs="?", type=Path, default=Path("demo_output"),
                        help="where the dataset, derivatives and work folder go "
                             "(default ./demo_output)")
    parser.add_argument("--nprocs", type=positive_int, default=None, metavar="N",
                        help="processes Nipype runs at once (default: all cores)")
    args = parser.parse_args(argv)
    root = args.output_dir.absolute()
    bids_dir = build_demo_dataset(root / "bids")
    derivatives = root / "derivatives" / "mixnet-bids"
    extra = ["--nprocs", str(args.nprocs)] if args.nprocs else []
    common = [str(bids_dir), str(derivatives)]
    app = build_parser()
    code = run(app.parse_args(common + ["participant", "--participant-label", DEMO_SUBJECT,
                                        "-w", str(root / "work"), "--skip-bids-validation"]
                              + extra))
    if code:
        return code
    code = run(app.parse_args(common + ["group"]))
    if code:
        return code
    anat = derivatives / f"sub-{DEMO_SUBJECT}" / "anat"
    task = default_convention(list(PLANES), "v3")  # what the runs above chose
    print(f"mixnet-bids-demo: segmentation {anat / f'sub-{DEMO_SUBJECT}_desc-{task}_dseg.nii.gz'}")
    print(f"mixnet-bids-demo: volumes {anat / f'sub-{DEMO_SUBJECT}_desc-{task}_volumes.tsv'}")
    print(f"mixnet-bids-demo: group table {derivatives / f'group_desc-{task}_volumes.tsv'}")
    print(f"mixnet-bids-demo: QC report {derivatives / f'sub-{DEMO_SUBJECT}.html'} (open it "
          "in a web browser)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
