"""Training loop for one plane's MixNet, with a compact checkpoint that resumes anywhere.

The recipe (``recipes.py``) fixes the optimiser, the schedule over the whole budget, the data
and the precision; ``TrainConfig`` is one plane's recipe plus the settings of this machine.
The checkpoint keeps everything a run needs to continue as if it had never stopped: weights,
optimiser (its moments in bfloat16, about 1 MB a network), scheduler, the samplers' and
torch's random states, the iteration and, once a recipe's cooldown has begun, its start,
end and starting rate. After each checkpoint the running optimiser takes
the rounded moments too, so that a run resumed from the checkpoint and one that went on
compute the same weights, bit for bit on one machine. ``commit_every`` commits the run
folder to git (``gitstate.py``) so the next machine continues it.
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from torch import nn

from mixnet_bids.inference.planes import TRAINING_SPACING
from mixnet_bids.inference.weights import load_model, save_weights, weight_path
from mixnet_bids.io import atomic_write, atomic_write_text
from mixnet_bids.labels import TASK_CLASSES, n_classes, target_membership
from mixnet_bids.model import MODALITIES, build_mixnet
from mixnet_bids.preprocessing import PREPROCESSING_VERSION
from mixnet_bids.training.augment import AugmentConfig
from mixnet_bids.training.cache import CachedSubject
from mixnet_bids.training.dataset import MixedSampler, SliceSampler
from mixnet_bids.training.gitstate import commit_state, git_commit, last_commit_time
from mixnet_bids.training.losses import CoarseLabelLoss
from mixnet_bids.training.precision import Precision, choose_precision
from mixnet_bids.training.recipes import Recipe
from mixnet_bids.training.validation import ValidationCase, tissue_dice
from mixnet_bids.versions import cpu_name

LOGGER = logging.getLogger(__name__)
LR_MILESTONES = (0.2, 0.4, 0.6, 0.75, 0.8, 0.85, 0.9, 0.95)


@dataclass
class TrainConfig:
    """One plane's training run: its recipe's settings plus this machine's (the file
    ``config.json`` of the run folder). Fields in ``RESUMABLE_CHANGES`` may change between a
    run and its resumption; any other change is a different recipe."""

    plane: str
    #: the recipe's name (``recipes.RECIPES``); "" for a config built by hand (tests)
    recipe: str = ""
    task: str = "3label"
    version: str = "v3"
    iterations: int = 2000
    batch_size: int = 8
    crop: tuple[int, int] | None = None
    lr: float = 2e-4
    #: "sgd" (the paper's, Nesterov) or "adamw"
    optimizer: str = "sgd"
    #: "paper": halve at LR_MILESTONES; "cosine": cosine decay from lr to 0
    schedule: str = "paper"
    #: "float32", "bfloat16", "auto" (layout, and for auto the precision, chosen by a check
    #: on the host at every start) or a fixed "<precision>-<layout>" (no check), e.g.
    #: "float32-default"
    precision: str = "float32-default"
    #: the InitUnit's 2x2 max pooling (the paper's memory saver)
    pool: bool = True
    momentum: float = 0.99
    weight_decay: float = 1e-3
    class_weights: list[float] | None = None
    #: loss weight near the brain/background border (``recipes.Recipe.edge_weight``)
    edge_weight: float = 1.0
    edge_width: int = 0
    edge_targets: list[bool] | None = None
    #: augmentation: extra probability of keeping T1w alone (see ``AugmentConfig``)
    p_t1w_only: float = 0.0
    #: share of samples synthesised from BrainWeb label maps (needs ``synth`` in train_plane)
    synth_fraction: float = 0.0
    #: iterations between validation scores (needs ``validation`` in train_plane; 0: never)
    validate_every: int = 0
    #: iterations of the linear learning-rate decay to 0 that ends the run once the
    #: validation curve has flattened (``recipes.Recipe.cooldown``); 0: train to the budget
    cooldown: int = 0
    #: start that cooldown at this iteration instead of when the curve flattens (the
    #: cross-validation folds: where the recipe's own network started)
    cooldown_from: int | None = None
    #: the synthesis' settings that differ from ``synth.SynthConfig``'s defaults
    synth: dict = field(default_factory=dict)
    #: weight file whose network the run starts from (``recipes.Recipe.init_from``; its
    #: task, version and pooling must be the run's); None: random initialisation
    init_weights: str | None = None
    seed: int = 0
    threads: int = 2
    checkpoint_every: int = 50
    #: stop (checkpointed) after this many iterations in this invocation, e.g. to fit a
    #: cluster job's time limit; rerunning resumes. None: run to the end.
    stop_after: int | None = None
    #: commit the run folder to git at the first checkpoint this many seconds after its last
    #: commit (as git records it), and at the end; 0: never
    commit_every: float = 0
    subjects: list[str] = field(default_factory=list)

    @classmethod
    def from_recipe(cls, recipe: Recipe, plane: str, **machine) -> "TrainConfig":
        """One plane of ``recipe``; ``machine``: seed, threads, checkpoint_every, ..."""
        return cls(plane=plane, recipe=recipe.name, task=recipe.task, version=recipe.version,
                   iterations=recipe.iterations[plane], batch_size=recipe.batch[plane],
                   lr=recipe.lr, optimizer=recipe.optimizer, schedule=recipe.schedule,
                   precision=recipe.precision, pool=recipe.pool, momentum=recipe.momentum,
                   weight_decay=recipe.weight_decay,
                   class_weights=list(recipe.class_weights) if recipe.class_weights else None,
                   edge_weight=recipe.edge_weight, edge_width=recipe.edge_width,
                   edge_targets=(list(recipe.edge_targets) if recipe.edge_targets is not None
                                 else None),
                   p_t1w_only=recipe.p_t1w_only, synth_fraction=recipe.synth_fraction,
                   validate_every=recipe.validate_every, cooldown=recipe.cooldown,
                   synth=dict(recipe.synth), **machine)


#: Training batches whose plain average replaces the BatchNorm running statistics before a
#: network is exported (``reestimate_batchnorm``; evidence in docs/results.md, the long run).
BATCHNORM_BATCHES = 100


def reestimate_batchnorm(model: nn.Module, batches: Iterable[torch.Tensor]) -> None:
    """Replace every BatchNorm layer's running statistics by their plain average over
    ``batches`` (float32 forward passes in training mode, no gradients); leaves the model in
    eval mode. The statistics of training (an exponential average, momentum 0.1) follow the
    last few batches only."""
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in layers]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # cumulative average
    model.train()
    try:
        with torch.no_grad():
            for batch in batches:
                model(batch)
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
        model.eval()


def make_sampler(subjects: list[CachedSubject], cfg: TrainConfig, synth=None):
    """The training batches of ``cfg``: real slices of ``subjects`` (augmented), mixed with
    ``synth`` (a ``synth.SynthSampler`` of the plane) in the recipe's share."""
    sampler = SliceSampler(subjects, cfg.plane, cfg.task, cfg.crop,
                           AugmentConfig(p_t1w_only=cfg.p_t1w_only), seed=cfg.seed)
    if cfg.synth_fraction == 0:
        return sampler
    if synth is None:
        raise ValueError(f"{cfg.recipe or 'this recipe'} synthesises "
                         f"{cfg.synth_fraction:.0%} of its samples: give the BrainWeb "
                         "label maps (--brainweb)")
    return MixedSampler(sampler, synth, cfg.synth_fraction, seed=cfg.seed)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The paper's Nesterov SGD, or AdamW with the same learning rate and weight decay."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                               nesterov=True, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; choose sgd or adamw")


