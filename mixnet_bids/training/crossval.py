"""Leave-one-subject-out cross-validation of the fused 3-plane model.

For every held-out subject: train the three planes on the others (resuming any
checkpoint), predict the held-out subject with the app's inference code for every subset
of the modalities it has, fuse 1:1:4, and score with the challenge metrics. Results go to
``<out>/cv_<task>_<version>.tsv`` (8-label networks are also scored in the 3-label
classes, the app's tissues: ``cv_3label_<version>.tsv``); ``--report`` renders them as the
Markdown tables of ``docs/results.md``.

    mixnet-bids-cv --recipe cpu-adamw-3label --mrbrains ../shared/data/mrbrains18 \\
        --cache cache --subjects 1 4 5 14

Every fold trains its planes with the recipe (``--recipe``) at the recipe's budget, resuming
their saved state; the learning curve of each fold's plane scores the held-out subject. A
recipe with a cooldown stops on its validation curve; its folds start the cooldown where the
recipe's own networks (``checkpoints/<recipe>``) started theirs, so that the held-out
subject never decides when a fold stops (``trained_cooldowns``).
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from mixnet_bids.conventions import convention_probabilities
from mixnet_bids.evaluation.metrics import evaluate
from mixnet_bids.inference.planes import PLANES
from mixnet_bids.inference.predict import DEFAULT_PLANE_WEIGHTS, fuse, predict_plane
from mixnet_bids.inference.weights import load_model, networks_for, read_metadata, weight_path
from mixnet_bids.io import atomic_write
from mixnet_bids.model import MODALITIES
from mixnet_bids.training.cache import CachedSubject
from mixnet_bids.training.cli import (
    add_recipe_arguments,
    load_brainweb,
    plane_iterations,
    recipe_listing,
)
from mixnet_bids.training.dataset import DEFAULT_BATCH, DEFAULT_CROPS
from mixnet_bids.training.locks import SUFFIX, Busy, hold, hold_run
from mixnet_bids.training.recipes import get_recipe
from mixnet_bids.training.train import (
    NonFiniteLoss,
    RecipeMismatch,
    TrainConfig,
    check_same_recipe,
    train_plane,
)

LOGGER = logging.getLogger(__name__)


def modality_subsets(present: tuple[str, ...]) -> list[tuple[str, ...]]:
    """All non-empty subsets of the present modalities, largest first."""
    subsets = []
    for k in range(len(present), 0, -1):
        subsets.extend(itertools.combinations(present, k))
    return subsets


def fused_probabilities(subject: CachedSubject, weight_files: dict[str, Path],
                        keep: tuple[str, ...]) -> tuple[np.ndarray, str]:
    """The planes' class probabilities fused 1:1:4 (x, y, z, class), and the networks' task,
    using only the modalities in ``keep``."""
    image = subject.image.copy()
    for c, name in enumerate(MODALITIES):
        if name not in keep:
            image[..., c] = 0.0
    head = np.any(image != 0, axis=-1)
    probs, tasks = {}, set()
    for plane, path in weight_files.items():
        model, meta = load_model(path)
        tasks.add(meta["task"])
        probs[plane] = predict_plane(model, image, head, subject.zooms, plane)
    if len(tasks) != 1:
        raise ValueError(f"the planes' networks are of different tasks: {sorted(tasks)}")
    return fuse(probs, DEFAULT_PLANE_WEIGHTS), tasks.pop()


def labels_in(fused: np.ndarray, net_task: str, task: str) -> np.ndarray:
    """Labels of ``task`` from the fused probabilities of ``net_task`` networks, grouped as
    the app groups them (``conventions.convention_probabilities``): fine networks give any
    convention, 8-label networks also the 3 tissues (GM = cortical GM + basal ganglia, ...)."""
    return np.argmax(convention_probabilities(fused, net_task, task), axis=-1).astype(np.uint8)


def scored_tasks(task: str) -> tuple[str, ...]:
    """The classes a cross-validation of ``task`` networks is scored in: their own, and the
    3 tissues (what the app reports for every task); fine networks in the MRBrainS 3 labels,
    the whole-brain tissues and the MRBrainS 8 labels."""
    if task == "fine":
        return ("3label", "wholebrain", "8label")
    return tuple(dict.fromkeys((task, "3label")))


def run_fold(subjects: list[CachedSubject], held_out: CachedSubject, recipe: TrainConfig,
             iterations: dict[str, int], out: Path, command: str,
             synth_volumes: list | None = None,
             batch: dict[str, int] = DEFAULT_BATCH,
             cooldown_from: dict[str, int | None] | None = None,
             init_root: Path | None = None) -> dict[str, list[dict]] | None:
    """Train the three planes without ``held_out`` and score it in the classes of
    ``scored_tasks`` (rows per task). A plane that another process is training (it holds
    ``locks.hold_run``) is left to it: None when one is still unfinished at the end (a
    plane is finished once its weights' sidecar, written last, exists). The process that
    finishes a fold's last plane finds the others finished and scores the fold.

    ``recipe`` gives task, version, optimiser, augmentation, seed and threads; each plane
    takes its ``iterations`` and ``batch`` (the recipe's, per plane). ``synth_volumes``:
    BrainWeb label maps, for recipes that synthesise images. ``init_root``: the cross-
    validation folder of the recipe whose networks start this one's (``fold_plans``).
    """
    from mixnet_bids.training.validation import mrbrains_case

    train = [s for s in subjects if s.name != held_out.name]
    validation = [mrbrains_case(held_out)] if recipe.validate_every else None
    plans = fold_plans(subjects, held_out, recipe, iterations, out, synth_volumes, batch,
                       cooldown_from, init_root)

    def finished(plane: str) -> Path | None:
        """The plane's weights once its sidecar (written last) exists, its recipe checked."""
        run_dir, cfg = plans[plane]
        path = weight_path(cfg.task, plane, cfg.version, run_dir)
        if not path.with_suffix(".json").exists():
            return None
        check_same_recipe(run_dir / "config.json", cfg)
        return path

    weight_files, busy = {}, []
    for plane, (run_dir, cfg) in plans.items():
        if path := finished(plane):
            weight_files[plane] = path
            continue
        try:
            with hold_run(run_dir):
                synth = None
                if cfg.synth_fraction > 0:
                    from mixnet_bids.training.synth import SynthConfig, SynthSampler
                    synth = SynthSampler(synth_volumes or [], plane, DEFAULT_CROPS[plane],
                                         SynthConfig(**cfg.synth), seed=cfg.seed)
                weight_files[plane] = train_plane(train, cfg, run_dir, command=command,
                                                  synth=synth, validation=validation)
        except Busy:
            busy.append(plane)
    for plane in busy:  # planes another process may have finished meanwhile
        if path := finished(plane):
            weight_files[plane] = path
    if len(weight_files) < len(plans):
        # the process that finishes the fold's last plane scores it
        LOGGER.info("fold %s: %s left to another process", held_out.name,
                    ", ".join(sorted(set(plans) - set(weight_files))))
        return None
    return score_subject(held_out, weight_files, scored_tasks(recipe.task))


def fold_plans(subjects: list[CachedSubject], held_out: CachedSubject, recipe: TrainConfig,
               iterations: dict[str, int], out: Path,
               synth_volumes: list | None = None,
               batch: dict[str, int] = DEFAULT_BATCH,
               cooldown_from: dict[str, int | None] | None = None,
               init_root: Path | None = None,
               ) -> dict[str, tuple[Path, TrainConfig]]:
    """Each plane's run folder and training config in the fold of ``held_out`` (trained on
    the other ``subjects``, and the BrainWeb anatomies of recipes that synthesise).

    A fold's validation is its held-out subject, which must not decide when its training
    stops: a recipe with a cooldown starts it at ``cooldown_from[plane]``, the iteration
    where the recipe's own network started (``trained_cooldowns``), and a plane without one
    trains the whole schedule. With ``init_root`` (the cross-validation folder of another
    recipe), each plane starts from that recipe's network of the same fold and plane."""
    cooldown_from = cooldown_from or {}
    train = [s.name for s in subjects if s.name != held_out.name]
    if recipe.synth_fraction > 0:
        train += [v.name for v in synth_volumes or []]

    def start(plane: str) -> str | None:
        if init_root is None:
            return None
        fold = init_root / f"{recipe.task}_{recipe.version}" / held_out.name / plane
        return str(weight_path(recipe.task, plane, recipe.version, fold))

    return {plane: (out / f"{recipe.task}_{recipe.version}" / held_out.name / plane,
                    replace(recipe, plane=plane, iterations=iterations[plane],
                            batch_size=batch[plane], subjects=train, init_weights=start(plane),
                            cooldown=(recipe.cooldown if cooldown_from.get(plane) is not None
                                      else 0),
                            cooldown_from=cooldown_from.get(plane)))
            for plane in PLANES}


def trained_cooldowns(run_root: Path, recipe: TrainConfig,
                      iterations: dict[str, int]) -> dict[str, int | None]:
    """Per plane, the iteration where the finished network of ``recipe`` in ``run_root``
    (``checkpoints/<recipe>``) started its cooldown, or None if it trained its whole
    schedule. Raises FileNotFoundError naming a network not trained yet, and ValueError
    naming one whose schedule differs from the folds' ``iterations``."""
    starts = {}
    for plane in PLANES:
        path = weight_path(recipe.task, plane, recipe.version,
                           run_root / f"{recipe.task}_{recipe.version}_{plane}")
        if not path.exists():
            raise FileNotFoundError(
                f"{path}: not trained yet; the folds of {recipe.recipe} cool down where its "
                f"networks did: train them first (make weights RECIPE={recipe.recipe})")
        meta = read_metadata(path)
        budget = meta["settings"]["iterations"]
        if budget != iterations[plane]:
            raise ValueError(
                f"{path}: trained on a {budget}-iteration schedule, the folds would train "
                f"{iterations[plane]}: cross-validate {recipe.recipe} at its own budget "
                "(without --iterations)")
        starts[plane] = meta["cooldown"]["from"] if meta.get("cooldown") else None
    return starts


def score_subject(subject: CachedSubject, weight_files: dict[str, Path],
                  tasks: tuple[str, ...], subsets: bool = True) -> dict[str, list[dict]]:
    """Challenge metrics of the fused planes in each of ``tasks``' classes (one prediction
    per subset), for every subset of the subject's modalities (or only all of them)."""
    rows = {task: [] for task in tasks}
    for keep in modality_subsets(subject.modalities)[:None if subsets else 1]:
        fused, net_task = fused_probabilities(subject, weight_files, keep)
        for task in tasks:
            pred = labels_in(fused, net_task, task)
            for row in evaluate(pred, subject.labels, task, subject.zooms, axial_axis=2):
                rows[task].append({"subject": subject.name, "modalities": "+".join(keep),
                                   "all_modalities": "+".join(subject.modalities), **row})
    return rows


def cross_validate(subjects: list[CachedSubject], held_out: list[CachedSubject],
                   recipe: TrainConfig, iterations: dict[str, int], out: Path,
                   command: str, synth_volumes: list | None = None,
                   batch: dict[str, int] = DEFAULT_BATCH,
                   cooldown_from: dict[str, int | None] | None = None,
                   init_root: Path | None = None) -> None:
    """The folds of the ``held_out`` subjects (cooling down at ``cooldown_from`` and
    starting from the networks in ``init_root``, see ``fold_plans``), appended to
    ``<out>/cv_<task>_<version>.tsv`` for each of ``scored_tasks``; a subject already in
    every table is skipped (its planes' recipe checked), one missing from a table is scored
    with its fold's finished planes. Several processes may run at once: each trains the
    planes no other one holds, and the tables are appended to under a lock."""
    tasks = scored_tasks(recipe.task)
    tables = {task: out / f"cv_{task}_{recipe.version}.tsv" for task in tasks}
    for subject in held_out:
        t0 = time.monotonic()
        # read again for each fold: another process may have scored it meanwhile
        todo = [task for task in tasks if not has_subject(tables[task], subject.name)]
        if not todo:
            for run_dir, cfg in fold_plans(subjects, subject, recipe, iterations, out,
                                           synth_volumes, batch, cooldown_from,
                                           init_root).values():
                check_same_recipe(run_dir / "config.json", cfg)
            continue
        rows = run_fold(subjects, subject, recipe, iterations, out, command, synth_volumes,
                        batch, cooldown_from, init_root)
        if rows is None:
            continue
        LOGGER.info("fold %s %s done in %.0f s", recipe.version, subject.name,
                    time.monotonic() - t0)
        with hold(out / f"tables{SUFFIX}", wait=True):  # other processes append theirs
            for task in todo:
                if has_subject(tables[task], subject.name):  # scored by another meanwhile
                    continue
                table = (pd.read_csv(tables[task], sep="\t") if tables[task].exists()
                         else pd.DataFrame())
                table = pd.concat([table, pd.DataFrame(rows[task])], ignore_index=True)
                write_atomically(table, tables[task])


def has_subject(table: Path, subject: str) -> bool:
    """Whether the table ``table`` (TSV, may not exist yet) has rows of ``subject``."""
    return table.exists() and subject in set(pd.read_csv(table, sep="\t")["subject"])


def write_atomically(table: pd.DataFrame, path: Path) -> None:
    """Write ``table`` as a TSV that appears complete or not at all."""
    atomic_write(path, lambda tmp: table.to_csv(tmp, sep="\t", index=False, float_format="%.4f"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mixnet-bids-cv", description=__doc__.split("\n")[0],
                                     allow_abbrev=False)
    parser.add_argument("--mrbrains", type=Path, help="MRBrainS18 folder (not for --report)")
    parser.add_argument("--cache", type=Path, help="preprocessing cache (not for --report)")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder of the folds and tables; default checkpoints/<recipe>/cv")
    add_recipe_arguments(parser)
    parser.add_argument("--init-dir", type=Path, default=None, metavar="DIR",
                        help="for a recipe that starts from another's networks (init_from): "
                             "that recipe's cross-validation folder (default "
                             "checkpoints/<init_from>/cv)")
    parser.add_argument("--task", default=None,
                        help="the classes to score (--report, --shipped, --weights): 3label, "
                             "wholebrain (fine networks) or 8label; default the recipe's")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="torch threads (default: every core)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random stream")
    parser.add_argument("--commit-every", type=float, default=0, metavar="SECONDS",
                        help="commit each fold's plane folder to git this often while it "
                             "trains, and at its end (0: never)")
    parser.add_argument("--no-subsets", action="store_true",
                        help="score only with all of each subject's modalities")
    parser.add_argument("--shipped", action="store_true",
                        help="no training: score the shipped weights on every subject "
                             "(training subjects: optimistic) -> <out>/shipped_<task>.tsv")
    parser.add_argument("--weights", type=Path, nargs="+", metavar="FILE",
                        help="no training: score these weight files (each sidecar names "
                             "its plane; the planes given are fused; 8-label networks with "
                             "--task 3label are scored in 3-label classes) -> "
                             "<out>/scores_<task>.tsv")
    parser.add_argument("--subjects", nargs="+", metavar="LABEL",
                        help="score only these subjects; in the cross-validation, run only "
                             "their folds (training still uses all the others), e.g. one "
                             "fold per cluster job")
    parser.add_argument("--report", action="store_true",
                        help="no training: print the Markdown tables of the folds finished "
                             "in --out (what docs/results.md shows)")
    args = parser.parse_args(argv)
    if args.list_recipes:
        print(recipe_listing())
        return 0
    recipe = get_recipe(args.recipe)
    task = args.task or ("3label" if recipe.task == "fine" else recipe.task)
    out = args.out or Path("checkpoints") / recipe.name / "cv"
    if args.report:
        from mixnet_bids.evaluation.cv_report import cv_markdown
        text = cv_markdown(out, task)
        if not text:
            parser.exit(1, f"mixnet-bids-cv: no cv_{task}_*.tsv in {out}; "
                           "run the cross-validation first (make cv)\n")
        print(text)
        return 0
    if args.mrbrains is None or args.cache is None:
        parser.error("--mrbrains and --cache are required (except with --report)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from mixnet_bids.runtime import keep_freed_memory, prepare_runtime

    prepare_runtime()
    keep_freed_memory()  # this process trains: reuse its memory from step to step
    from mixnet_bids.training.cache import build_cache, load_cached, subject_names
    from mixnet_bids.training.mrbrains import mrbrains_to_bids

    bids_dir = args.cache / "mrbrains_bids"
    with hold(args.cache / f"cache{SUFFIX}", wait=True):  # another process may build it
        found = subject_names(mrbrains_to_bids(args.mrbrains, bids_dir))
    wanted = subject_names(args.subjects or [])
    unknown = sorted(wanted - found)
    if unknown:
        parser.error(f"--subjects: {', '.join(unknown)} not in {args.mrbrains}")
    if args.weights:
        missing = [f for f in args.weights if not f.with_suffix(".json").is_file()]
        if missing:
            parser.error(f"--weights: {missing[0]}: its metadata "
                         f"{missing[0].with_suffix('.json')} is missing")
        metas = {f: read_metadata(f) for f in args.weights}
        tasks = {m["task"] for m in metas.values()}
        scorable = {task, "fine"} | ({"8label"} if task == "3label" else set())
        if len(tasks) > 1 or tasks - scorable:
            parser.error(f"--weights: networks of task {' and '.join(sorted(tasks))} cannot "
                         f"be scored as {task} (use --task)")
    with hold(args.cache / f"cache{SUFFIX}", wait=True):
        files = build_cache(bids_dir, bids_dir / "derivatives" / "manual",
                            args.cache / "preproc", args.cache / "work")
    subjects = [load_cached(f) for f in files]
    if args.shipped or args.weights:
        if args.shipped:
            name, files = "shipped", networks_for(task, list(PLANES), recipe.version)[1]
        else:
            name, files = "scores", {m["plane"]: f for f, m in metas.items()}
        if wanted:
            subjects = [s for s in subjects if s.name in wanted]
        rows = [r for s in subjects
                for r in score_subject(s, files, (task,), subsets=not args.no_subsets)[task]]
        table = pd.DataFrame(rows)
        write_atomically(table, out / f"{name}_{task}.tsv")
        print(table.groupby(["modalities", "label"], sort=False)[["dice", "hd95_mm", "vs"]]
              .mean().round(4).to_string())
        return 0
    volumes, _ = load_brainweb(args.brainweb, replace(recipe, validate_every=0), parser)
    command = "mixnet-bids-cv " + shlex.join(sys.argv[1:] if argv is None else argv)
    template = TrainConfig.from_recipe(recipe, "axial", seed=args.seed, threads=args.threads,
                                       commit_every=args.commit_every)
    held_out = [s for s in subjects if not wanted or s.name in wanted]
    cooldown_from = None
    if recipe.cooldown:
        try:
            cooldown_from = trained_cooldowns(Path("checkpoints") / recipe.name, template,
                                              plane_iterations(recipe, args))
        except (FileNotFoundError, ValueError) as err:
            parser.exit(2, f"mixnet-bids-cv: {err}\n")
    init_root = None
    if recipe.init_from:
        init_root = args.init_dir or Path("checkpoints") / recipe.init_from / "cv"
    try:
        cross_validate(subjects, held_out, template, plane_iterations(recipe, args), out,
                       command, volumes, recipe.batch, cooldown_from, init_root)
    except (RecipeMismatch, FileNotFoundError) as err:
        parser.exit(2, f"mixnet-bids-cv: {err}\n")
    except NonFiniteLoss as err:
        parser.exit(1, f"mixnet-bids-cv: {err}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
