"""``mixnet-bids``: the BIDS-App entry point (participant and group levels, and ``demo``)."""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

# No network at run time: Nipype's version check off before Nipype is imported.
os.environ["NIPYPE_NO_ET"] = "1"
os.environ.setdefault("TEMPLATEFLOW_AUTOUPDATE", "0")

LOGGER = logging.getLogger("mixnet_bids")


class InputProblems(Exception):
    """Problems found before any work starts; each is a one-line message."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


def _ensure_tools_on_path() -> None:
    """Put this environment's bin folder (the ANTs entry points) first on PATH."""
    bindir = str(Path(sys.executable).parent)
    if bindir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")


def _settings_from_args(args):
    from mixnet_bids import __version__
    from mixnet_bids.config import Settings

    planes = list(dict.fromkeys(args.planes))
    if args.plane_weights is None:
        from mixnet_bids.inference.predict import DEFAULT_PLANE_WEIGHTS
        weights = {p: DEFAULT_PLANE_WEIGHTS[p] for p in planes}
    else:
        if len(args.plane_weights) != len(planes):
            raise InputProblems([f"--plane-weights has {len(args.plane_weights)} values for "
                                 f"{len(planes)} planes ({', '.join(planes)}): give one each"])
        weights = dict(zip(planes, args.plane_weights))
    nprocs = max(1, args.nprocs)
    return Settings(
        bids_dir=args.bids_dir.absolute(), output_dir=args.output_dir.absolute(),
        work_dir=(args.work_dir or Path("work_dir")).absolute(),
        participant_label=args.participant_label, session_label=args.session_label,
        task=args.task, model_version=args.model_version, planes=planes,
        plane_weights=weights, device=args.device,
        weights_dir=args.weights_dir.absolute() if args.weights_dir else None,
        save_probabilities=args.save_probabilities, output_spaces=args.output_spaces,
        nprocs=nprocs,
        omp_nthreads=args.omp_nthreads or min(nprocs, 2), mem_gb=args.mem_gb,
        bids_filter_file=args.bids_filter_file,
        skip_bids_validation=args.skip_bids_validation, seed=args.seed, version=__version__)


def collect_inputs(settings) -> list[tuple[str, str | None, dict[str, str]]]:
    """Check everything before work starts; return (subject, session, images) per run."""
    from mixnet_bids.bids import BIDSInputError, collect_modalities, load_filters
    from mixnet_bids.bids import subject_sessions
    from mixnet_bids.inference.weights import WeightsError, read_metadata, weight_path

    problems: list[str] = []
    bids_dir, out = settings.bids_dir, settings.output_dir
    if not (bids_dir / "dataset_description.json").is_file():
        raise InputProblems([f"{bids_dir}: not a BIDS dataset (no dataset_description.json);"
                             " give the folder that holds the sub-* folders"])
    resolved_out, resolved_bids = out.resolve(), bids_dir.resolve()
    if resolved_out == resolved_bids or (
            resolved_bids in resolved_out.parents
            and (resolved_bids / "derivatives") not in resolved_out.parents):
        problems.append(f"{out}: the output folder must not be (inside) the BIDS folder; "
                        f"use {bids_dir / 'derivatives' / 'mixnet-bids'}")
    for plane in settings.planes:
        path = weight_path(settings.task, plane, settings.model_version, settings.weights_dir)
        try:
            read_metadata(path)
            if not path.is_file():
                raise WeightsError(f"{path}: weight file missing")
        except WeightsError as err:
            problems.append(f"{err} (no {settings.model_version} {settings.task} model for "
                            f"the {plane} plane ships with this version)")
    try:
        queries = load_filters(settings.bids_filter_file)
    except BIDSInputError as err:
        raise InputProblems(problems + [str(err)]) from None

    from bids import BIDSLayout

    try:
        layout = BIDSLayout(str(bids_dir), validate=not settings.skip_bids_validation,
                            derivatives=False)
    except Exception as err:  # pybids raises several types for invalid datasets
        raise InputProblems(problems + [f"{bids_dir}: pybids cannot index it ({err}); fix "
                                        "the dataset or use --skip-bids-validation"]) from None
    available = layout.get_subjects()
    wanted = settings.participant_label or sorted(available)
    runs = []
    for subject in wanted:
        if subject not in available:
            problems.append(f"sub-{subject}: no such participant in {bids_dir} "
                            f"(found: {', '.join(sorted(available)) or 'none'})")
            continue
        sessions = subject_sessions(layout, subject, settings.session_label)
        if not sessions:
            problems.append(f"sub-{subject}: none of the sessions "
                            f"{settings.session_label} exist")
        for session in sessions:
            try:
                images = collect_modalities(layout, subject, session, queries)
            except BIDSInputError as err:
                problems.append(str(err))
                continue
            where = f"sub-{subject}" + (f" ses-{session}" if session else "")
            if not images:
                problems.append(f"{where}: no T1w, T1-IR (acq-IR_T1w) or FLAIR image in "
                                f"{bids_dir / ('sub-' + subject)}; add one or adjust "
                                "--bids-filter-file")
                continue
            problems.extend(_check_images(images))
            runs.append((subject, session, images))
    if problems:
        raise InputProblems(problems)
    return runs


