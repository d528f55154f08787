"""Training loop for one plane's MixNet, with checkpoint/resume.

Optimiser as in the paper: SGD with Nesterov momentum 0.99, initial learning rate 2e-4
halved at 0.2, 0.4, 0.6, 0.75, 0.8, 0.85, 0.9 and 0.95 of the iterations, L2 weight decay
1e-3; pixel-wise cross-entropy with the ignored labels (9, 10) masked. For short CPU budgets,
``optimizer="adamw"`` swaps SGD for AdamW (decoupled weight decay), ``schedule="cosine"``
the halvings for a cosine decay, and ``bf16`` runs forward and backward under bfloat16
autocast (weights and loss stay float32).
"""

from __future__ import annotations

import json
import logging
import random
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mixnet_bids.inference.planes import TRAINING_SPACING
from mixnet_bids.inference.weights import save_weights, weight_path
from mixnet_bids.io import atomic_write
from mixnet_bids.labels import IGNORE_INDEX, TASK_CLASSES, n_classes
from mixnet_bids.model import MODALITIES, build_mixnet
from mixnet_bids.training.augment import AugmentConfig
from mixnet_bids.training.cache import CachedSubject
from mixnet_bids.training.dataset import SliceSampler

LOGGER = logging.getLogger(__name__)
LR_MILESTONES = (0.2, 0.4, 0.6, 0.75, 0.8, 0.85, 0.9, 0.95)


@dataclass
class TrainConfig:
    """Everything that defines one training run (dumped into the checkpoint folder)."""

    plane: str
    task: str = "3label"
    version: str = "v3"
    iterations: int = 2000
    batch_size: int = 8
    crop: tuple[int, int] | None = None
    lr: float = 2e-4
    #: "sgd" (the paper's, Nesterov) or "adamw"
    optimizer: str = "sgd"
    #: "paper": halve at LR_MILESTONES; "cosine": cosine decay from lr to 0 (more of a
    #: short budget spent at a high rate)
    schedule: str = "paper"
    #: bfloat16 autocast for forward/backward (CPUs with AVX-512 BF16 / AMX gain most)
    bf16: bool = False
    #: the InitUnit's 2x2 max pooling (the paper's memory saver); False trains at full
    #: resolution, 2-3x the time per iteration here
    pool: bool = True
    momentum: float = 0.99
    weight_decay: float = 1e-3
    class_weights: list[float] | None = None
    #: augmentation: extra probability of keeping T1w alone (see ``AugmentConfig``)
    p_t1w_only: float = 0.0
    seed: int = 0
    threads: int = 2
    checkpoint_every: int = 50
    #: stop (checkpointed) after this many iterations in this invocation, e.g. to fit a
    #: cluster job's time limit; rerunning resumes. None: run to the end.
    stop_after: int | None = None
    subjects: list[str] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


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


#: TrainConfig fields that may change between a run and its resumption
RESUMABLE_CHANGES = {"threads", "checkpoint_every", "stop_after"}


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


