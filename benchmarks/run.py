"""Benchmark one participant against its peers, and the networks against a GEMM, in one run.

Everything runs on one thread (``generalisation.THREAD_VARIABLES`` at 1), side by side in
one process, so that the ratios hold on a loaded machine:

- the participant: MRBrainS subject ``--subject``'s 3D T1 at 1 mm (the generalisation
  benchmark's ``mrbrains`` condition), ``mixnet-bids --nprocs 1 --omp-nthreads 1`` end to
  end in its own process: wall time, peak RSS, wall time per Nipype node, the precision it
  chose (its settings), and its GM/WM/CSF Dice against the manual labels;
- its peers on the same image (``generalisation.run_peers`` inside the app's brain mask):
  N4 (shrink 4) + 3-class k-means Atropos (MRF 0.1, 3 iterations), and N4 + a Gaussian
  mixture; the participant's time as a ratio of theirs;
- float32 and bfloat16 GEMMs, then each plane's shipped network in float32 and in the
  precision the participant ran: GFLOP/s of its convolutions and their fraction of the best
  GEMM.

Writes ``<out>/participant_<subject>.json`` and ``<out>/README.md``.

    python benchmarks/run.py --mrbrains ../shared/data/mrbrains18 --out benchmarks/results
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import generalisation  # noqa: E402  (the peers and the 1 mm T1w case)

from mixnet_bids.evaluation.markdown import table as markdown_table  # noqa: E402

#: Targets: the participant's wall time at most half of the 75 s measured before the
#: inference work (same subject kind, one thread, on another host), and since hosts differ,
#: its ratio to N4 + Atropos of the same run at most half of the ratio then (75 s against
#: 18.5 s); the networks at 30 % of the GEMM peak on hosts with native bfloat16; peak RSS.
BASELINE_WALL_S = 75.0
BASELINE_ATROPOS_RATIO = 75.0 / 18.5
TARGET_GEMM_FRACTION = 0.30
TARGET_RSS_GIB = 2.0
#: In-plane slice sizes of a 1 mm head's bounding box resampled to the training spacing.
SLICE_SHAPES = {"sagittal": (256, 224), "coronal": (208, 224), "axial": (208, 256)}


def gemm_gflops(dtype: str, n: int = 1024, repeats: int = 10) -> float:
    import torch

    kind = getattr(torch, dtype)
    a, b = torch.randn(n, n).to(kind), torch.randn(n, n).to(kind)
    torch.mm(a, b)
    t0 = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b)
    return 2 * n ** 3 * repeats / (time.perf_counter() - t0) / 1e9


def network_speed(plane: str, precision: str, slices: int = 8) -> dict:
    """Slices/s and GFLOP/s (of its convolutions) of one plane's shipped network as the app
    runs it (BatchNorms folded, channels-last, the app's batches:
    ``slices_per_batch``)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from mixnet_bids.inference.predict import autocast, slices_per_batch
    from mixnet_bids.inference.weights import load_model, networks_for
    from mixnet_bids.model import fold_batchnorm

    model, _ = load_model(networks_for("3label", [plane], "v3")[1][plane])
    model = fold_batchnorm(model).to(memory_format=torch.channels_last)
    x = torch.randn(slices, 3, *SLICE_SHAPES[plane]).contiguous(
        memory_format=torch.channels_last)
    with torch.inference_mode(), autocast(precision):
        with FlopCounterMode(display=False) as counter:
            model(x[:1])
        # the convolutions' multiply-adds: the pyramid pooling's matrix products are averages
        # that the paper's form (adaptive pooling) does not count as arithmetic
        flops = counter.get_flop_counts()["Global"][torch.ops.aten.convolution] * slices
        size = slices_per_batch(*SLICE_SHAPES[plane])
        model(x[:size])
        t0 = time.perf_counter()
        for start in range(0, slices, size):
            model(x[start:start + size])
        seconds = time.perf_counter() - t0
    return {"plane": plane, "precision": precision, "slice": list(SLICE_SHAPES[plane]),
            "batch": size,
            "slices_per_s": round(slices / seconds, 2),
            "gflops": round(flops / seconds / 1e9, 1)}


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