def _check_images(images: dict[str, str]) -> list[str]:
    """Each image must load as a finite, non-constant 3D volume."""
    import nibabel as nib
    import numpy as np

    problems = []
    for modality, path in images.items():
        try:
            img = nib.load(path)
            shape = img.shape
            if len(shape) == 4 and shape[3] == 1:
                shape = shape[:3]
            if len(shape) != 3:
                problems.append(f"{path}: {modality} must be a 3D image, got shape "
                                f"{img.shape}; select one volume")
                continue
            data = np.asanyarray(img.dataobj)
            if not np.all(np.isfinite(data)):
                problems.append(f"{path}: contains NaN or infinite voxels; fix the file")
            elif np.ptp(data) == 0:
                problems.append(f"{path}: the image is constant; check the file")
        except Exception as err:  # nibabel raises many types for corrupt files
            problems.append(f"{path}: cannot be read as NIfTI ({type(err).__name__}: {err}); "
                            "replace the file")
    return problems


def run_participants(settings, runs) -> list[str]:
    """Run each subject/session; return the keys that failed (the others complete)."""
    from nipype import config as nipype_config

    from mixnet_bids.cli.outputs import write_dataset_files, write_settings
    from mixnet_bids.templates import ensure_templateflow
    from mixnet_bids.workflows.base import init_single_subject_wf, subject_key

    ensure_templateflow()
    write_dataset_files(settings)
    nipype_config.set("execution", "poll_sleep_duration", "0.2")
    failed = []
    for subject, session, images in runs:
        key = subject_key(subject, session)
        log_dir = write_settings(settings, subject, session, images)
        LOGGER.info("%s: start (%s)", key, ", ".join(images))
        workflow = init_single_subject_wf(settings=settings, subject=subject,
                                          session=session, images=images)
        workflow.base_dir = str(settings.work_dir)
        workflow.config["execution"].update({
            "crashdump_dir": str(log_dir), "crashfile_format": "txt",
            "remove_unnecessary_outputs": False, "poll_sleep_duration": 0.2})
        plugin_args = {"n_procs": settings.nprocs, "raise_insufficient": False,
                       "status_callback": _StatusPrinter(key)}
        if settings.mem_gb:
            plugin_args["memory_gb"] = settings.mem_gb
        t0 = time.monotonic()
        try:
            workflow.run(plugin="MultiProc", plugin_args=plugin_args)
        except Exception as err:  # nipype raises RuntimeError listing crashed nodes
            LOGGER.error("%s: FAILED (%s); crash files in %s", key,
                         str(err).splitlines()[0], log_dir)
            failed.append(key)
            continue
        LOGGER.info("%s: done in %.0f s", key, time.monotonic() - t0)
    return failed


class _StatusPrinter:
    """Nipype status callback: one console line per finished node (picklable)."""

    def __init__(self, key: str):
        self.key = key

    def __call__(self, node, status):
        if status == "end":
            LOGGER.info("%s: %s done", self.key, node.fullname.split(".", 1)[-1])


def _configure_logging(verbose: int) -> None:
    """Our stage lines always; Nipype's node chatter only with -v (its own handler)."""
    from nipype import config as nipype_config
    from nipype import logging as nipype_logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s",
                        datefmt="%H:%M:%S")
    level = "WARNING" if verbose == 0 else ("INFO" if verbose == 1 else "DEBUG")
    for key in ("workflow_level", "interface_level", "utils_level"):
        nipype_config.set("logging", key, level)
    nipype_logging.update_logging(nipype_config)
    logging.getLogger("nipype").propagate = False


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "demo":
        from mixnet_bids.cli.demo import main as demo_main
        return demo_main(argv[1:])
    from mixnet_bids.cli.parser import build_parser

    args = build_parser().parse_args(argv)
    _configure_logging(args.verbose)
    _ensure_tools_on_path()
    try:
        settings = _settings_from_args(args)
        if args.analysis_level == "group":
            from mixnet_bids.cli.outputs import write_group_table
            table = write_group_table(settings)
            print(f"mixnet-bids: group table written to {table}")
            return 0
        runs = collect_inputs(settings)
    except InputProblems as err:
        for problem in err.problems:
            print(f"mixnet-bids: error: {problem}", file=sys.stderr)
        return 2
    failed = run_participants(settings, runs)
    done = len(runs) - len(failed)
    print(f"mixnet-bids: {done} of {len(runs)} participant run(s) finished; results in "
          f"{settings.output_dir}")
    if failed:
        print(f"mixnet-bids: failed: {', '.join(failed)} (see their log folders)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
