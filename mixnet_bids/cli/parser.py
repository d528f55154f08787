"""Command-line arguments, following the BIDS-Apps convention (fMRIPrep, sMRIPrep)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from mixnet_bids import __version__
from mixnet_bids.inference.planes import PLANES
from mixnet_bids.labels import TASK_CLASSES


def _plane_weights(value: str) -> list[float]:
    try:
        weights = [float(v) for v in value.replace(",", ":").split(":")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r}: give numbers such as 1:1:4") from None
    if any(w < 0 for w in weights) or not any(weights):
        raise argparse.ArgumentTypeError(f"{value!r}: weights must be >= 0, not all zero")
    return weights


def _label(value: str) -> str:
    value = value.removeprefix("sub-").removeprefix("ses-")
    if not value.isalnum():
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a BIDS label (letters and digits only)")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mixnet-bids",
        description="MixNet brain-tissue segmentation (GM/WM/CSF) of T1w, T1-IR and FLAIR "
                    "images, as a BIDS-App. Also: `mixnet-bids demo [OUTPUT_DIR]`.")
    parser.add_argument("bids_dir", type=Path, help="the input BIDS dataset")
    parser.add_argument("output_dir", type=Path,
                        help="the derivatives folder (e.g. <bids_dir>/derivatives/mixnet-bids)")
    parser.add_argument("analysis_level", choices=("participant", "group"))
    parser.add_argument("--version", action="version", version=f"mixnet-bids {__version__}")
    g = parser.add_argument_group("selecting data")
    g.add_argument("--participant-label", "--participant_label", nargs="+", type=_label,
                   default=[], metavar="LABEL", help="subjects to process (sub- optional)")
    g.add_argument("--session-label", "--session_label", nargs="+", type=_label, default=[],
                   metavar="LABEL", help="sessions to process (ses- optional)")
    g.add_argument("--bids-filter-file", type=Path, metavar="FILE",
                   help="JSON with pybids queries per modality: keys t1w, ir, flair")
    g.add_argument("--skip-bids-validation", "--skip_bids_validation", action="store_true",
                   help="do not check the input against the BIDS specification")
    g = parser.add_argument_group("model")
    g.add_argument("--task", choices=sorted(TASK_CLASSES), default="3label",
                   help="3label: GM/WM/CSF; 8label: the MRBrainS18 structures (default 3label)")
    g.add_argument("--model-version", choices=("v1", "v2", "v3"), default="v3")
    g.add_argument("--planes", nargs="+", choices=PLANES, default=list(PLANES))
    g.add_argument("--plane-weights", type=_plane_weights, default=None, metavar="W",
                   help="weights of the planes, in the order of --planes (default 1:1:4 for "
                        "sagittal:coronal:axial)")
    g.add_argument("--weights-dir", type=Path, default=None, metavar="DIR",
                   help="folder of weight files (mixnet-bids-train output) to use instead "
                        "of the shipped ones")
    g.add_argument("--output-spaces", nargs="+", choices=("MNI152NLin2009aSym",), default=[],
                   help="also write modulated GM/WM/CSF maps in this template (2 mm), "
                        "after a nonlinear (SyN) registration; for voxel-based morphometry")
    g.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    g.add_argument("--save-probabilities", action="store_true",
                   help="also write the fused class probabilities (4D)")
    g = parser.add_argument_group("resources")
    g.add_argument("-w", "--work-dir", type=Path, default=None,
                   help="working folder; rerunning with the same one resumes "
                        "(default: ./work_dir)")
    g.add_argument("--nprocs", "--n_cpus", type=int, default=os.cpu_count() or 1)
    g.add_argument("--omp-nthreads", type=int, default=None,
                   help="threads per process (default: min(nprocs, 2))")
    g.add_argument("--mem-gb", type=float, default=None)
    g.add_argument("--plugin", default="MultiProc",
                   choices=("MultiProc", "Linear", "SLURM", "SLURMGraph"),
                   help="Nipype execution plugin: MultiProc on this machine (default), or "
                        "one cluster job per step with SLURM / SLURMGraph")
    g.add_argument("--plugin-args", default=None, metavar="JSON",
                   help="plugin arguments as JSON (or a JSON file), e.g. "
                        "'{\"sbatch_args\": \"--partition=short --mem=4G\"}'")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--no-progress", action="store_true",
                   help="no progress bars (they are off anyway when stderr is not a terminal)")
    g.add_argument("--overwrite", action="store_true",
                   help="redo subjects whose derivatives exist (default: skip them)")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    return parser
