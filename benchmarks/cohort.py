"""Cohort throughput: participants per hour per core, and how it scales with parallel jobs.

Runs ``jobs`` participant runs at once, each a separate single-core process with its own
work folder and one shared output folder (what a SLURM job array does on one node), on
copies of the demo subject (nilearn's MNI152 T1, 1.5 mm, T1w only), for each job count up to
the machine's cores. Writes ``<out>/cohort.json`` and appends a table to ``<out>/cohort.md``.

    python benchmarks/cohort.py --out benchmarks/results
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
from pathlib import Path

os.environ.setdefault("NIPYPE_NO_ET", "1")


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


def run_jobs(bids: Path, scratch: Path, jobs: int) -> float:
    """Wall time of ``jobs`` concurrent single-core participant runs."""
    out = scratch / f"out_{jobs}"
    t0 = time.perf_counter()
    procs = [subprocess.Popen(
        [sys.executable, "-m", "mixnet_bids.cli.run", str(bids), str(out), "participant",
         "--participant-label", f"{i:02d}", "-w", str(scratch / f"work_{jobs}_{i}"),
         "--skip-bids-validation", "--nprocs", "1", "--omp-nthreads", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for i in range(1, jobs + 1)]
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"participant run failed:\n{err[-2000:]}")
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--max-jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="mixnet-cohort-") as tmp:
        scratch = Path(tmp)
        bids = make_cohort(scratch / "bids", args.max_jobs)
        for jobs in range(1, args.max_jobs + 1):
            seconds = run_jobs(bids, scratch, jobs)
            rows.append({"parallel_jobs": jobs, "cores": jobs, "wall_s": round(seconds, 1),
                         "subjects_per_hour": round(3600 * jobs / seconds, 1),
                         "subjects_per_hour_per_core": round(3600 / seconds, 1)})
            print(rows[-1], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cohort.json").write_text(json.dumps(
        {"subject": "demo (MNI152 T1, 1.5 mm, T1w only, 132x156x127)", "cpu_count":
         os.cpu_count(), "runs": rows}, indent=2) + "\n")
    lines = ["| parallel single-core jobs | wall time (s) | subjects/hour | subjects/hour/core |",
             "| --- | --- | --- | --- |"]
    lines += [f"| {r['parallel_jobs']} | {r['wall_s']} | {r['subjects_per_hour']} | "
              f"{r['subjects_per_hour_per_core']} |" for r in rows]
    (args.out / "cohort.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