def run_participant(case, root: Path, precision: str) -> dict:
    """The app on ``case`` from a fresh work folder, one thread: wall time, peak RSS, stage
    times, its settings' precision record and its tissue Dice."""
    import nibabel as nib
    import numpy as np

    from mixnet_bids.evaluation.metrics import tissue_dice

    out, work = root / "out", root / "work"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    command = generalisation.app_command(case, out, work, "3label", None)
    command += ["--precision", precision]
    log = root / "participant.log"
    start = time.perf_counter()
    with open(log, "w") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)
        # this child's own peak (RUSAGE_CHILDREN would be the largest of all children so far)
        _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    code = process.returncode = os.waitstatus_to_exitcode(status)
    peak_kib = usage.ru_maxrss
    anat = out / f"sub-{case.subject}" / "anat"
    dseg = anat / f"sub-{case.subject}_desc-3label_dseg.nii.gz"
    settings = sorted((out / f"sub-{case.subject}" / "log").glob("*/settings.json"))
    record = {"command": shlex.join([Path(command[0]).name, *command[1:]]),  # no local path
              "exit_code": code, "wall_s": round(wall, 1),
              "peak_rss_gib": round(peak_kib / 2 ** 20, 2), "stages_s": stage_times(work),
              "log": str(log)}
    if settings:
        dump = json.loads(settings[-1].read_text())
        record.update(precision=dump.get("precision"),
                      precision_check=dump.get("precision_check"))
    if dseg.is_file():
        reference = np.asarray(nib.load(str(case.reference)).dataobj)
        prediction = np.asarray(nib.load(str(dseg)).dataobj)
        record["dice"] = {k: round(v, 4) for k, v in tissue_dice(prediction,
                                                                 reference).items()}
        record["mask"] = str(anat / f"sub-{case.subject}_desc-tiv_mask.nii.gz")
    return record


def mrbrains_all_case(subject: str, work: Path, mrbrains: Path) -> "generalisation.Case":
    """MRBrainS subject ``subject`` as the challenge gives it (T1w, IR and FLAIR; 3 mm
    slices), with its manual labels as tissue codes: the app's 3-modality input."""
    import nibabel as nib
    import numpy as np

    from mixnet_bids.training.mrbrains import mrbrains_to_bids

    root = work / "mrbrains-all"
    converted = root / "converted"
    mrbrains_to_bids(mrbrains, converted)
    bids = root / "bids"
    shutil.rmtree(bids, ignore_errors=True)
    shutil.copytree(converted / f"sub-{subject}", bids / f"sub-{subject}")
    shutil.copy(converted / "dataset_description.json", bids)
    labels = nib.load(str(converted / "derivatives" / "manual" / f"sub-{subject}" / "anat"
                          / f"sub-{subject}_dseg.nii.gz"))
    data = np.asarray(labels.dataobj)
    return generalisation.Case(
        "mrbrains-all", subject, bids,
        bids / f"sub-{subject}" / "anat" / f"sub-{subject}_T1w.nii.gz",
        generalisation.save(generalisation.tissue_codes(data, generalisation.MRBRAINS_TISSUE),
                            labels.affine, root / "truth" / f"sub-{subject}_dseg.nii.gz",
                            np.uint8),
        generalisation.save(generalisation.brain_mask(data, generalisation.MRBRAINS_BRAIN),
                            labels.affine, root / "truth" / f"sub-{subject}_mask.nii.gz",
                            np.uint8))


def peer_records(found: list[dict]) -> list[dict]:
    """``generalisation.run_peers`` records as the report lists them: name, seconds, Dice."""
    names = {"atropos": "Atropos", "gmm": "Gaussian mixture"}
    return [{"name": names[r["method"]], "seconds": r["seconds"], "dice": r["dice"]}
            for r in found]


