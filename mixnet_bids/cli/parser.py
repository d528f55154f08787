"""Command-line arguments, following the BIDS-Apps convention (fMRIPrep, sMRIPrep)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from mixnet_bids.inference.planes import PLANES
from mixnet_bids.labels import CONVENTIONS


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


def positive_int(value: str) -> int:
    if not value.isdigit() or int(value) == 0:
        raise argparse.ArgumentTypeError(f"{value!r}: give a whole number above 0")
    return int(value)


def positive_float(value: str) -> float:
    try:
        if float(value) > 0:
            return float(value)
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"{value!r}: give a number above 0")


class _VersionAction(argparse.Action):
    """``--version``: this version and the versions of the software it runs with."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        from mixnet_bids.versions import version_text

        print(version_text(), end="")
        parser.exit()


EPILOG = """\
other commands:
  mixnet-bids-demo [OUTPUT_DIR] [--nprocs N]
      build a small BIDS dataset from nilearn's MNI152 T1 and run both levels on it
      (offline); `mixnet-bids-demo --help`
  mixnet-bids-slurm-array BIDS_DIR OUTPUT_DIR -w SCRATCH [--container SIF] [--submit]
      write (and submit) a SLURM job array, one participant per task, and the group job
      that waits for it; `mixnet-bids-slurm-array --help`

examples:
  mixnet-bids /data/bids /data/bids/derivatives/mixnet-bids participant \\
      --participant-label 01 02 -w /scratch/work
  mixnet-bids /data/bids /data/bids/derivatives/mixnet-bids group
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mixnet-bids", allow_abbrev=False, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="MixNet brain-tissue segmentation (GM/WM/CSF) of T1w, T1-IR and FLAIR "
                    "images, as a BIDS-App.")
    parser.add_argument("bids_dir", type=Path, help="the input BIDS dataset")
    parser.add_argument("output_dir", type=Path,
                        help="the derivatives folder (e.g. <bids_dir>/derivatives/mixnet-bids)")
    parser.add_argument("analysis_level", choices=("participant", "group"),
                        help="participant: segment each subject; group: gather their "
                             "volumes into one table and a cohort QC report")
    parser.add_argument("--version", action=_VersionAction,
                        help="print the version and those of the software it runs with")
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
    g.add_argument("--task", choices=sorted(CONVENTIONS), default=None,
                   help="output classes: wholebrain: GM/WM/CSF in the cerebrum, cerebellum "
                        "and brainstem (needs fine networks); 3label: the MRBrainS GM/WM/CSF, "
                        "cerebellum and brainstem as background; 8label: the MRBrainS18 "
                        "structures (default: wholebrain when fine networks are installed, "
                        "else 3label; at the group level, every convention the participant "
                        "level wrote)")
    g.add_argument("--model-version", choices=("v1", "v2", "v3"), default="v3",
                   help="MixNet variant: v1 stacked channels, v2 and v3 one stream per "
                        "modality (default v3, the one whose weights ship)")
    g.add_argument("--planes", nargs="+", choices=PLANES, default=list(PLANES),
                   help="planes whose networks run and are fused (default: all three)")
    g.add_argument("--plane-weights", type=_plane_weights, default=None, metavar="W",
                   help="weights of the planes, in the order of --planes (default 1:1:4 for "
                        "sagittal:coronal:axial)")
    g.add_argument("--weights-dir", type=Path, default=None, metavar="DIR",
                   help="folder of weight files (mixnet-bids-train output) to use instead "
                        "of the shipped ones")
    g.add_argument("--output-spaces", nargs="+", choices=("MNI152NLin2009aSym",), default=[],
                   help="also write modulated GM/WM/CSF maps in this template (2 mm), "
                        "after a nonlinear (SyN) registration; for voxel-based morphometry")
    g.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where the networks run: auto takes a CUDA GPU when one is usable, "
                        "else the CPU (default auto)")
    g.add_argument("--precision", choices=("auto", "float32", "bfloat16"), default="auto",
                   help="the networks' arithmetic: auto takes bfloat16 where the hardware "
                        "computes it (AVX-512 BF16, AMX, CUDA) and the networks' labels agree "
                        "with float32 in a check at start, else float32 (default auto); the "
                        "choice is recorded in the run's settings")
    g.add_argument("--no-mirror", action="store_true",
                   help="run the axial network once, not also on the left-right mirrored "
                        "head (the average of the two is 0.003 more accurate in GM Dice; "
                        "without it a run takes about 10 %% less time)")
    g.add_argument("--no-refine", action="store_true",
                   help="keep the networks' tissue probabilities as they are, without the "
                        "intensity refinement (a Gaussian model of the N4-corrected image's "
                        "GM, WM and CSF intensities, with the networks' probabilities as its "
                        "prior; a few seconds)")
    g.add_argument("--ignore-stripping", action="store_true",
                   help="in skull-stripped inputs, let the networks decide which voxels are "
                        "brain; by default every voxel the stripping left non-zero is GM, WM "
                        "or CSF (as in FAST or Atropos given a brain mask). Use it when the "
                        "stripping left skull or dura")
    g.add_argument("--save-probabilities", action="store_true",
                   help="also write the fused class probabilities (4D)")
    g = parser.add_argument_group("resources")
    g.add_argument("-w", "--work-dir", type=Path, default=None,
                   help="working folder; rerunning with the same one resumes "
                        "(default: ./work_dir)")
    g.add_argument("--nprocs", "--n_cpus", type=positive_int, default=os.cpu_count() or 1,
                   metavar="N", help="processes Nipype runs at once, steps of all the "
                                     "subjects together (default: all "
                                     f"{os.cpu_count() or 1} cores of this machine); the "
                                     "results do not depend on it")
    g.add_argument("--omp-nthreads", type=positive_int, default=1, metavar="N",
                   help="threads of each network's inference (default 1; ANTs steps always "
                        "run with one). The results depend on it: another value may change "
                        "the probabilities in their last digits, and so a few voxels of the "
                        "segmentation; keep one value for a study")
    g.add_argument("--mem-gb", type=positive_float, default=None, metavar="GB",
                   help="memory Nipype may plan for at once (default: 90 %% of this "
                        "machine's, Nipype's default)")
    g.add_argument("--plugin", default=None,
                   choices=("MultiProc", "Linear", "SLURM", "SLURMGraph"),
                   help="Nipype execution plugin: on this machine Linear (one step at a time "
                        "in this process; the default with --nprocs 1) or MultiProc (the "
                        "default otherwise), or one cluster job per step with SLURM / "
                        "SLURMGraph")
    g.add_argument("--plugin-args", default=None, metavar="JSON",
                   help="plugin arguments as JSON (or a JSON file), e.g. "
                        "'{\"sbatch_args\": \"--partition=short --mem=4G\"}'")
    g.add_argument("--no-progress", action="store_true",
                   help="no progress bars (they are off anyway when stderr is not a terminal)")
    g.add_argument("--overwrite", action="store_true",
                   help="redo subjects whose derivatives exist (default: skip them)")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more messages: -v adds Nipype's and the libraries' lines, -vv "
                             "debug lines")
    return parser
