"""``mixnet-bids``: the BIDS-App entry point (participant and group levels)."""

from __future__ import annotations

import dataclasses
import getpass
import json
import logging
import os
import re
import shutil
import sys
import time
from pathlib import Path

from mixnet_bids.runtime import prepare_runtime

LOGGER = logging.getLogger("mixnet_bids")


def _settings_from_args(args):
    from mixnet_bids import __version__
    from mixnet_bids.config import Settings

    planes = list(dict.fromkeys(args.planes))
    weights_dir = args.weights_dir.absolute() if args.weights_dir else None
    if args.plane_weights is None:
        from mixnet_bids.inference.predict import DEFAULT_PLANE_WEIGHTS
        weights = {p: DEFAULT_PLANE_WEIGHTS[p] for p in planes}
    else:
        if len(args.plane_weights) != len(planes):
            from mixnet_bids.checks import InputProblems
            raise InputProblems([f"--plane-weights has {len(args.plane_weights)} values for "
                                 f"{len(planes)} planes ({', '.join(planes)}): give one each"])
        weights = dict(zip(planes, args.plane_weights))
    return Settings(
        bids_dir=args.bids_dir.absolute(), output_dir=args.output_dir.absolute(),
        work_dir=(args.work_dir or Path("work_dir")).absolute(),
        participant_label=args.participant_label, session_label=args.session_label,
        task=args.task or "", model_version=args.model_version, planes=planes,
        plane_weights=weights, device=args.device, weights_dir=weights_dir,
        mirror=not args.no_mirror, refine=not args.no_refine,
        trust_stripping=not args.ignore_stripping,
        save_probabilities=args.save_probabilities, output_spaces=args.output_spaces,
        nprocs=args.nprocs, omp_nthreads=args.omp_nthreads, mem_gb=args.mem_gb,
        bids_filter_file=args.bids_filter_file,
        skip_bids_validation=args.skip_bids_validation, version=__version__,
        overwrite=args.overwrite, progress=not args.no_progress and sys.stderr.isatty(),
        plugin=args.plugin or default_plugin(args.nprocs),
        plugin_args=_plugin_args(args.plugin_args))


def default_plugin(nprocs: int) -> str:
    """Linear for one process: the steps run one after another in this process, without
    MultiProc's worker pickling and polling (14 s less on a 3-modality MRBrainS subject,
    58.7 s against 72.7 s, the same bytes written); MultiProc for more."""
    return "Linear" if nprocs == 1 else "MultiProc"


def _plugin_args(text: str | None) -> dict:
    from mixnet_bids.checks import InputProblems

    if not text:
        return {}
    try:
        value = json.loads(Path(text).read_text() if Path(text).is_file() else text)
    except (OSError, json.JSONDecodeError) as err:
        raise InputProblems([f"--plugin-args {text!r}: not JSON ({err}); give e.g. "
                             "'{\"sbatch_args\": \"--partition=short\"}' or a JSON file"])
    if not isinstance(value, dict):
        raise InputProblems([f"--plugin-args {text!r}: must be a JSON object"])
    return value