def make_scheduler(optimizer: torch.optim.Optimizer,
                   cfg: TrainConfig) -> torch.optim.lr_scheduler.LRScheduler:
    """The paper's halvings at fixed fractions of the iterations, or a cosine decay."""
    if cfg.schedule == "paper":
        milestones = sorted({max(1, int(f * cfg.iterations)) for f in LR_MILESTONES})
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=0.5)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(1, cfg.iterations))
    raise ValueError(f"unknown schedule {cfg.schedule!r}; choose paper or cosine")


def begin_cooldown(cfg: TrainConfig, optimizer: torch.optim.Optimizer, done: int,
                   finish: int, why: str) -> dict:
    """The cooldown starting after iteration ``done``: from the learning rate the schedule
    gives next, down to 0 over ``cfg.cooldown`` iterations (or to ``finish``)."""
    cooldown = {"from": done, "to": min(finish, done + cfg.cooldown),
                "lr": optimizer.param_groups[0]["lr"], "why": why}
    LOGGER.info("%s %s: %s at iteration %d; the learning rate falls from %.3g to 0 by "
                "iteration %d, then the network is exported", cfg.plane, cfg.task, why, done,
                cooldown["lr"], cooldown["to"])
    return cooldown


def cooldown_lr(cooldown: dict, done: int) -> float:
    """The learning rate after iteration ``done`` of a cooldown (``{"from", "to", "lr"}``):
    a straight line from its starting rate at ``from`` to 0 at ``to``."""
    return cooldown["lr"] * (cooldown["to"] - done) / (cooldown["to"] - cooldown["from"])


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def make_loss(cfg: TrainConfig) -> CoarseLabelLoss:
    """Cross-entropy over the task's classes (for the fine task, over the targets' sets),
    with the recipe's class and brain-edge weights."""
    membership = (target_membership() if cfg.task == "fine"
                  else np.eye(n_classes(cfg.task), dtype=bool))
    return CoarseLabelLoss(membership, cfg.class_weights, cfg.edge_weight, cfg.edge_width,
                           cfg.edge_targets)


