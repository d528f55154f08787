"""What a participant run will process, checked before any work starts: the subjects and
sessions, their images (pybids), the output and work folders, and the networks.

Problems of the whole run raise ``InputProblems``; problems of one subject are returned as
one line each, naming the file and the fix, and that subject does not run.
"""

from __future__ import annotations


def collect_inputs(settings):
    """Check everything before work starts.

    Returns ``(runs, problems)``: the runnable subject/sessions and the one-line problems
    of the others. Raises ``InputProblems`` for problems of the whole run, or when no
    subject can run.
    """
    from mixnet_bids.bids import BIDSInputError, collect_modalities, load_filters, subject_sessions
    from mixnet_bids.checks import InputProblems, Run, check_run, writable_folder_problem

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
    for folder, what in ((out, "output folder"), (settings.work_dir, "work folder")):
        problem = writable_folder_problem(folder, what)
        if problem:
            problems.append(problem)
    unusable, network_warnings = check_weights(settings)
    problems.extend(unusable)
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
    run_problems, problems = problems, []
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
            run = Run(subject, session, images, warnings=list(network_warnings))
            found = check_run(run)
            if found:
                problems.extend(found)
            else:
                runs.append(run)
    if run_problems or not runs:  # nothing starts; everything is reported at once
        raise InputProblems(run_problems + problems
                            or [f"{bids_dir}: no participant to process"])
    return runs, problems


def check_weights(settings) -> tuple[list[str], list[str]]:
    """The networks that serve ``settings.task``: one line per problem that stops the run,
    and one warning per network that trained on images of another ``PREPROCESSING_VERSION``
    than this version makes (its sidecar's ``preprocessing_version``; a sidecar without one
    is not judged): such a network still runs, but its accuracy is not the one measured."""
    from mixnet_bids.inference.weights import WeightsError, networks_for, read_metadata
    from mixnet_bids.preprocessing import PREPROCESSING_VERSION

    try:
        networks, files = networks_for(settings.task, settings.planes,
                                       settings.model_version, settings.weights_dir)
    except WeightsError as err:
        return [str(err)], []
    problems, warnings = [], []
    for plane, path in files.items():
        try:
            meta = read_metadata(path)
            if not path.is_file():
                raise WeightsError(f"{path}: weight file missing")
        except WeightsError as err:
            problems.append(f"{err} (no {settings.model_version} {networks} model for "
                            f"the {plane} plane ships with this version)")
            continue
        if meta.get("task") != networks:
            problems.append(f"{path.with_suffix('.json')}: says task {meta.get('task')!r}, "
                            f"but the file name says {networks!r}; retrain or rename it")
        trained_on = meta.get("preprocessing_version")
        if trained_on is not None and trained_on != PREPROCESSING_VERSION:
            warnings.append(f"{path.name}: trained on images of preprocessing version "
                            f"{trained_on}, but this mixnet-bids makes version "
                            f"{PREPROCESSING_VERSION}; its accuracy may be lower than "
                            "measured (retrain it with mixnet-bids-train, or use the "
                            "shipped networks)")
    return problems, warnings