def run_participants(settings, runs) -> list[str]:
    """Run every subject/session in one Nipype graph; return the keys that failed (the
    others complete and publish)."""
    from nipype import config as nipype_config

    from mixnet_bids.bids import subject_key
    from mixnet_bids.derivatives import finished_outputs, write_dataset_files, write_settings
    from mixnet_bids.interfaces.bids import report_name
    from mixnet_bids.templates import ensure_templateflow
    from mixnet_bids.workflows.base import (
        init_mixnet_wf,
        staging_dir,
        subject_workflow_name,
    )

    ensure_templateflow()
    write_dataset_files(settings)
    nipype_config.set("execution", "poll_sleep_duration", "0.2")
    todo, log_dirs, reports = [], {}, {}
    for run in runs:
        key = subject_key(run.subject, run.session)
        done = finished_outputs(settings, run.subject, run.session)
        if done and not settings.overwrite:
            LOGGER.info("%s: already finished (%s); skipped, use --overwrite to redo it",
                        key, done)
            continue
        for warning in run.warnings:
            LOGGER.warning("%s: warning: %s", key, warning)
        log_dirs[key] = write_settings(settings, run.subject, run.session, run.images)
        reports[key] = settings.output_dir / report_name(run.subject, run.session)
        shutil.rmtree(staging_dir(settings, subject_workflow_name(run.subject, run.session)),
                      ignore_errors=True)
        LOGGER.info("%s: start (%s)", key, ", ".join(run.images))
        todo.append(run)
    if not todo:
        return []
    workflow = init_mixnet_wf(
        settings=settings, subjects=[(r.subject, r.session, r.images) for r in todo],
        warnings={subject_key(r.subject, r.session): r.warnings for r in todo},
        crash_dirs=log_dirs)
    workflow.config["execution"].update({
        "crashfile_format": "txt", "remove_unnecessary_outputs": False,
        "poll_sleep_duration": 0.2})
    progress = _Progress({subject_workflow_name(r.subject, r.session):
                          subject_key(r.subject, r.session) for r in todo}, reports)
    if settings.plugin == "Linear":  # every step runs in this process
        from mixnet_bids.runtime import keep_freed_memory
        keep_freed_memory()
    error = None
    try:
        workflow.run(**_plugin(settings, progress))
    except Exception as err:  # nipype raises RuntimeError listing crashed nodes
        error = err
    failed = []
    for key in log_dirs:
        if settings.plugin == "SLURMGraph" and error is None:  # returns once jobs are queued
            LOGGER.info("%s: submitted to SLURM; the derivatives and %s appear when its "
                        "jobs end (squeue)", key, reports[key])
        elif key not in progress.published:
            LOGGER.error("%s: FAILED: %s; details in %s; fix it and rerun with the same "
                         "work dir (finished steps are reused)", key,
                         _failure_reason(error, log_dirs[key]), log_dirs[key])
            failed.append(key)
    return failed


def _plugin(settings, progress) -> dict:
    """Nipype execution plugin and its arguments: Linear or MultiProc on this machine, or a
    cluster plugin (SLURM, SLURMGraph) with the user's ``--plugin-args``."""
    if settings.plugin == "MultiProc":
        args = {"n_procs": settings.nprocs, "raise_insufficient": False}
        if settings.mem_gb:
            args["memory_gb"] = settings.mem_gb
    else:
        if settings.plugin.startswith("SLURM"):
            os.environ.setdefault("LOGNAME", getpass.getuser())  # Nipype's SLURM plugins need it
        args = {}
    if settings.plugin != "SLURMGraph":  # a graph plugin submits all and reports nothing
        args["status_callback"] = progress
    args.update(settings.plugin_args)
    return {"plugin": settings.plugin, "plugin_args": args}


def _failure_reason(err: Exception | None, log_dir: Path) -> str:
    """The last line of the first crash file's traceback, else the exception's first line."""
    for crash in sorted(Path(log_dir).glob("crash-*.txt")):
        lines = [line.strip() for line in crash.read_text(errors="replace").splitlines()
                 if line.strip()]
        errors = [line for line in lines if re.match(r"^[A-Za-z_.]*(Error|Exception)\b", line)]
        nodes = [line.split(":", 1)[1].strip() for line in lines if line.startswith("Node:")]
        if errors:
            return errors[-1] + (f" (in {nodes[0].rsplit('.', 1)[-1]})" if nodes else "")
    if err is None:
        return "it did not finish"
    return str(err).splitlines()[0] if str(err) else type(err).__name__