#: TrainConfig fields that may change between a run and its resumption
#: (``init_weights`` only matters at the start; afterwards the checkpoint holds the weights)
RESUMABLE_CHANGES = {"threads", "stop_after", "commit_every", "init_weights"}


def _as_json(cfg: TrainConfig) -> dict:
    return json.loads(json.dumps(asdict(cfg)))  # tuples as lists, as in config.json


class RecipeMismatch(ValueError):
    """A checkpoint that a different recipe trained."""


def check_same_recipe(config_file: Path, cfg: TrainConfig) -> None:
    """Refuse to resume a checkpoint that was trained with a different recipe."""
    if not config_file.exists():
        return
    # fields added after the checkpoint was written held their defaults
    before = {**_as_json(TrainConfig(plane=cfg.plane)), **json.loads(config_file.read_text())}
    now = _as_json(cfg)
    changed = sorted(k for k in now.keys() - RESUMABLE_CHANGES if before[k] != now[k])
    if changed:
        settings = ", ".join(f"{k}={before[k]!r}" for k in changed)
        raise RecipeMismatch(f"{config_file.parent}: its checkpoint was trained with other "
                             f"settings ({settings}); use a new --out, or delete the folder "
                             "to start over")


def check_same_preprocessing(state: dict, checkpoint: Path) -> None:
    """Refuse to resume a checkpoint (``state``, loaded from ``checkpoint``) trained on images
    of another ``PREPROCESSING_VERSION`` (checkpoints written before it was recorded are not
    judged): its sidecar would name one version for a network trained on two."""
    trained_on = state.get("preprocessing_version")
    if trained_on is not None and trained_on != PREPROCESSING_VERSION:
        raise RecipeMismatch(f"{checkpoint}: trained on images of preprocessing version "
                             f"{trained_on}, but this code makes version "
                             f"{PREPROCESSING_VERSION}; continue it as a new recipe "
                             "(init_from) with a new --out, or delete the folder to start "
                             "over")