def markdown(report: dict) -> str:
    app, peers, gemm = report["participant"], report["peers"], report["gemm_gflops"]
    peak = max(gemm.values())
    lines = [
        "# Benchmark", "",
        f"{report['date']}, {report['cpu']} ({report['cores']} cores), one thread for "
        f"everything, niceness {report['niceness']}; commit {report['commit']}. MRBrainS "
        f"subject {report['subject']}'s 3D T1 at 1 mm, `--precision {report['requested']}` "
        f"(chose {app.get('precision')}).", "",
    ]
    rows = [["participant wall time (s)", f"{app['wall_s']:.1f}",
             f"<= {0.5 * BASELINE_WALL_S:.0f} (half of {BASELINE_WALL_S:.0f})"],
            ["peak RSS (GiB)", f"{app['peak_rss_gib']:.2f}", f"<= {TARGET_RSS_GIB:.0f}"]]
    ratio_target = (f"<= {0.5 * BASELINE_ATROPOS_RATIO:.2f}x (half of "
                    f"{BASELINE_ATROPOS_RATIO:.2f}x before)")
    rows += [[f"N4 + {peer['name']}: s, participant / it",
              f"{peer['seconds']:.1f}, {app['wall_s'] / peer['seconds']:.2f}x",
              ratio_target if peer["name"] == "Atropos" else ""] for peer in peers]
    dice = [("mixnet-bids", app["dice"])] if "dice" in app else []
    dice += [(f"N4 + {peer['name']}", peer["dice"]) for peer in peers]
    rows += [[f"Dice GM / WM / CSF: {name}", " / ".join(f"{v:.3f}" for v in d.values()), ""]
             for name, d in dice]
    rows += [[f"{dtype} GEMM 1024^3 (GFLOP/s)", f"{value:.1f}", ""]
             for dtype, value in gemm.items()]
    rows += [[f"{net['plane']} net, {net['precision']}: slices/s ({net['slice'][0]}x"
              f"{net['slice'][1]}), conv GFLOP/s, of the best GEMM",
              f"{net['slices_per_s']:.1f}, {net['gflops']:.1f}, {net['gflops'] / peak:.0%}",
              f">= {TARGET_GEMM_FRACTION:.0%} with native bf16"] for net in report["networks"]]
    for run in report.get("all_modalities", []):
        first = run["peers"][0]
        rows += [[f"3 modalities (T1w, IR, FLAIR as given, 3 mm slices), sub-{run['subject']}: "
                  f"participant s, N4 + {first['name']} on its T1w s, ratio",
                  f"{run['participant']['wall_s']:.1f}, {first['seconds']:.1f}, "
                  f"{run['participant']['wall_s'] / first['seconds']:.2f}x", ""]]
        rows += [[f"3 modalities, Dice GM / WM / CSF: {name}",
                  " / ".join(f"{v:.3f}" for v in d.values()), ""]
                 for name, d in [("mixnet-bids", run["participant"].get("dice", {})),
                                 *((f"N4 + {p['name']} (T1w)", p["dice"])
                                   for p in run["peers"])]]
    stages = [[name, f"{sec:.1f}"] for name, sec in
              sorted(app["stages_s"].items(), key=lambda kv: -kv[1]) if sec >= 0.5]
    lines += [markdown_table(["measure", "value", "target"], rows), "",
              markdown_table(["stage", "seconds"], stages)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import nibabel as nib
    import numpy as np
    import torch

    from mixnet_bids.versions import cpu_name

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mrbrains", type=Path, required=True, help="MRBrainS18 folder")
    parser.add_argument("--subject", default="1", choices=generalisation.MRBRAINS_T1W)
    parser.add_argument("--precision", default="auto", choices=("auto", "float32", "bfloat16"))
    parser.add_argument("--work", type=Path, default=Path("runs/bench"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--all-modalities", action="store_true",
                        help="also a participant with the subject's T1w, IR and FLAIR as the "
                             "challenge gives them, beside the peers on its T1w")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    case = generalisation.build_case("mrbrains", args.subject, args.work, args.mrbrains,
                                     args.mrbrains)
    print(f"sub-{case.subject}: mixnet-bids", flush=True)
    app = run_participant(case, args.work / "mixnet-bids", args.precision)
    if "mask" not in app:
        raise SystemExit(f"the participant run failed (exit {app['exit_code']}); see "
                         f"{app['log']}")
    print("N4 + Atropos, N4 + Gaussian mixture", flush=True)
    mask = np.asarray(nib.load(app["mask"]).dataobj) > 0
    found = generalisation.run_peers(case, {"app": mask}, args.work / "peers")
    peers = peer_records(found)
    all_modalities = []
    if args.all_modalities:
        case3 = mrbrains_all_case(args.subject, args.work, args.mrbrains)
        print(f"sub-{case3.subject}: mixnet-bids, T1w + IR + FLAIR", flush=True)
        app3 = run_participant(case3, args.work / "mixnet-bids-all", args.precision)
        if "mask" not in app3:
            raise SystemExit(f"the 3-modality participant run failed (exit "
                             f"{app3['exit_code']}); see {app3['log']}")
        mask3 = np.asarray(nib.load(app3["mask"]).dataobj) > 0
        found3 = generalisation.run_peers(case3, {"app": mask3}, args.work / "peers-all")
        all_modalities.append({"subject": case3.subject, "participant": app3,
                               "peers": peer_records(found3)})
    print("GEMM and networks", flush=True)
    gemm = {dtype: round(gemm_gflops(dtype), 1) for dtype in ("float32", "bfloat16")}
    chosen = app.get("precision") or "float32"
    precisions = ["float32"] + ([chosen] if chosen != "float32" else [])
    networks = [network_speed(plane, p) for p in precisions
                for plane in ("sagittal", "coronal", "axial")]
    report = {"date": datetime.date.today().isoformat(), "cpu": cpu_name(),
              "cores": os.cpu_count(), "niceness": os.nice(0),
              "commit": generalisation.git_commit(), "subject": case.subject,
              "requested": args.precision, "participant": app, "peers": peers,
              "gemm_gflops": gemm, "networks": networks, "all_modalities": all_modalities,
              "targets": {"participant_wall_s": 0.5 * BASELINE_WALL_S,
                          "gemm_fraction": TARGET_GEMM_FRACTION,
                          "peak_rss_gib": TARGET_RSS_GIB}}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"participant_{case.subject}.json").write_text(
        json.dumps(report, indent=2) + "\n")
    text = markdown(report)
    (args.out / "README.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    if any(os.environ.get(v) != "1" for v in generalisation.THREAD_VARIABLES):
        # the libraries read these once, when loaded: start again with every one at 1
        os.execve(sys.executable, [sys.executable, *sys.argv],
                  {**os.environ, **{v: "1" for v in generalisation.THREAD_VARIABLES}})
    raise SystemExit(main())
