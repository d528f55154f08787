"""Probe: does re-estimating the BatchNorm statistics steady the long run's validation Dice?

The long run's validation Dice swings between checkpoints (CSF most). One suspect: the
running statistics of BatchNorm, an exponential average (momentum 0.1) over the last few
batches of 8 slices, half of them synthesised with random intensities. For each committed
checkpoint of a run (read from git), this scores the held-out BrainWeb validation set as
the run does, then again after re-estimating every BatchNorm layer's statistics as a plain
average over ``--batches`` training batches (the same batches for every checkpoint, drawn
by the recipe's own samplers with another seed), and prints both as a Markdown table.

    python benchmarks/batchnorm_probe.py --cache cache --brainweb ../shared/data/brainweb20 \\
        --commits 9aec016 191b82a 28a3460 d8320dd 695716a e187f4e a7f04d1
"""

from __future__ import annotations

import argparse
import io
import subprocess
import time
from pathlib import Path

import torch

from mixnet_bids.labels import TISSUES, n_classes
from mixnet_bids.model import build_mixnet
from mixnet_bids.training.cache import load_cached
from mixnet_bids.training.dataset import DEFAULT_CROPS
from mixnet_bids.training.recipes import BRAINWEB_HELD_OUT, get_recipe
from mixnet_bids.training.synth import SynthSampler, load_label_volumes
from mixnet_bids.training.train import TrainConfig, make_sampler, reestimate_batchnorm
from mixnet_bids.training.validation import brainweb_cases, tissue_dice


def checkpoint_at(commit: str, path: str) -> dict:
    """A checkpoint as committed to git at ``commit``."""
    blob = subprocess.run(["git", "show", f"{commit}:{path}"], capture_output=True,
                          check=True).stdout
    return torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="wholebrain-synth-v1")
    parser.add_argument("--plane", default="axial")
    parser.add_argument("--cache", type=Path, required=True, help="training cache")
    parser.add_argument("--brainweb", type=Path, required=True)
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--seed", type=int, default=123, help="the batches' seed")
    parser.add_argument("--commits", nargs="+", required=True)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    recipe = get_recipe(args.recipe)
    cfg = TrainConfig.from_recipe(recipe, args.plane, seed=args.seed)
    subjects = [load_cached(f) for f in sorted((args.cache / "preproc").glob("sub-*.npz"))]
    volumes = [v for v in load_label_volumes(args.brainweb) if v.name not in BRAINWEB_HELD_OUT]
    synth = SynthSampler(volumes, args.plane, DEFAULT_CROPS[args.plane], seed=args.seed)
    sampler = make_sampler(subjects, cfg, synth)
    batches = [sampler.batch(cfg.batch_size)[0] for _ in range(args.batches)]
    cases = brainweb_cases(args.brainweb, BRAINWEB_HELD_OUT[:2])
    path = f"checkpoints/{recipe.name}/{recipe.task}_{recipe.version}_{args.plane}/checkpoint.pt"

    print(f"| iteration | GM / WM / CSF as trained | after re-estimating BatchNorm on "
          f"{args.batches} batches |\n| --- | --- | --- |", flush=True)
    for commit in args.commits:
        state = checkpoint_at(commit, path)
        model = build_mixnet(cfg.version, n_classes(cfg.task), pool=cfg.pool)
        model.load_state_dict(state["model"])
        model.eval()
        t0 = time.monotonic()
        before = tissue_dice(model, cfg.task, cases, args.plane)
        reestimate_batchnorm(model, batches)
        after = tissue_dice(model, cfg.task, cases, args.plane)
        print(f"| {state['iteration']} | " + " / ".join(f"{before[t]:.3f}" for t in TISSUES)
              + " | " + " / ".join(f"{after[t]:.3f}" for t in TISSUES)
              + f" |  <!-- {time.monotonic() - t0:.0f} s -->", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