def step_loss(model: nn.Module, criterion: nn.Module, images: torch.Tensor,
              targets: torch.Tensor, bf16: bool) -> torch.Tensor:
    """Forward pass (under bfloat16 autocast if asked) and the float32 loss of one batch."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = model(images)
    return criterion(logits.float(), targets)


class NonFiniteLoss(FloatingPointError):
    """Training produced a NaN or infinite loss or gradient."""


def check_finite(loss: torch.Tensor, model: nn.Module, cfg: TrainConfig, iteration: int,
                 checkpoint: Path) -> None:
    """Stop before a NaN/Inf loss or gradient reaches the weights (and the checkpoint)."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    norm = torch.nn.utils.get_total_norm(grads)
    if not (torch.isfinite(loss) and torch.isfinite(norm)):
        raise NonFiniteLoss(
            f"{cfg.plane} network: loss {loss.item():.4g}, gradient norm {norm.item():.4g} at "
            f"iteration {iteration} (lr {cfg.lr:g}, precision {cfg.precision}); the weights "
            f"were not updated (the last checkpoint, if any: {checkpoint}); lower the "
            "learning rate or train in float32 (another recipe), with a new --out")


def check_network(cfg: TrainConfig) -> nn.Module:
    """The network the host check runs: the recipe's architecture, initialised from seed 0
    with random draws of its own (the run's random stream is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build_mixnet(cfg.version, n_classes(cfg.task), pool=cfg.pool)


def check_batch(cfg: TrainConfig, crop: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The random batch the host check runs, from a generator of its own (the run's random
    streams are left as they were)."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randn((cfg.batch_size, len(MODALITIES), *crop), generator=generator)
    targets = torch.randint(0, n_classes(cfg.task), (cfg.batch_size, *crop),
                            generator=generator)
    return images, targets


def host_precision(criterion: nn.Module, cfg: TrainConfig, crop: tuple[int, int],
                   previous: str | None = None) -> tuple[Precision, dict]:
    """The precision and layout this run trains in on this host (see precision.py); a fixed
    ``<precision>-<layout>`` is taken as it is. ``previous`` (the run's last choice) is kept
    when it passes this host's check and its step takes at most ``PREFER_SLOWDOWN`` times the
    fastest passing candidate's time (``precision.pick``), so restarts on one host do not
    switch unless the check's timings move by more than that.

    The check runs a freshly initialised network of the recipe's architecture, whatever the
    run starts from or resumes: it tests this host's kernels, and gives one answer for a
    run that starts from trained weights and for the same run resumed. The gradients of a
    trained network are small sums of large, cancelling terms: on them even float32 in
    channels-last differs from the default layout by up to 5 %, and bfloat16 by 4-24 %,
    against 95-287 % between one batch's gradient and the next's
    (``benchmarks/precision_probe.py``, docs/training.md)."""
    if "-" in cfg.precision:
        name, layout = cfg.precision.split("-", 1)
        return Precision(name == "bfloat16", layout), {}
    images, targets = check_batch(cfg, crop)
    return choose_precision(check_network(cfg), criterion, images, targets, cfg.precision,
                            prefer=previous)


def last_precision(hosts_file: Path) -> str | None:
    """The precision and layout of the run's last start (``hosts.jsonl``), if any."""
    if not hosts_file.exists():
        return None
    lines = hosts_file.read_text().splitlines()
    return json.loads(lines[-1])["precision"] if lines else None


def compact_optimizer_state(state: dict) -> dict:
    """The optimiser's state dict with its moment tensors in bfloat16 (half the bytes)."""
    return {**state, "state": {
        k: {name: v.to(torch.bfloat16) if v.is_floating_point() and v.numel() > 1 else v
            for name, v in per_param.items()}
        for k, per_param in state["state"].items()}}


def _log_header(log_file: Path, start: int) -> None:
    """Start the log, or keep its rows up to the checkpoint's iteration ``start``: a run
    killed after logging a row and before saving its checkpoint logs that row again."""
    header = "iteration\tloss\tlr\tseconds\tval_GM\tval_WM\tval_CSF\n"
    if not log_file.exists() or log_file.stat().st_size == 0:
        log_file.write_text(header)
        return
    lines = log_file.read_text().splitlines(keepends=True)
    kept = [line for line in lines[1:] if int(line.split("\t", 1)[0]) <= start]
    if len(kept) < len(lines) - 1:
        atomic_write_text(log_file, "".join([lines[0], *kept]))


def run_name(cfg: TrainConfig, out_dir: Path) -> str:
    """The run in commit messages: recipe and plane, and the fold of a cross-validation
    (whose folders are ``<fold>/<plane>``, not ``<task>_<version>_<plane>``)."""
    if out_dir.name == f"{cfg.task}_{cfg.version}_{cfg.plane}":
        return f"{cfg.recipe} {cfg.plane}"
    return f"{cfg.recipe} fold {out_dir.parent.name} {cfg.plane}"


def save_state(out_dir: Path, message: str, curves_dir: Path | None) -> None:
    """Commit the run folder to git, with its learning curve redrawn in ``curves_dir``."""
    paths = [out_dir]
    if curves_dir is not None:
        from mixnet_bids.training.curves import plot_curve
        name = f"{out_dir.parent.name}_{out_dir.name}"
        paths.append(plot_curve(out_dir / "log.tsv", Path(curves_dir) / f"{name}.png",
                                f"{out_dir.parent.name}: {out_dir.name}"))
    commit_state(paths, message)


def _finished(state: dict, cfg: TrainConfig) -> bool:
    """Whether a checkpoint's ``state`` is at the end of its schedule, or of its cooldown."""
    cooldown = state.get("cooldown")
    return int(state["iteration"]) >= (cooldown["to"] if cooldown else cfg.iterations)


def start_from(model: nn.Module, path: Path, cfg: TrainConfig) -> None:
    """Load the network of the weight file ``path`` (verified, ``weights_only``) into
    ``model``; a RecipeMismatch names a file whose network is not the run's."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the starting network of recipe {cfg.recipe!r} "
                                "is not trained yet; train the recipe it starts from "
                                "(init_from) first")
    trained, meta = load_model(path)
    theirs = (meta.get("task"), meta.get("version"), meta.get("plane"), trained.pool)
    if theirs != (cfg.task, cfg.version, cfg.plane, cfg.pool):
        raise RecipeMismatch(f"{path}: a {theirs[0]} {theirs[1]} {theirs[2]} network "
                             f"(pool={theirs[3]}) cannot start a {cfg.task} {cfg.version} "
                             f"{cfg.plane} run (pool={cfg.pool})")
    model.load_state_dict(trained.state_dict())
    LOGGER.info("%s %s: starting from %s", cfg.plane, cfg.task, path)


def _initialised_from(cfg: TrainConfig) -> dict | str:
    """The starting network for the sidecar: its file and SHA-256, or "random"."""
    if not cfg.init_weights:
        return "random"
    sidecar = Path(cfg.init_weights).with_suffix(".json")
    digest = json.loads(sidecar.read_text()).get("sha256") if sidecar.is_file() else None
    return {"file": cfg.init_weights, "sha256": digest}


def train_plane(subjects: list[CachedSubject], cfg: TrainConfig, out_dir: Path,
                command: str = "", synth=None,
                validation: list[ValidationCase] | None = None,
                curves_dir: Path | None = None) -> Path:
    """Train (or resume) one plane's network; return the exported weight file. A plane
    whose run has finished and been exported is left as it is.

    ``synth``: a ``synth.SynthSampler`` of this plane (when ``cfg.synth_fraction`` > 0);
    ``validation``: volumes scored every ``cfg.validate_every`` iterations (learning curve);
    ``curves_dir``: where each commit of the state (``cfg.commit_every``) redraws the curve.
    Returns the checkpoint instead when ``cfg.stop_after`` ends the call early.
    """
    out_dir = Path(out_dir)
    checkpoint = out_dir / "checkpoint.pt"
    torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    model = build_mixnet(cfg.version, n_classes(cfg.task), pool=cfg.pool)
    if cfg.init_weights and not checkpoint.exists():
        start_from(model, Path(cfg.init_weights), cfg)   # before anything is written
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg.subjects = [s.name for s in subjects] + (synth.names if synth else [])
    state = (torch.load(checkpoint, map_location="cpu", weights_only=True)
             if checkpoint.exists() else None)
    if state is not None:
        check_same_recipe(out_dir / "config.json", cfg)
        export = weight_path(cfg.task, cfg.plane, cfg.version, out_dir)
        if export.exists() and _finished(state, cfg):
            # exporting again would re-estimate its statistics with today's code and change
            # the weights that were validated and committed
            LOGGER.info("%s %s: finished earlier, keeping %s", cfg.plane, cfg.task, export)
            return export
        check_same_preprocessing(state, checkpoint)
    (out_dir / "config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")

    sampler = make_sampler(subjects, cfg, synth)
    criterion = make_loss(cfg)
    precision, report = host_precision(criterion, cfg, sampler.crop,
                                       last_precision(out_dir / "hosts.jsonl"))
    model = model.to(memory_format=precision.memory_format)
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg)

    start, elapsed, cooldown = 0, 0.0, None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        sampler.set_state(state["sampler"])
        torch.set_rng_state(state["torch_rng"])
        start, elapsed = int(state["iteration"]), float(state["elapsed"])
        cooldown = state.get("cooldown")
        LOGGER.info("resumed %s at iteration %d", checkpoint, start)
    with open(out_dir / "hosts.jsonl", "a", encoding="utf-8") as hosts:
        hosts.write(json.dumps({"iteration": start, "cpu": cpu_name(), "torch": torch.__version__,
                                "threads": cfg.threads, "precision": precision.describe(),
                                "check": report}) + "\n")
    LOGGER.info("%s %s: training in %s", cfg.plane, cfg.task, precision.describe())

    log_file = out_dir / "log.tsv"
    _log_header(log_file, start)
    model.train()
    running, t0 = [], time.monotonic()
    last_commit = last_commit_time(out_dir) if cfg.commit_every else 0.0
    # the last iteration: the budget's, or the cooldown's once the curve has flattened
    finish = cooldown["to"] if cooldown else cfg.iterations
    end = finish
    if cfg.stop_after is not None:
        # stop at a checkpoint the uninterrupted run makes too: the optimiser's moments are
        # rounded at checkpoints, so the same checkpoints give the same weights
        every = cfg.checkpoint_every
        end = min(finish, -(-(start + cfg.stop_after) // every) * every)
    done = start
    while done < end:
        images, targets = sampler.batch(cfg.batch_size)
        images = images.to(memory_format=precision.memory_format)
        loss = step_loss(model, criterion, images, targets, precision.bf16)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        check_finite(loss, model, cfg, done + 1, checkpoint)
        optimizer.step()
        done += 1
        if cooldown:
            set_lr(optimizer, cooldown_lr(cooldown, done))
        else:
            scheduler.step()
            if cfg.cooldown and done == cfg.cooldown_from and done < finish:
                cooldown = begin_cooldown(cfg, optimizer, done, finish,
                                          "cooling down where the recipe's network did")
                finish, end = cooldown["to"], min(end, cooldown["to"])
        running.append(loss.item())
        if done % cfg.checkpoint_every and done != end:
            continue
        elapsed += time.monotonic() - t0
        scores = {}
        if validation and cfg.validate_every and (done % cfg.validate_every == 0
                                                  or done == finish):
            scores = tissue_dice(model, cfg.task, validation, cfg.plane)
        with open(log_file, "a", encoding="utf-8") as log:
            val = "\t".join(f"{scores[t]:.4f}" if t in scores else "" for t in
                            ("GM", "WM", "CSF"))
            log.write(f"{done}\t{np.mean(running):.4f}\t{optimizer.param_groups[0]['lr']:.3g}"
                      f"\t{elapsed:.0f}\t{val}\n")
        LOGGER.info("%s %s it %d/%d loss %.4f (%.0f s)%s", cfg.plane, cfg.task, done,
                    finish, np.mean(running), elapsed,
                    "".join(f" {t} {v:.3f}" for t, v in scores.items()))
        if scores:
            import pandas as pd

            from mixnet_bids.training.curves import describe_gain, has_flattened

            curve = pd.read_csv(log_file, sep="\t")
            LOGGER.info("%s %s %s", cfg.plane, cfg.task, describe_gain(curve))
            if (cfg.cooldown and cfg.cooldown_from is None and not cooldown and done < finish
                    and has_flattened(curve)):
                cooldown = begin_cooldown(cfg, optimizer, done, finish,
                                          "the validation curve has flattened")
                finish, end = cooldown["to"], min(end, cooldown["to"])
        running = []
        compact = compact_optimizer_state(optimizer.state_dict())
        atomic_write(checkpoint, lambda tmp: torch.save({
            "model": model.state_dict(), "optimizer": compact,
            "scheduler": scheduler.state_dict(), "iteration": done, "elapsed": elapsed,
            "sampler": sampler.state(), "torch_rng": torch.get_rng_state(),
            "cooldown": cooldown, "preprocessing_version": PREPROCESSING_VERSION}, tmp))
        # go on from what was saved, so that a resumed run is this run
        optimizer.load_state_dict(compact)
        t0 = time.monotonic()
        if cfg.commit_every and time.time() - last_commit >= cfg.commit_every:
            save_state(out_dir, f"training state: {run_name(cfg, out_dir)} at iteration "
                                f"{done} of {finish}", curves_dir)
            last_commit = time.time()
    if end < finish:
        LOGGER.info("stopped at iteration %d of %d; rerun to resume", end, finish)
        if cfg.commit_every:
            save_state(out_dir, f"training state: {run_name(cfg, out_dir)} stopped at "
                                f"iteration {end} of {finish}", curves_dir)
        return checkpoint

    # the exported statistics: a plain average over training batches, not the last few
    batches = min(BATCHNORM_BATCHES, cfg.iterations)
    reestimate_batchnorm(model, (sampler.batch(cfg.batch_size)[0].to(
        memory_format=precision.memory_format) for _ in range(batches)))
    model = model.to(memory_format=torch.contiguous_format)
    metadata = {
        "task": cfg.task,
        "labels": list(TASK_CLASSES[cfg.task]),
        "plane": cfg.plane,
        "modalities": list(MODALITIES),
        "normalisation": "per-modality z-score inside its head mask, clipped to +-6, "
                         "background 0; absent modality = zero channel",
        "preprocessing_version": PREPROCESSING_VERSION,
        "input_spacing_mm": list(TRAINING_SPACING),
        "training_data": cfg.subjects,
        "recipe": cfg.recipe,
        "initialised_from": _initialised_from(cfg),
        "settings": {k: v for k, v in _as_json(cfg).items()
                     if k not in RESUMABLE_CHANGES | {"subjects", "plane"}},
        "iterations": finish,
        "stopped": (f"{cooldown['why']} at iteration {cooldown['from']} of a "
                    f"{cfg.iterations}-iteration schedule; the learning rate then fell "
                    f"linearly from {cooldown['lr']:.3g} to 0" if cooldown else
                    "at the end of its schedule"),
        "cooldown": cooldown,
        "batchnorm_statistics": f"re-estimated on {batches} training batches",
        "crop": list(sampler.crop),
        "precision_by_host": [json.loads(line) for line in
                              (out_dir / "hosts.jsonl").read_text().splitlines()],
        "wall_time_s": round(elapsed),
        "git_commit": git_commit(),
        "command": command,
    }
    path = save_weights(model, weight_path(cfg.task, cfg.plane, cfg.version, out_dir),
                        metadata)
    if cfg.commit_every:
        save_state(out_dir, f"training state: {run_name(cfg, out_dir)} finished "
                            f"({finish} iterations)", curves_dir)
    return path