def step_loss(model: nn.Module, criterion: nn.Module, images: torch.Tensor,
              targets: torch.Tensor, bf16: bool) -> torch.Tensor:
    """Forward pass (under bfloat16 autocast if asked) and the float32 loss of one batch."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = model(images)
    return criterion(logits.float(), targets)


def memory_layout(bf16: bool) -> torch.memory_format:
    """Channels-last for float32 (faster on CPU); the default layout under bfloat16.

    Measured with torch 2.13.0 on an AMD EPYC (AVX-512 BF16, no AMX): under bfloat16
    autocast, the weight gradient of a grouped, dilated 3x3 convolution (MixNetv3's streams) is
    NaN in channels-last from 32 x 32 feature maps up, finite in the default layout.
    """
    return torch.contiguous_format if bf16 else torch.channels_last


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
            f"iteration {iteration} (lr {cfg.lr:g}, bf16 {cfg.bf16}); the weights were not "
            f"updated (the last checkpoint, if any: {checkpoint}); lower --lr or drop --bf16, "
            "with a new --out")


def train_plane(subjects: list[CachedSubject], cfg: TrainConfig, out_dir: Path,
                command: str = "") -> Path:
    """Train (or resume) one plane's network; return the exported weight file.

    Returns the checkpoint instead when ``cfg.stop_after`` ends the call early.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    cfg.subjects = [s.name for s in subjects]
    checkpoint = out_dir / "checkpoint.pt"
    if checkpoint.exists():
        check_same_recipe(out_dir / "config.json", cfg)
    (out_dir / "config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")

    sampler = SliceSampler(subjects, cfg.plane, cfg.task, cfg.crop,
                           AugmentConfig(p_t1w_only=cfg.p_t1w_only), seed=cfg.seed)
    model = build_mixnet(cfg.version, n_classes(cfg.task), pool=cfg.pool)
    layout = memory_layout(cfg.bf16)
    model = model.to(memory_format=layout)
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg)
    weights = torch.tensor(cfg.class_weights, dtype=torch.float32) if cfg.class_weights else None
    criterion = nn.CrossEntropyLoss(weight=weights, ignore_index=IGNORE_INDEX)

    start, elapsed = 0, 0.0
    if checkpoint.exists():
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        sampler.rng.bit_generator.state = state["sampler_rng"]
        torch.set_rng_state(state["torch_rng"])
        start, elapsed = int(state["iteration"]), float(state["elapsed"])
        LOGGER.info("resumed %s at iteration %d", checkpoint, start)

    log = open(out_dir / "log.tsv", "a", encoding="utf-8")
    if start == 0:
        log.write("iteration\tloss\tlr\tseconds\n")
    model.train()
    running, t0 = [], time.monotonic()
    end = cfg.iterations if cfg.stop_after is None else min(cfg.iterations,
                                                            start + cfg.stop_after)
    for iteration in range(start, end):
        images, targets = sampler.batch(cfg.batch_size)
        images = images.to(memory_format=layout)
        loss = step_loss(model, criterion, images, targets, cfg.bf16)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        check_finite(loss, model, cfg, iteration + 1, checkpoint)
        optimizer.step()
        scheduler.step()
        running.append(loss.item())
        done = iteration + 1
        if done % cfg.checkpoint_every == 0 or done == end:
            elapsed += time.monotonic() - t0
            t0 = time.monotonic()
            log.write(f"{done}\t{np.mean(running):.4f}\t{scheduler.get_last_lr()[0]:.3g}\t"
                      f"{elapsed:.0f}\n")
            log.flush()
            LOGGER.info("%s %s it %d/%d loss %.4f (%.0f s)", cfg.plane, cfg.task, done,
                        cfg.iterations, np.mean(running), elapsed)
            running = []
            atomic_write(checkpoint, lambda tmp: torch.save({
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "iteration": done, "elapsed": elapsed,
                "sampler_rng": sampler.rng.bit_generator.state,
                "torch_rng": torch.get_rng_state()}, tmp))
    log.close()
    if end < cfg.iterations:
        LOGGER.info("stopped at iteration %d of %d; rerun to resume", end, cfg.iterations)
        return checkpoint

    model = model.to(memory_format=torch.contiguous_format)
    metadata = {
        "task": cfg.task,
        "labels": list(TASK_CLASSES[cfg.task]),
        "plane": cfg.plane,
        "modalities": list(MODALITIES),
        "normalisation": "per-modality z-score inside its head mask, clipped to +-6, "
                         "background 0; absent modality = zero channel",
        "input_spacing_mm": list(TRAINING_SPACING),
        "training_data": cfg.subjects,
        "iterations": cfg.iterations,
        "batch_size": cfg.batch_size,
        "crop": list(sampler.crop),
        "p_t1w_only": cfg.p_t1w_only,
        "class_weights": cfg.class_weights,
        "optimizer": cfg.optimizer,
        "schedule": cfg.schedule,
        "lr": cfg.lr,
        "bf16": cfg.bf16,
        "seed": cfg.seed,
        "wall_time_s": round(elapsed),
        "git_commit": git_commit(),
        "command": command,
    }
    return save_weights(model, weight_path(cfg.task, cfg.plane, cfg.version, out_dir),
                        metadata)
