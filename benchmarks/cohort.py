"""Cohort throughput: participants per hour against the number of cores, two ways.

- ``jobs``: as many separate participant runs at once as there are cores, each with
  ``--nprocs 1``, its own work folder and one shared output folder (what a SLURM job array
  does on one node);
- ``one-run``: one invocation for the whole cohort with ``--nprocs`` set to the cores (one
  Nipype graph holding every subject; MultiProc runs their steps side by side).

Each has ``cores x --subjects-per-core`` copies of the demo subject (nilearn's MNI152 T1,
1.5 mm, T1w only). Writes ``<out>/cohort.json`` and ``<out>/cohort.md``.

    python benchmarks/cohort.py --out benchmarks/results
    python benchmarks/cohort.py --cores 1 --modes one-run --out /tmp/cohort  # a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mixnet_bids.runtime import prepare_runtime  # noqa: E402

prepare_runtime()  # no network; the ANTs tools of this environment for the runs

MODES = ("jobs", "one-run")


def make_cohort(root: Path, n: int) -> Path:
    """``n`` participants: the demo T1w, copied."""
    from mixnet_bids.cli.demo import build_demo_dataset

    build_demo_dataset(root)
    source = root / "sub-01" / "anat" / "sub-01_T1w.nii.gz"
    for i in range(2, n + 1):
        anat = root / f"sub-{i:02d}" / "anat"
        anat.mkdir(parents=True)
        shutil.copy(source, anat / f"sub-{i:02d}_T1w.nii.gz")
    return root


def app(bids: Path, out: Path, work: Path, labels: list[str], nprocs: int) -> list[str]:
    return [sys.executable, "-m", "mixnet_bids.cli.run", str(bids), str(out), "participant",
            "--participant-label", *labels, "-w", str(work), "--skip-bids-validation",
            "--nprocs", str(nprocs), "--no-progress"]


def run(mode: str, bids: Path, scratch: Path, cores: int, subjects: int) -> float:
    """Wall time of ``subjects`` participants on ``cores`` cores in ``mode``."""
    labels = [f"{i:02d}" for i in range(1, subjects + 1)]
    folder = scratch / f"{mode}_{cores}"
    if mode == "one-run":
        commands, at_once = [app(bids, folder / "out", folder / "work", labels, cores)], 1
    else:  # one single-core job per subject, ``cores`` of them at a time
        commands = [app(bids, folder / "out", folder / f"work_{label}", [label], 1)
                    for label in labels]
        at_once = cores
    t0 = time.perf_counter()
    with ThreadPoolExecutor(at_once) as pool:
        results = list(pool.map(
            lambda command: subprocess.run(command, capture_output=True, text=True),
            commands))
    seconds = time.perf_counter() - t0
    for result in results:
        if result.returncode != 0:
            raise RuntimeError(f"participant run failed:\n{result.stderr[-2000:]}")
    published = list((folder / "out").glob("sub-*/anat/*_volumes.tsv"))
    if len(published) != subjects:
        raise RuntimeError(f"{mode}: {len(published)} of {subjects} subjects published")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--cores", type=int, nargs="+",
                        default=list(range(1, (os.cpu_count() or 1) + 1)),
                        help="core counts to measure (default: 1 to all of this machine's)")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--subjects-per-core", type=int, default=1)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="mixnet-cohort-") as tmp:
        scratch = Path(tmp)
        bids = make_cohort(scratch / "bids", max(args.cores) * args.subjects_per_core)
        for cores in args.cores:
            for mode in args.modes:
                subjects = cores * args.subjects_per_core
                seconds = run(mode, bids, scratch, cores, subjects)
                rows.append({"mode": mode, "cores": cores, "subjects": subjects,
                             "wall_s": round(seconds, 1),
                             "subjects_per_hour": round(3600 * subjects / seconds, 1),
                             "subjects_per_hour_per_core":
                                 round(3600 * subjects / seconds / cores, 1)})
                print(rows[-1], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cohort.json").write_text(json.dumps(
        {"subject": "demo (MNI152 T1, 1.5 mm, T1w only, 132x156x127)",
         "cpu_count": os.cpu_count(), "runs": rows}, indent=2) + "\n")
    lines = ["| mode | cores | subjects | wall time (s) | subjects/hour | subjects/hour/core |",
             "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['mode']} | {r['cores']} | {r['subjects']} | {r['wall_s']} | "
              f"{r['subjects_per_hour']} | {r['subjects_per_hour_per_core']} |" for r in rows]
    (args.out / "cohort.md").write_text(
        "`jobs`: one single-core participant run per core at a time (a job array on one "
        "node); `one-run`: one invocation for the cohort with `--nprocs` = cores.\n\n"
        + "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
