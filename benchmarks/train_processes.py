"""Benchmark how the long run should use this host's cores: one training process on every
core, or one single-thread process per core (e.g. one cross-validation fold each).

The sampling of a batch (real slices, augmentation, synthesis) runs on one thread, so while
one process samples, its other threads wait. This runs the real trainer (``mixnet-bids-train``)
on a short scratch budget in both layouts, alternating blocks so that a host whose speed drifts
slows both alike, and counts training iterations per second summed over the processes. Each
process's rate is read from its log's timestamps, between the checkpoints that fall in the
time all the block's processes trained at once: start-up (loading, the precision check) and
a staggered start or end are left out.
Writes ``<out>/train_processes_<recipe>_<plane>.json``.

    python benchmarks/train_processes.py --mrbrains ../shared/data/mrbrains18 \\
        --brainweb ../shared/data/brainweb20 --cache cache --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

from mixnet_bids.training.recipes import RECIPES
from mixnet_bids.versions import cpu_name

#: a checkpoint line of the trainer's log: its time stamp and the iteration
CHECKPOINT_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .* it (\d+)/\d+ loss ")


def checkpoints(log: str) -> list[tuple[datetime, int]]:
    """``(time, iteration)`` of each checkpoint line of a trainer's log."""
    return [(datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S,%f"), int(m[2]))
            for m in map(CHECKPOINT_LINE.match, log.splitlines()) if m]


def iterations_per_second(points: list[tuple[datetime, int]], start: datetime | None = None,
                          end: datetime | None = None) -> float:
    """Iterations per second between the first and the last checkpoint in ``[start, end]``."""
    points = [(t, i) for t, i in points
              if (start is None or t >= start) and (end is None or t <= end)]
    if len(points) < 2:
        raise RuntimeError(f"fewer than two checkpoints between {start} and {end}: "
                           "train longer (--iterations)")
    (t0, i0), (t1, i1) = points[0], points[-1]
    return (i1 - i0) / (t1 - t0).total_seconds()


def run_block(args, processes: int, threads: int, scratch: Path) -> list[float]:
    """Start ``processes`` trainers at once with ``threads`` threads each; their rates."""
    trainer = Path(sys.executable).with_name("mixnet-bids-train")
    jobs = []
    for k in range(processes):
        out = Path(tempfile.mkdtemp(dir=scratch))
        command = [str(trainer), "--recipe", args.recipe, "--mrbrains", str(args.mrbrains),
                   "--brainweb", str(args.brainweb), "--cache", str(args.cache),
                   "--out", str(out), "--planes", args.plane, "--threads", str(threads),
                   "--iterations", str(args.iterations + 50),
                   "--iterations-other", str(args.iterations + 50),
                   "--stop-after", str(args.iterations), "--checkpoint-every", "50",
                   "--commit-every", "0", "--seed", str(k)]
        jobs.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True))
    logs = [job.communicate()[0] for job in jobs]
    for job, log in zip(jobs, logs):
        if job.returncode:
            raise RuntimeError(f"the trainer failed ({job.returncode}):\n{log}")
    points = [checkpoints(log) for log in logs]
    # the time all of them trained at once: their start-ups and ends may be staggered
    start, end = max(p[0][0] for p in points), min(p[-1][0] for p in points)
    return [iterations_per_second(p, start, end) for p in points]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    parser.add_argument("--mrbrains", type=Path, required=True)
    parser.add_argument("--brainweb", type=Path, required=True)
    parser.add_argument("--cache", type=Path, required=True,
                        help="the training cache (make weights / make cv build it)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--recipe", default="wholebrain-synth-v2", choices=list(RECIPES))
    parser.add_argument("--plane", default="coronal")
    parser.add_argument("--iterations", type=int, default=350,
                        help="iterations per process and block (timed from the first "
                             "checkpoint, at 50)")
    parser.add_argument("--blocks", type=int, default=2, help="timed blocks per layout")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)

    layouts = {f"1 process x {args.cores} threads": (1, args.cores),
               f"{args.cores} processes x 1 thread": (args.cores, 1)}
    blocks = {name: [] for name in layouts}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.blocks):
            for name, (processes, threads) in layouts.items():
                rates = run_block(args, processes, threads, Path(tmp))
                blocks[name].append(rates)
                print(f"{name}: {' + '.join(f'{r:.2f}' for r in rates)} it/s", flush=True)
    total = {name: [sum(rates) for rates in b] for name, b in blocks.items()}
    one, many = layouts
    report = {
        "recipe": args.recipe, "plane": args.plane, "cpu": cpu_name(), "cores": args.cores,
        "iterations_per_s": {name: [[round(r, 3) for r in rates] for rates in b]
                             for name, b in blocks.items()},
        "total_iterations_per_s": {name: round(statistics.median(t), 3)
                                   for name, t in total.items()},
        # each block's pair ran one after the other: the median of their ratios
        "processes_over_threads": round(statistics.median(
            m / o for m, o in zip(total[many], total[one])), 3),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"train_processes_{args.recipe}_{args.plane}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
