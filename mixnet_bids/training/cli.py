"""``mixnet-bids-train``: train per-plane MixNets by a named recipe, resuming its saved state.

Examples::

    mixnet-bids-train --list-recipes
    mixnet-bids-train --mrbrains ../shared/data/mrbrains18 --cache cache
    mixnet-bids-train --recipe wholebrain-synth-v1 --mrbrains ../shared/data/mrbrains18 \\
        --brainweb ../shared/data/brainweb20 --cache cache --commit-every 3600
    mixnet-bids-train --bids /data --labels /data/derivatives/manual --cache cache --out runs/x

The run folder (default ``checkpoints/<recipe>``) holds one sub-folder per plane with the
checkpoint, the config, the learning curve (``log.tsv``) and, when finished, the weights.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from pathlib import Path

from mixnet_bids.inference.planes import PLANES
from mixnet_bids.training.recipes import BRAINWEB_HELD_OUT, DEFAULT_RECIPE, RECIPES, get_recipe

#: planes in the order they train: the axial network weighs most in the fusion (1:1:4)
TRAINING_ORDER = ("axial", "coronal", "sagittal")


def add_recipe_arguments(parser: argparse.ArgumentParser) -> None:
    """``--recipe`` and the data options shared by mixnet-bids-train and mixnet-bids-cv."""
    parser.add_argument("--recipe", choices=list(RECIPES), default=DEFAULT_RECIPE,
                        metavar="NAME",
                        help=f"training recipe (--list-recipes); default {DEFAULT_RECIPE}, "
                             "the shipped weights'")
    parser.add_argument("--list-recipes", action="store_true",
                        help="print the recipes and exit")
    parser.add_argument("--brainweb", type=Path, default=None,
                        help="BrainWeb label maps (sub-*_desc-crisp_dseg.nii.gz): synthetic "
                             "training images for recipes that use them, and the held-out "
                             f"anatomies ({', '.join(BRAINWEB_HELD_OUT)}) for validation")
    parser.add_argument("--iterations", type=int, default=None, metavar="N",
                        help="probes only: the axial network's iterations instead of the "
                             "recipe's (the schedule spans them)")
    parser.add_argument("--iterations-other", type=int, default=None, metavar="N",
                        help="probes only: the coronal and sagittal networks' iterations")


def recipe_listing() -> str:
    return "\n".join(f"{name}{' (default)' if name == DEFAULT_RECIPE else ''}\n    "
                     f"{recipe.summary}" for name, recipe in RECIPES.items())


def plane_iterations(recipe, args: argparse.Namespace) -> dict[str, int]:
    """Iterations per plane: the recipe's, or the probe's overrides."""
    out = dict(recipe.iterations)
    if args.iterations:
        out["axial"] = args.iterations
    if args.iterations_other:
        out.update(coronal=args.iterations_other, sagittal=args.iterations_other)
    elif args.iterations:
        ratio = recipe.iterations["coronal"] / recipe.iterations["axial"]
        out.update(coronal=round(ratio * args.iterations), sagittal=round(ratio * args.iterations))
    return out


def load_brainweb(folder: Path | None, recipe, parser: argparse.ArgumentParser):
    """(training label volumes, held-out validation cases) from ``--brainweb``; nothing for
    recipes that neither synthesise nor validate."""
    if recipe.synth_fraction == 0 and not recipe.validate_every:
        return [], []
    if folder is None:
        if recipe.synth_fraction > 0:
            parser.error(f"--recipe {recipe.name} synthesises images from BrainWeb label "
                         "maps: give their folder with --brainweb")
        return [], []
    if not sorted(Path(folder).glob("sub-*_desc-crisp_dseg.nii*")):
        parser.error(f"--brainweb {folder}: no sub-*_desc-crisp_dseg.nii.gz label maps there")
    from mixnet_bids.training.synth import load_label_volumes
    from mixnet_bids.training.validation import brainweb_cases

    volumes = [v for v in load_label_volumes(folder) if v.name not in BRAINWEB_HELD_OUT]
    cases = brainweb_cases(folder, BRAINWEB_HELD_OUT[:2]) if recipe.validate_every else []
    return volumes, cases


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mixnet-bids-train", description=__doc__.split("\n")[0],
                                     allow_abbrev=False)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--mrbrains", type=Path, help="MRBrainS18 folder (converted to BIDS)")
    source.add_argument("--bids", type=Path, help="BIDS dataset with T1w/IR/FLAIR images")
    parser.add_argument("--labels", type=Path,
                        help="derivatives folder with manual *_dseg (with --bids)")
    parser.add_argument("--cache", type=Path,
                        help="folder for converted data, preprocessing work and cached volumes")
    parser.add_argument("--init-dir", type=Path, default=None, metavar="DIR",
                        help="for a recipe that starts from another's networks (init_from): "
                             "that recipe's run folders (default checkpoints/<init_from>), or "
                             "one fold of its cross-validation, cv/<task>_<version>/<subject> "
                             "(e.g. checkpoints/<init_from>/cv/fine_v3/sub-1, with --exclude "
                             "sub-1)")
    parser.add_argument("--out", type=Path, default=None,
                        help="run folder: one sub-folder (checkpoint, config, log, weights) per "
                             "plane; default checkpoints/<recipe>")
    parser.add_argument("--planes", nargs="+", choices=PLANES, default=list(TRAINING_ORDER),
                        help="planes to train, one after another (default: axial, which "
                             "carries 4 of the fused 6 parts, then coronal and sagittal)")
    add_recipe_arguments(parser)
    parser.add_argument("--exclude", nargs="*", default=[],
                        help="subjects left out of training; for recipes that validate, they "
                             "are the learning curve's validation set (instead of the held-out "
                             "BrainWeb anatomies)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random stream")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="torch threads (default: every core)")
    parser.add_argument("--checkpoint-every", type=int, default=50, metavar="N",
                        help="iterations between checkpoints (and learning-curve points)")
    parser.add_argument("--stop-after", type=int, default=None, metavar="N",
                        help="stop this invocation after about this many iterations (at the "
                             "next checkpoint); rerun resumes")
    parser.add_argument("--commit-every", type=float, default=0, metavar="SECONDS",
                        help="commit the run folder to git at the first checkpoint this long "
                             "after the last commit, and at the end (0: never)")
    parser.add_argument("--curves-dir", type=Path, default=None, metavar="DIR",
                        help="with --commit-every: redraw each network's learning curve "
                             "there (PNG) and commit it with the state, e.g. docs/curves")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list_recipes:
        print(recipe_listing())
        return 0
    if not (args.mrbrains or args.bids) or args.cache is None:
        parser.error("give the training data (--mrbrains or --bids with --labels) and --cache")
    recipe = get_recipe(args.recipe)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from mixnet_bids.runtime import keep_freed_memory, prepare_runtime

    prepare_runtime()
    keep_freed_memory()  # this process trains: reuse its memory from step to step
    from mixnet_bids.training.cache import build_cache, load_cached, subject_names
    from mixnet_bids.training.locks import SUFFIX, Busy, hold, hold_run
    from mixnet_bids.training.mrbrains import mrbrains_to_bids
    from mixnet_bids.training.train import NonFiniteLoss, RecipeMismatch, TrainConfig, train_plane
    from mixnet_bids.training.validation import mrbrains_case

    starts = {}
    if recipe.init_from:
        root = args.init_dir or Path("checkpoints") / recipe.init_from
        starts = {plane: start_weights(root, recipe.task, recipe.version, plane)
                  for plane in args.planes}
        missing = [str(path) for path in starts.values() if not path.is_file()]
        if missing:
            parser.exit(2, f"mixnet-bids-train: {recipe.name} starts from the networks of "
                           f"{recipe.init_from}, not trained yet: {', '.join(missing)} "
                           f"(train them: mixnet-bids-train --recipe {recipe.init_from})\n")
        in_fold = any(path.parent == root / plane for plane, path in starts.items())
        if in_fold and root.name not in subject_names(args.exclude):
            parser.exit(2, f"mixnet-bids-train: {root} is the cross-validation fold that "
                           f"holds out {root.name}: give --exclude {root.name}, or its "
                           f"networks would train on the subject they are scored on\n")
    if not args.mrbrains and args.labels is None:
        parser.error("--bids needs --labels (a derivatives folder of *_dseg)")
    volumes, cases = load_brainweb(args.brainweb, recipe, parser)
    with hold(args.cache / f"cache{SUFFIX}", wait=True):  # another process may build it
        if args.mrbrains:
            bids_dir = args.cache / "mrbrains_bids"
            mrbrains_to_bids(args.mrbrains, bids_dir)
            labels_dir = bids_dir / "derivatives" / "manual"
        else:
            bids_dir, labels_dir = args.bids, args.labels
        files = build_cache(bids_dir, labels_dir, args.cache / "preproc", args.cache / "work")
    excluded = subject_names(args.exclude)
    cached = [load_cached(f) for f in files]
    subjects = [s for s in cached if s.name not in excluded]
    if recipe.validate_every and excluded:
        # subjects left out are the validation set (scored in the MRBrainS 3 labels)
        cases = [mrbrains_case(s) for s in cached if s.name in excluded]
    out = args.out or Path("checkpoints") / recipe.name
    command = "mixnet-bids-train " + shlex.join(sys.argv[1:] if argv is None else argv)
    iterations = plane_iterations(recipe, args)
    for plane in args.planes:
        cfg = TrainConfig.from_recipe(recipe, plane, seed=args.seed, threads=args.threads,
                                      checkpoint_every=args.checkpoint_every,
                                      stop_after=args.stop_after,
                                      commit_every=args.commit_every)
        cfg.iterations = iterations[plane]
        cfg.init_weights = str(starts[plane]) if starts else None
        synth = None
        if recipe.synth_fraction > 0:
            from mixnet_bids.training.dataset import DEFAULT_CROPS
            from mixnet_bids.training.synth import SynthConfig, SynthSampler
            synth = SynthSampler(volumes, plane, DEFAULT_CROPS[plane], SynthConfig(**cfg.synth),
                                 seed=args.seed)
        run_dir = out / f"{recipe.task}_{recipe.version}_{plane}"
        try:
            with hold_run(run_dir):
                path = train_plane(subjects, cfg, run_dir, command=command, synth=synth,
                                   validation=cases, curves_dir=args.curves_dir)
        except (RecipeMismatch, Busy) as err:
            parser.exit(2, f"mixnet-bids-train: {err}\n")
        except NonFiniteLoss as err:
            parser.exit(1, f"mixnet-bids-train: {err}\n")
        print(f"{plane}: wrote {path}")
        if path.name == "checkpoint.pt":  # --stop-after ended this invocation
            break
    return 0


def start_weights(root: Path, task: str, version: str, plane: str) -> Path:
    """The network a plane starts from in ``root``: a training run's folder (one
    ``<task>_<version>_<plane>`` sub-folder per plane) or a cross-validation fold's (one
    ``<plane>`` sub-folder per plane, ``cv/<task>_<version>/<subject>``). The run's network
    is taken when both exist; when neither does, its path (which the refusal names)."""
    from mixnet_bids.inference.weights import weight_path

    run = weight_path(task, plane, version, root / f"{task}_{version}_{plane}")
    fold = weight_path(task, plane, version, root / plane)
    return fold if fold.is_file() and not run.is_file() else run


if __name__ == "__main__":
    raise SystemExit(main())
