"""Benchmark one training iteration: batch sampling (real, synthetic) beside the network step
in each precision and memory layout, on this host.

Times, in one process, the parts of ``train_plane``'s loop for a recipe:
- a batch of real MRBrainS slices (``SliceSampler``, augmentation included) and, with
  ``--brainweb``, a batch synthesised from BrainWeb label maps (``SynthSampler``): the
  synthesis must not keep the step waiting;
- the optimiser step (forward, loss, backward, AdamW update) of the recipe's network in every
  precision/layout candidate of ``training.precision``, gradients checked against float32 as
  the run's start-up check does (a candidate with NaN or wrong gradients is reported, not
  timed).
The candidates' blocks alternate so that a busy machine slows them alike; the ratios are the
result: each candidate against the shipped weights' recipe (bfloat16, default layout) and
the sampling against the step.

Then the step as this code runs it (the host's choice, freed memory kept) against the step
as the code of ``--against`` ran it (default: the commit before the training machinery,
whose recipe trained in bfloat16 in the default layout): the same network and batch, the
model code of each commit (a ``git worktree``), one process per timed block, alternating;
the ratio is the median of the ratios of the blocks run side by side.
Writes ``<out>/train_step_<version>_<plane>.json``.

    python benchmarks/train_step.py --cache cache --brainweb ../shared/data/brainweb20 \\
        --out benchmarks/results
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from mixnet_bids.labels import n_classes
from mixnet_bids.model.mixnet import build_mixnet
from mixnet_bids.training.cache import load_cached
from mixnet_bids.training.dataset import DEFAULT_CROPS, SliceSampler
from mixnet_bids.training.precision import CANDIDATES, Precision, choose_precision
from mixnet_bids.training.recipes import BRAINWEB_HELD_OUT, RECIPES
from mixnet_bids.training.train import TrainConfig, make_loss, make_optimizer, step_loss
from mixnet_bids.versions import cpu_name

#: the shipped weights' recipe trains in bfloat16, default layout: the baseline of the ratios
BASELINE = Precision(True, "default")
#: the code the training issue measured its step against (before recipes, compact state and
#: the per-host layout: 09c6721 added them)
AGAINST = "09c6721^"
#: one timed block in a fresh process: MixNet of the code on PYTHONPATH, AdamW, cross-entropy,
#: in the given precision and layout; prints the mean seconds per step
STEP_PROBE = """
import sys, time, torch
import torch.nn.functional as F
import mixnet_bids
from mixnet_bids.model.mixnet import build_mixnet
version, n_classes, batch, h, w, threads, precision, layout, steps, keep, code = sys.argv[1:]
assert mixnet_bids.__file__.startswith(code), (mixnet_bids.__file__, code)
if keep == "keep":
    from mixnet_bids.runtime import keep_freed_memory
    keep_freed_memory()
