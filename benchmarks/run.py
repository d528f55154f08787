"""Benchmark one participant run on an MRBrainS subject, and the networks against a GEMM.

Writes ``<out>/participant_<subject>.json`` and ``<out>/README.md`` (a markdown table):
per-stage wall time (Nipype node durations), peak RSS of the run, inference slices/s and
GFLOP/s per plane beside the fp32 GEMM GFLOP/s measured in the same process.

    python benchmarks/run.py --mrbrains ../shared/data/mrbrains18 --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NIPYPE_NO_ET", "1")

#: Targets from the pipeline issue (2-core CPU).
TARGET_RUN_S = 90.0
TARGET_RSS_GIB = 3.0


def gemm_gflops(n: int = 1024, repeats: int = 10) -> float:
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    t0 = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b)
    return 2 * n ** 3 * repeats / (time.perf_counter() - t0) / 1e9


def network_speed(plane: str, slices: int = 16) -> dict:
    """Slices/s and GFLOP/s of one plane's shipped network on MRBrainS-sized slices."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from mixnet_bids.inference.weights import load_model, weight_path

    model, _ = load_model(weight_path("3label", plane, "v3"))
    size = (240, 240) if plane == "axial" else (240, 48)
    x = torch.randn(slices, 3, *size).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        with FlopCounterMode(display=False) as counter:
            model(x[:1])
        flops = counter.get_total_flops() * slices
        model(x[:2])
        t0 = time.perf_counter()
        model(x)
        seconds = time.perf_counter() - t0
    return {"plane": plane, "slice": list(size), "slices_per_s": slices / seconds,
            "gflops": flops / seconds / 1e9}


def stage_times(work_dir: Path) -> dict[str, float]:
    """Wall time per Nipype node, read from the nodes' result files."""
    from nipype.utils.filemanip import loadpkl

    times = {}
    for result in sorted(work_dir.rglob("result_*.pklz")):
        runtime = getattr(loadpkl(result), "runtime", None)
        duration = getattr(runtime, "duration", None)
        if duration is not None:
            times[result.parent.name] = round(float(duration), 2)
    return times


def main(argv: list[str] | None = None) -> int:
    import torch

    from mixnet_bids.cli.run import main as run_main
    from mixnet_bids.training.mrbrains import mrbrains_to_bids

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mrbrains", type=Path, required=True)
    parser.add_argument("--subject", default="1")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--nprocs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        mrbrains_to_bids(args.mrbrains, tmp / "bids", subjects=[args.subject])
        t0 = time.perf_counter()
        code = run_main([str(tmp / "bids"), str(tmp / "out"), "participant",
                         "--participant-label", args.subject, "-w", str(tmp / "work"),
                         "--skip-bids-validation", "--nprocs", str(args.nprocs)])
        wall = time.perf_counter() - t0
        if code:
            raise SystemExit(f"participant run failed with exit code {code}")
        stages = stage_times(tmp / "work")
    peak_kib = max(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
                   resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    torch.set_num_threads(args.nprocs)
    gemm = gemm_gflops()
    nets = [network_speed(p) for p in ("sagittal", "coronal", "axial")]
    report = {
        "subject": args.subject, "nprocs": args.nprocs, "cpu": platform.processor(),
        "cores": os.cpu_count(), "participant_wall_s": round(wall, 1),
        "peak_rss_gib": round(peak_kib / 2 ** 20, 2), "stages_s": stages,
        "gemm_fp32_gflops": round(gemm, 1),
        "networks": [{k: (round(v, 2) if isinstance(v, float) else v) for k, v in n.items()}
                     for n in nets],
        "targets": {"participant_wall_s": TARGET_RUN_S, "peak_rss_gib": TARGET_RSS_GIB},
    }
    (args.out / f"participant_{args.subject}.json").write_text(json.dumps(report, indent=2))
    lines = ["# Benchmark", "", f"Participant run, MRBrainS subject {args.subject}, "
             f"{args.nprocs} processes on {os.cpu_count()} cores.", "",
             "| measure | value | target |", "| --- | --- | --- |",
             f"| participant wall time (s) | {wall:.1f} | <= {TARGET_RUN_S:.0f} |",
             f"| peak RSS of one process (GiB) | {peak_kib / 2 ** 20:.2f} | "
             f"<= {TARGET_RSS_GIB:.0f} |",
             f"| fp32 GEMM (GFLOP/s) | {gemm:.1f} | |"]
    for n in nets:
        lines.append(f"| {n['plane']} net: slices/s ({n['slice'][0]}x{n['slice'][1]}) / "
                     f"GFLOP/s (% of GEMM) | {n['slices_per_s']:.1f} / {n['gflops']:.1f} "
                     f"({100 * n['gflops'] / gemm:.0f} %) | |")
    lines += ["", "| stage | seconds |", "| --- | --- |"]
    lines += [f"| {name} | {sec:.1f} |" for name, sec in
              sorted(stages.items(), key=lambda kv: -kv[1]) if sec >= 0.5]
    (args.out / "README.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
