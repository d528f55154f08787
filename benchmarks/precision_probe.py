"""How far bfloat16 gradients are from float32, for a fresh and a trained network, against
how far one batch's gradient is from another's.

The training start-up check (``training.precision.choose_precision``) accepts a candidate
whose gradients differ from float32 by at most 10 % (relative L2). This probe measures that
difference for each plane on the network the check runs (``train.check_network``: freshly
initialised from seed 0) and on trained weights, on the
check's random batch and on real batches of the training cache; beside it, the relative
difference between the float32 gradients of two real batches, the noise every training step
already has. Writes ``<out>/precision_probe.json``.

    python benchmarks/precision_probe.py --cache cache --out runs/precision-probe
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import torch

from mixnet_bids.inference.weights import WEIGHTS_DIR, load_model
from mixnet_bids.training.cache import load_cached
from mixnet_bids.training.dataset import DEFAULT_CROPS, SliceSampler
from mixnet_bids.training.precision import Precision, gradients
from mixnet_bids.training.recipes import RECIPES
from mixnet_bids.training.train import TrainConfig, check_batch, check_network, make_loss

FLOAT32 = Precision(False, "default")
COMPARED = (Precision(False, "channels_last"), Precision(True, "default"),
            Precision(True, "channels_last"))


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return round(float((a - b).norm() / b.norm().clamp_min(1e-30)), 4)


def differences(net, criterion, images, targets, reference) -> dict[str, float]:
    """Each compared candidate's relative L2 difference from ``reference``, the float32
    gradient in the default layout."""
    return {c.describe(): relative(gradients(copy.deepcopy(net).to(memory_format=c.memory_format),
                                             criterion, images, targets, c), reference)
            for c in COMPARED}


def trained_network(folder: Path, plane: str) -> torch.nn.Module:
    """The exported fine network of ``plane`` in ``folder`` or its ``fine_v3_<plane>``."""
    name = f"mixnet_v3_fine_{plane}.pt"
    for path in (folder / name, folder / f"fine_v3_{plane}" / name):
        if path.is_file():
            return load_model(path)[0]
    raise SystemExit(f"{folder}: no {name} (nor fine_v3_{plane}/{name})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    parser.add_argument("--cache", type=Path, required=True, help="the training cache")
    parser.add_argument("--weights-dir", type=Path, default=WEIGHTS_DIR,
                        help="trained fine networks (default: the shipped ones)")
    parser.add_argument("--recipe", default="wholebrain-synth-v3", choices=list(RECIPES))
    parser.add_argument("--planes", nargs="+", default=["axial", "coronal", "sagittal"])
    parser.add_argument("--batches", type=int, default=3, help="real batches per network")
    parser.add_argument("--out", type=Path, default=Path("runs/precision-probe"))
    args = parser.parse_args(argv)
    files = sorted((args.cache / "preproc").glob("*.npz"))
    if not files:
        parser.error(f"no cached subjects in {args.cache / 'preproc'}; run make weights first")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    recipe = RECIPES[args.recipe]
    subjects = [load_cached(f) for f in files]
    report = {}
    for plane in args.planes:
        cfg = TrainConfig.from_recipe(recipe, plane, threads=1)
        crop = DEFAULT_CROPS[plane]
        criterion = make_loss(cfg)
        sampler = SliceSampler(subjects, plane, recipe.task, crop)
        real = [sampler.batch(cfg.batch_size) for _ in range(args.batches + 1)]
        random_batch = check_batch(cfg, crop)
        networks = {"fresh": check_network(cfg),
                    "trained": trained_network(args.weights_dir, plane)}
        report[plane] = {}
        for name, net in networks.items():
            net.train()

            def float32(batch):
                return gradients(copy.deepcopy(net), criterion, *batch, FLOAT32)

            row = {"random batch": differences(net, criterion, *random_batch,
                                               float32(random_batch))}
            references = [float32(batch) for batch in real]
            for i, batch in enumerate(real[:-1]):
                row[f"real batch {i}"] = differences(net, criterion, *batch, references[i])
                # the next batch's float32 gradient, against this one's
                row[f"real batch {i}"]["next batch, float32"] = relative(references[i + 1],
                                                                         references[i])
            report[plane][name] = row
            print(plane, name, json.dumps(row), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "precision_probe.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