torch.set_num_threads(int(threads))
torch.manual_seed(0)
fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
model = build_mixnet(version, int(n_classes)).to(memory_format=fmt).train()
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-3)
x = torch.randn(int(batch), 3, int(h), int(w)).contiguous(memory_format=fmt)
y = torch.randint(0, int(n_classes), (int(batch), int(h), int(w)))
def step():
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bfloat16"):
        logits = model(x)
    loss = F.cross_entropy(logits.float(), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
for _ in range(2):
    step()
t0 = time.perf_counter()
for _ in range(int(steps)):
    step()
print((time.perf_counter() - t0) / int(steps))
"""


def sampling_seconds(draw_batch, repeats: int) -> float:
    """Mean seconds of ``draw_batch()`` over ``repeats`` calls."""
    t0 = time.perf_counter()
    for _ in range(repeats):
        draw_batch()
    return (time.perf_counter() - t0) / repeats


def step_seconds(model, optimizer, criterion, images, targets, precision: Precision,
                 steps: int) -> float:
    """Mean seconds per training step over ``steps`` steps."""
    images = images.contiguous(memory_format=precision.memory_format)
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step_loss(model, criterion, images, targets, precision.bf16)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - t0) / steps


def against_commit(ref: str, version: str, classes: int, batch: int, crop, threads: int,
                   chosen: Precision, steps: int, blocks: int) -> dict:
    """Seconds per step of the code of ``ref`` (bfloat16, default layout, as its recipe
    trained) and of this code (the host's ``chosen`` precision and layout, freed memory
    kept), one process per block, alternating."""
    repo = Path(__file__).resolve().parents[1]
    sha = subprocess.run(["git", "rev-parse", ref], cwd=repo, check=True, capture_output=True,
                         text=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "against"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(tree), sha], cwd=repo,
                       check=True)
        try:
            runs = {"against": (tree, BASELINE, "default"), "this": (repo, chosen, "keep")}
            times = {name: [] for name in runs}
            for _ in range(blocks):
                for name, (code, precision, keep) in runs.items():
                    out = subprocess.run(
                        [sys.executable, "-c", STEP_PROBE, version, str(classes), str(batch),
                         str(crop[0]), str(crop[1]), str(threads),
                         "bfloat16" if precision.bf16 else "float32", precision.layout,
                         str(steps), keep, str(code)],
                        # from the code's folder: ``python -c`` puts the working folder
                        # first on sys.path, before PYTHONPATH
                        cwd=code, env={**os.environ, "PYTHONPATH": str(code)}, check=True,
                        capture_output=True, text=True).stdout
                    times[name].append(float(out.split()[-1]))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=repo,
                           check=False)
    step = {name: statistics.median(t) for name, t in times.items()}
    # the ratio of each block's pair, run one after the other: a host whose speed drifts
    # between blocks (shared machines do, by 20 % here) slows both sides of a pair alike
    ratios = [a / t for a, t in zip(times["against"], times["this"])]
    return {"ref": ref, "commit": sha, "this": chosen.describe(), "against": BASELINE.describe(),
            "step_s": {k: round(v, 4) for k, v in step.items()},
            "blocks_s": {k: [round(v, 4) for v in t] for k, t in times.items()},
            "against_over_this": round(statistics.median(ratios), 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    parser.add_argument("--cache", type=Path, required=True,
                        help="the training cache (make weights / make cv build <cache>/preproc)")
    parser.add_argument("--brainweb", type=Path, default=None,
                        help="BrainWeb label maps: also time the synthetic batches")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--recipe", default="wholebrain-synth-v1", choices=list(RECIPES))
    parser.add_argument("--plane", default="axial")
    parser.add_argument("--steps", type=int, default=5, help="steps per timed block")
    parser.add_argument("--blocks", type=int, default=5, help="timed blocks per variant")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--against", default=AGAINST, metavar="REF",
                        help=f"the commit whose step this code's is compared with (default "
                             f"{AGAINST}); '' skips it")
    args = parser.parse_args(argv)
    files = sorted((args.cache / "preproc").glob("*.npz"))
    if not files:
        parser.error(f"no cached subjects in {args.cache / 'preproc'}; run make weights "
                     "first (it builds it)")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    recipe = RECIPES[args.recipe]
    cfg = TrainConfig.from_recipe(recipe, args.plane, threads=args.threads)
    batch, crop = cfg.batch_size, DEFAULT_CROPS[args.plane]

    real = SliceSampler([load_cached(f) for f in files], args.plane, recipe.task, crop)
    sampling = {"real_batch_s": sampling_seconds(lambda: real.batch(batch), args.steps)}
    if args.brainweb:
        from mixnet_bids.training.synth import SynthSampler, load_label_volumes
        volumes = [v for v in load_label_volumes(args.brainweb)[:4]
                   if v.name not in BRAINWEB_HELD_OUT]
        synth = SynthSampler(volumes, args.plane, crop)
        sampling["synthetic_batch_s"] = sampling_seconds(
            lambda: [synth.sample() for _ in range(batch)], args.steps)
    images, targets = real.batch(batch)

    net = build_mixnet(recipe.version, n_classes(recipe.task))
    criterion = make_loss(cfg)
    chosen, check = choose_precision(net, criterion, images, targets, "auto")
    candidates = [Precision(bf16, layout) for bf16, layout in CANDIDATES["auto"]
                  if check[Precision(bf16, layout).describe()]["ok"]]
    runs = {}
    for candidate in candidates:
        model = copy.deepcopy(net).to(memory_format=candidate.memory_format).train()
        runs[candidate] = (model, make_optimizer(model, cfg))
        step_seconds(*runs[candidate], criterion, images, targets, candidate, 1)  # warm-up
    times = {c: [] for c in candidates}
    for _ in range(args.blocks):
        for candidate, (model, optimizer) in runs.items():
            times[candidate].append(step_seconds(model, optimizer, criterion, images, targets,
                                                 candidate, args.steps))
    step_s = {c.describe(): statistics.median(t) for c, t in times.items()}
    base = step_s.get(BASELINE.describe())
    report = {
        "recipe": recipe.name, "plane": args.plane, "task": recipe.task,
        "batch": [batch, 3, *crop], "threads": args.threads, "torch": torch.__version__,
        "cpu": cpu_name(),
        "sampling_s": {k: round(v, 4) for k, v in sampling.items()},
        "step_s": {k: round(v, 4) for k, v in step_s.items()},
        "rejected": [k for k, v in check.items() if not v["ok"]],
        "host_choice": chosen.describe(),
        "baseline": BASELINE.describe(),
        "baseline_over_candidate": ({k: round(base / v, 3) for k, v in step_s.items()}
                                    if base else None),
        "sampling_over_step": {k: round(v / step_s[chosen.describe()], 3)
                               for k, v in sampling.items()},
        "gradient_check": check,
    }
    if args.against:
        report["against_commit"] = against_commit(
            args.against, recipe.version, n_classes(recipe.task), batch, crop, args.threads,
            chosen, args.steps, args.blocks)
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"train_step_{recipe.version}_{args.plane}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