class _Progress:
    """Nipype status callback, called in this process as steps end: a console line per
    step, and the subjects whose ``publish`` step ended (picklable, as Nipype's MapNodes
    carry the plugin arguments to the workers).

    ``subjects``: ``{subject graph name: subject key}``; ``reports``: each key's report.
    """

    def __init__(self, subjects: dict[str, str], reports: dict[str, Path]):
        self.subjects, self.reports = subjects, reports
        self.published: set[str] = set()
        self.start = time.monotonic()

    def __call__(self, node, status):
        names = node.fullname.split(".")  # mixnet_wf.<subject graph>.[...].<step>
        key = self.subjects.get(names[1]) if len(names) > 2 else None
        if status != "end" or key is None:
            return
        if names[2:] == ["publish"]:
            self.published.add(key)
            LOGGER.info("%s: done after %.0f s; report %s", key,
                        time.monotonic() - self.start, self.reports[key])
        else:
            LOGGER.info("%s: %s done", key, ".".join(names[2:]))


def _configure_logging(verbose: int) -> None:
    """Our stage lines always; the libraries' own lines (Nipype's nodes, pybids' schema
    notes) only with -v; debug lines with -vv."""
    from nipype import config as nipype_config
    from nipype import logging as nipype_logging

    logging.basicConfig(level=logging.WARNING if verbose == 0 else logging.INFO,
                        format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    LOGGER.setLevel(logging.DEBUG if verbose > 1 else logging.INFO)
    level = "WARNING" if verbose == 0 else ("INFO" if verbose == 1 else "DEBUG")
    for key in ("workflow_level", "interface_level", "utils_level"):
        nipype_config.set("logging", key, level)
    nipype_logging.update_logging(nipype_config)
    logging.getLogger("nipype").propagate = False


def main(argv: list[str] | None = None) -> int:
    """``mixnet-bids``: parse the command line and run it."""
    prepare_runtime()  # before anything imports Nipype (--version lists it)
    from mixnet_bids.cli.parser import build_parser

    return run(build_parser().parse_args(argv))


def run(args) -> int:
    """Run the participant or group level for parsed arguments (``cli.parser``); the exit
    code: 0 done, 1 a subject failed, 2 input problems."""
    prepare_runtime()
    _configure_logging(args.verbose)
    from mixnet_bids.checks import InputProblems
    from mixnet_bids.inputs import collect_inputs

    try:
        settings = _settings_from_args(args)
        if args.analysis_level == "group":
            from mixnet_bids.derivatives import participant_conventions, write_group_table
            # without --task: every convention the participant level wrote
            tasks = [args.task] if args.task else participant_conventions(settings.output_dir)
            for task in tasks:
                table, report = write_group_table(dataclasses.replace(settings, task=task))
                print(f"mixnet-bids: group table written to {table}")
                print(f"mixnet-bids: group report written to {report}")
            return 0
        runs, problems = collect_inputs(settings)
        from mixnet_bids.inference.precision import run_precision
        settings.precision, settings.precision_check = run_precision(settings, args.precision)
    except InputProblems as err:
        _print_problems(err.problems)
        return 2
    _print_problems(problems)
    failed = run_participants(settings, runs)
    done = len(runs) - len(failed)
    print(f"mixnet-bids: {done} of {len(runs)} participant run(s) finished; results in "
          f"{settings.output_dir}")
    if settings.plugin != "SLURMGraph":  # its jobs still use the work folder
        print(work_folder_note(settings.work_dir))
    if failed:
        print(f"mixnet-bids: failed: {', '.join(failed)} (see their log folders)",
              file=sys.stderr)
    if problems:  # repeated at the end, where a long run's user looks
        print(f"mixnet-bids: {len(problems)} input problem(s), those subjects did not run:",
              file=sys.stderr)
        _print_problems(problems)
        return 2
    return 1 if failed else 0


def work_folder_note(work_dir: Path) -> str:
    """Where the intermediate files are, how big, and what they are good for."""
    size = sum(path.lstat().st_size for path in Path(work_dir).rglob("*"))
    return (f"mixnet-bids: the work folder {work_dir} holds {size / 1e9:.2f} GB of "
            "intermediate files: keep it to resume or redo runs quickly (-w), or remove it "
            f"(rm -r {work_dir})")


def _print_problems(problems: list[str]) -> None:
    for problem in problems:
        print(f"mixnet-bids: error: {problem}", file=sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main())
