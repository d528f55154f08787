"""Benchmark one training iteration: batch sampling vs the network step, float32 vs
bfloat16 autocast, eager vs compiled, each in the memory layout training uses.

Times, in one process, the parts of ``train_plane``'s loop: ``SliceSampler.batch`` (real
cached MRBrainS subjects, augmentation included) and the optimiser step (forward, loss,
backward, AdamW update) of an eager network in float32 and under bfloat16 autocast, and of
the same network under ``torch.compile`` with bfloat16. The variants' blocks alternate so
that a busy machine slows them alike; the ratios are the result.
Writes ``<out>/train_step_<version>_<plane>.json``.

    python benchmarks/train_step.py --cache cache --out benchmarks/results
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from mixnet_bids.labels import IGNORE_INDEX, n_classes
from mixnet_bids.model.mixnet import build_mixnet
from mixnet_bids.training.cache import load_cached
from mixnet_bids.training.dataset import DEFAULT_BATCH, SliceSampler
from mixnet_bids.training.train import TrainConfig, make_optimizer, memory_layout, step_loss


def step_seconds(model: nn.Module, images: torch.Tensor, targets: torch.Tensor,
                 steps: int, bf16: bool) -> float:
    """Mean seconds per training step over ``steps`` steps."""
    optimizer = make_optimizer(model, TrainConfig(plane="axial", optimizer="adamw"))
    criterion = nn.CrossEntropyLoss(ignore_index=IGNORE_INDEX)
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step_loss(model, criterion, images, targets, bf16)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - t0) / steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", type=Path, required=True,
                        help="the training cache (make cv / make weights build <cache>/preproc)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--version", default="v3")
    parser.add_argument("--plane", default="axial")
    parser.add_argument("--task", default="3label")
    parser.add_argument("--steps", type=int, default=10, help="steps per timed block")
    parser.add_argument("--blocks", type=int, default=3, help="timed blocks per variant")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    files = sorted((args.cache / "preproc").glob("*.npz"))
    if not files:
        parser.error(f"no cached subjects in {args.cache / 'preproc'}; run make cv or "
                     "make weights first (they build it)")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    sampler = SliceSampler([load_cached(f) for f in files], args.plane, args.task)
    batch = DEFAULT_BATCH[args.plane]
    t0 = time.perf_counter()
    for _ in range(args.steps):
        images, targets = sampler.batch(batch)
    sample_s = (time.perf_counter() - t0) / args.steps
    # Each variant in the memory layout training uses for it (memory_layout in train.py).
    fp32_layout, bf16_layout = memory_layout(False), memory_layout(True)
    net = build_mixnet(args.version, n_classes(args.task))
    eager = copy.deepcopy(net).to(memory_format=fp32_layout)
    eager_bf16 = copy.deepcopy(net).to(memory_format=bf16_layout)
    compiled = torch.compile(net.to(memory_format=bf16_layout))
    inputs = {fp32_layout: images.contiguous(memory_format=fp32_layout),
              bf16_layout: images.contiguous(memory_format=bf16_layout)}
    eager.eval()
    compiled.eval()
    with torch.no_grad():
        max_diff = (eager(inputs[fp32_layout]) - compiled(inputs[bf16_layout])).abs().max().item()
    eager.train()
    compiled.train()
    variants = {"eager_fp32": (eager, False), "eager_bf16": (eager_bf16, True),
                "compiled_bf16": (compiled, True)}
    # The first step of each variant warms it up; the compiled one compiles its bf16 graphs.
    first_step_s = {name: step_seconds(model, inputs[memory_layout(bf16)], targets, 1, bf16)
                    for name, (model, bf16) in variants.items()}
    compile_s = first_step_s["compiled_bf16"]
    times = {name: [] for name in variants}
    for _ in range(args.blocks):
        for name, (model, bf16) in variants.items():
            times[name].append(step_seconds(model, inputs[memory_layout(bf16)], targets,
                                            args.steps, bf16))
    step_s = {name: statistics.median(t) for name, t in times.items()}

    report = {
        "version": args.version, "plane": args.plane, "task": args.task,
        "batch": [batch, *images.shape[1:]], "threads": args.threads,
        "layout": {"fp32": str(fp32_layout), "bf16": str(bf16_layout)},
        "torch": torch.__version__, "sample_batch_s": round(sample_s, 4),
        "step_s": {name: round(t, 4) for name, t in step_s.items()},
        "fp32_over_bf16": round(step_s["eager_fp32"] / step_s["eager_bf16"], 3),
        "eager_over_compiled_bf16": round(step_s["eager_bf16"] / step_s["compiled_bf16"], 3),
        "compile_s": round(compile_s, 1),
        "eval_logits_max_abs_diff": max_diff,
        "blocks": {k: [round(v, 4) for v in t] for k, t in times.items()},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"train_step_{args.version}_{args.plane}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
