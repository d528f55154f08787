"""``mixnet-bids-train``: train per-plane MixNets on MRBrainS18 or on a labelled BIDS dataset.

Examples::

    mixnet-bids-train --mrbrains ../shared/data/mrbrains18 --cache cache \\
        --out runs/full --task 3label --planes axial coronal sagittal
    mixnet-bids-train --bids /data --labels /data/derivatives/manual --cache cache --out runs/x
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from pathlib import Path

from mixnet_bids.inference.planes import PLANES
from mixnet_bids.labels import TASK_CLASSES
from mixnet_bids.training.dataset import DEFAULT_BATCH


def add_recipe_arguments(parser: argparse.ArgumentParser) -> None:
    """Optimiser, schedule and precision options (``TrainConfig`` fields of the same names),
    shared by mixnet-bids-train and mixnet-bids-cv."""
    parser.add_argument("--optimizer", choices=("sgd", "adamw"), default="sgd",
                        help="sgd: the paper's Nesterov SGD; adamw: AdamW (decoupled weight "
                             "decay)")
    parser.add_argument("--schedule", choices=("paper", "cosine"), default="paper",
                        help="paper: halve the rate at 0.2, 0.4, 0.6, 0.75, ... of the "
                             "iterations; cosine: cosine decay to 0")
    parser.add_argument("--bf16", action="store_true",
                        help="train under bfloat16 autocast (faster on CPUs with AMX/AVX-512 "
                             "BF16)")
    parser.add_argument("--no-pool", dest="pool", action="store_false",
                        help="no 2x2 max pooling in the InitUnit: full-resolution features, "
                             "2-3x the training time")
    parser.add_argument("--class-weights", type=float, nargs="+", default=None,
                        metavar="W", help="cross-entropy weight of each class, background "
                                          "first (3label: 4 values, 8label: 9)")


def check_class_weights(parser: argparse.ArgumentParser, weights: list[float] | None,
                        task: str) -> None:
    """Exit with a one-line error unless ``weights`` has one positive value per class."""
    if weights is None:
        return
    wanted = len(TASK_CLASSES[task])
    if len(weights) != wanted or min(weights) <= 0:
        parser.error(f"--class-weights: the {task} task needs {wanted} positive values "
                     f"(background first), got {' '.join(map(str, weights))}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mixnet-bids-train", description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--mrbrains", type=Path, help="MRBrainS18 folder (converted to BIDS)")
    source.add_argument("--bids", type=Path, help="BIDS dataset with T1w/IR/FLAIR images")
    parser.add_argument("--labels", type=Path,
                        help="derivatives folder with manual *_dseg (with --bids)")
    parser.add_argument("--cache", type=Path, required=True,
                        help="folder for converted data, preprocessing work and cached volumes")
    parser.add_argument("--out", type=Path, required=True,
                        help="run folder: one sub-folder (checkpoint, log, weights) per plane")
    parser.add_argument("--planes", nargs="+", choices=PLANES, default=list(PLANES))
    parser.add_argument("--task", choices=sorted(TASK_CLASSES), default="3label")
    parser.add_argument("--version", choices=("v1", "v2", "v3"), default="v3")
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=None,
                        help="default: 8 axial, 16 sagittal/coronal (similar pixel counts)")
    parser.add_argument("--lr", type=float, default=2e-4)
    add_recipe_arguments(parser)
    parser.add_argument("--p-t1w-only", type=float, default=0.0,
                        help="augmentation: extra probability of keeping T1w alone")
    parser.add_argument("--exclude", nargs="*", default=[],
                        help="subjects left out (cross-validation)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--checkpoint-every", type=int, default=50)
    parser.add_argument("--stop-after", type=int, default=None,
                        help="stop after this many iterations (checkpointed); rerun resumes")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    check_class_weights(build_parser(), args.class_weights, args.task)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    os.environ.setdefault("NIPYPE_NO_ET", "1")
    from mixnet_bids.training.cache import build_cache, load_cached, subject_names
    from mixnet_bids.training.mrbrains import mrbrains_to_bids
    from mixnet_bids.training.train import NonFiniteLoss, RecipeMismatch, TrainConfig, train_plane

    if args.mrbrains:
        bids_dir = args.cache / "mrbrains_bids"
        mrbrains_to_bids(args.mrbrains, bids_dir)
        labels_dir = bids_dir / "derivatives" / "manual"
    else:
        if args.labels is None:
            build_parser().error("--bids needs --labels (a derivatives folder of *_dseg)")
        bids_dir, labels_dir = args.bids, args.labels
    files = build_cache(bids_dir, labels_dir, args.cache / "preproc", args.cache / "work")
    excluded = subject_names(args.exclude)
    subjects = [load_cached(f) for f in files if f.stem.split("_")[0] not in excluded]
    command = "mixnet-bids-train " + shlex.join(sys.argv[1:] if argv is None else argv)
    for plane in args.planes:
        batch = args.batch_size or DEFAULT_BATCH[plane]
        cfg = TrainConfig(plane=plane, task=args.task, version=args.version,
                          iterations=args.iterations, batch_size=batch, lr=args.lr,
                          optimizer=args.optimizer, schedule=args.schedule,
                          bf16=args.bf16, pool=args.pool,
                          class_weights=args.class_weights, p_t1w_only=args.p_t1w_only,
                          seed=args.seed, threads=args.threads,
                          checkpoint_every=args.checkpoint_every,
                          stop_after=args.stop_after)
        try:
            path = train_plane(subjects, cfg, args.out / f"{args.task}_{args.version}_{plane}",
                               command=command)
        except RecipeMismatch as err:
            build_parser().exit(2, f"mixnet-bids-train: {err}\n")
        except NonFiniteLoss as err:
            build_parser().exit(1, f"mixnet-bids-train: {err}\n")
        print(f"{plane}: wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
