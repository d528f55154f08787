"""``mixnet-bids-slurm-array``: write (and optionally submit) a SLURM job array that runs one
participant per task, followed by a dependent ``group`` job.

Each task runs this installed app (or, with ``--container``, an Apptainer/Singularity image)
with its own work folder, so the tasks share nothing but the output folder, whose shared files
are written under locks.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

from mixnet_bids.io import atomic_write_text
from mixnet_bids.labels import CONVENTIONS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mixnet-bids-slurm-array", description=__doc__.split("\n\n")[0],
        allow_abbrev=False,
        epilog="Arguments after -- go to every participant run, e.g. -- --save-probabilities")
    parser.add_argument("bids_dir", type=Path, help="the input BIDS dataset")
    parser.add_argument("output_dir", type=Path,
                        help="the derivatives folder every task writes into")
    parser.add_argument("-w", "--work-dir", type=Path, required=True,
                        help="parent of the per-participant work folders (cluster scratch)")
    parser.add_argument("--script-dir", type=Path, default=None,
                        help="where the job scripts and logs go (default: "
                             "<work-dir>/slurm)")
    parser.add_argument("--participant-label", nargs="+", default=[],
                        help="default: every participant of the dataset")
    parser.add_argument("--task", choices=sorted(CONVENTIONS), default=None,
                        help="passed to every run (default: the app's, wholebrain when the "
                             "shipped fine networks are installed, else 3label)")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs per task (default 2)")
    parser.add_argument("--mem-gb", type=float, default=4.0,
                        help="memory per task (default 4; a 1 mm head's app process peaks "
                             "at ~1.8 GiB)")
    parser.add_argument("--time", default="01:00:00", help="time limit per task")
    parser.add_argument("--max-parallel", type=int, default=0,
                        help="at most this many tasks at once (0: no limit)")
    parser.add_argument("--sbatch-args", default="",
                        help="extra #SBATCH options, e.g. "
                             "--sbatch-args='--partition=short --account=lab'")
    parser.add_argument("--container", type=Path, default=None,
                        help="run this Apptainer/Singularity image instead of the installed "
                             "app")
    parser.add_argument("--submit", action="store_true",
                        help="submit with sbatch (the array, then the group job)")
    return parser


def participants(bids_dir: Path, labels: list[str]) -> list[str]:
    from bids import BIDSLayout

    found = BIDSLayout(str(bids_dir), validate=False).get_subjects()
    wanted = [label.removeprefix("sub-") for label in labels] or sorted(found)
    missing = sorted(set(wanted) - set(found))
    if missing:
        raise SystemExit(f"mixnet-bids-slurm-array: error: {bids_dir}: no participant(s) "
                         f"{', '.join(missing)} (found: {', '.join(sorted(found))})")
    return wanted


def app_command(args) -> list[str]:
    """The command that runs the BIDS-App (before its positional arguments)."""
    if args.container is None:
        return [sys.executable, "-m", "mixnet_bids.cli.run"]
    binds = [f"{args.bids_dir}:{args.bids_dir}:ro", str(args.output_dir), str(args.work_dir)]
    command = ["apptainer", "run", "--cleanenv", "--containall"]
    for bind in binds:
        command += ["-B", bind]
    return command + [str(args.container)]


def job_scripts(args, labels: list[str], extra: list[str]) -> dict[str, str]:
    """``{file name: content}`` of the array script, the group script and the label list."""
    from mixnet_bids.inference.planes import PLANES
    from mixnet_bids.inference.weights import default_convention

    script_dir = args.script_dir
    app = shlex.join(app_command(args))
    task = args.task or default_convention(list(PLANES), "v3")  # one for every job
    header = ["#!/bin/bash", f"#SBATCH --cpus-per-task={args.cpus}",
              f"#SBATCH --mem={int(args.mem_gb * 1024)}M", f"#SBATCH --time={args.time}"]
    header += [f"#SBATCH {option}" for option in shlex.split(args.sbatch_args)]
    array = f"1-{len(labels)}" + (f"%{args.max_parallel}" if args.max_parallel else "")
    bids, out, work = (shlex.quote(str(p)) for p in (args.bids_dir, args.output_dir,
                                                       args.work_dir))
    participant = "\n".join(header + [
        "#SBATCH --job-name=mixnet-bids",
        f"#SBATCH --array={array}",
        f"#SBATCH --output={script_dir}/logs/participant_%A_%a.log",
        "set -euo pipefail",
        f'label=$(sed -n "${{SLURM_ARRAY_TASK_ID}}p" {shlex.quote(str(script_dir))}'
        "/participants.txt)",
        "export TMPDIR=${TMPDIR:-" + str(args.work_dir) + "}",
        f'{app} {bids} {out} participant --participant-label "$label" '
        f'-w {work}/sub-"$label" --nprocs {args.cpus} --mem-gb {args.mem_gb:g} '
        + shlex.join(["--task", task, *extra]),
    ]) + "\n"
    group = "\n".join(header[:1] + [
        "#SBATCH --job-name=mixnet-bids-group", "#SBATCH --cpus-per-task=1",
        "#SBATCH --mem=2G", "#SBATCH --time=00:30:00",
        *[f"#SBATCH {option}" for option in shlex.split(args.sbatch_args)],
        f"#SBATCH --output={script_dir}/logs/group_%j.log",
        "set -euo pipefail",
        f"{app} {bids} {out} group --task {task}",
    ]) + "\n"
    return {"participant.sbatch": participant, "group.sbatch": group,
            "participants.txt": "\n".join(labels) + "\n"}


def submit(script_dir: Path) -> tuple[str, str]:
    """Submit the array, then the group job once every task has ended; return the ids."""
    def sbatch(*argv: str) -> str:
        result = subprocess.run(["sbatch", "--parsable", *argv], capture_output=True,
                                text=True, check=True)
        return result.stdout.strip().split(";")[0]

    array = sbatch(str(script_dir / "participant.sbatch"))
    # afterany: a failed participant must not keep the others out of the group table
    group = sbatch(f"--dependency=afterany:{array}", str(script_dir / "group.sbatch"))
    return array, group


def main(argv: list[str] | None = None) -> int:
    """``mixnet-bids-slurm-array``: write (and with ``--submit`` submit) the job scripts."""
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    args = build_parser().parse_args(argv)
    for name in ("bids_dir", "output_dir", "work_dir"):
        setattr(args, name, getattr(args, name).absolute())
    args.script_dir = (args.script_dir or args.work_dir / "slurm").absolute()
    if args.container is not None:
        args.container = args.container.absolute()
    labels = participants(args.bids_dir, args.participant_label)
    (args.script_dir / "logs").mkdir(parents=True, exist_ok=True)
    for name, text in job_scripts(args, labels, extra).items():
        atomic_write_text(args.script_dir / name, text)
    print(f"mixnet-bids-slurm-array: {len(labels)} participant task(s); scripts in "
          f"{args.script_dir}")
    if not args.submit:
        print(f"submit with: jid=$(sbatch --parsable {args.script_dir / 'participant.sbatch'})"
              f" && sbatch --dependency=afterany:$jid {args.script_dir / 'group.sbatch'}")
        return 0
    try:
        array, group = submit(args.script_dir)
    except (OSError, subprocess.CalledProcessError) as err:
        detail = getattr(err, "stderr", "") or str(err)
        print(f"mixnet-bids-slurm-array: error: sbatch failed ({detail.strip()}); is SLURM "
              "available here?", file=sys.stderr)
        return 1
    print(f"mixnet-bids-slurm-array: submitted array job {array} and group job {group}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
