"""Dataset-level derivative files: description, lookup tables, settings dumps, group table."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from mixnet_bids.checks import InputProblems
from mixnet_bids.conventions import TISSUE_CONVENTION, class_table
from mixnet_bids.inference.predict import mirrored_planes
from mixnet_bids.interfaces.bids import (
    report_name,
    subject_folder,
    write_shared,
    write_shared_once,
)
from mixnet_bids.io import atomic_write_text
from mixnet_bids.labels import CONVENTIONS
from mixnet_bids.sidecars import dataset_links

#: Files that are not BIDS derivatives. (The validator matches ``sub-*/log`` but not
#: ``sub-*/log/``.)
BIDSIGNORE = ("*_uncertainty.nii.gz\n*_uncertainty.json\n*_volumes.tsv\n*_volumes.json\n"
              "sub-*/log\ngroup_*\n*.html\n")

README = """\
# mixnet-bids derivatives

Brain-tissue segmentation by mixnet-bids (MixNet, Chen et al., BrainLes/MICCAI 2018).

- `sub-*/anat/`: per subject, the labels (`*_dseg.nii.gz`, values named in the
  `desc-*_dseg.tsv` tables here), the tissue probabilities (`*_probseg.nii.gz`), the
  intracranial mask (`*_desc-tiv_mask.nii.gz`), the bias-corrected inputs
  (`*_desc-preproc_*.nii.gz`), the uncertainty map and the volumes table (`*_volumes.tsv`);
  each image has a JSON sidecar saying what it is and what it was made from.
- `sub-*.html`: the subject QC reports; `sub-*/log/`: each run's settings and crash files.
- `group_desc-*_volumes.tsv` (+ `.json`) and `group_desc-*_report.html`: the group level.

Files that are not BIDS derivatives are listed in `.bidsignore`.
"""


def dataset_description(settings) -> dict:
    return {
        "Name": "mixnet-bids derivatives",
        "BIDSVersion": "1.9.0",
        "DatasetType": "derivative",
        "GeneratedBy": [{
            "Name": "mixnet-bids",
            "Version": settings.version,
            "Description": f"MixNet{settings.model_version} {settings.task} tissue "
                           "segmentation, planes " + ":".join(
                               f"{p}={w:g}" for p, w in settings.plane_weights.items())
                           + "".join(f", {p} mirrored"
                                     for p in mirrored_planes(settings.planes, settings.mirror))
                           + (", intensity-refined" if settings.refine else ""),
            "CodeURL": "https://github.com/mixnet-bids/mixnet-bids",
        }],
        "SourceDatasets": [{"URL": Path(settings.bids_dir).as_uri()}],
        "DatasetLinks": dataset_links(settings.bids_dir),
    }


def dseg_lookup(task: str) -> str:
    """The ``desc-<task>_dseg.tsv`` lookup table; each name says which voxels it covers."""
    rows = ["index\tname\tabbreviation"]
    rows += [f"{i}\t{name}\t{short}" for i, (short, name) in enumerate(class_table(task))]
    return "\n".join(rows) + "\n"


def write_dataset_files(settings) -> None:
    """dataset_description.json, desc-<task>_dseg.tsv, .bidsignore, README.md (safe for job
    arrays: no lock, each file created or replaced in one step)."""
    out = Path(settings.output_dir)
    write_shared_once(out / "dataset_description.json",
                      json.dumps(dataset_description(settings), indent=2) + "\n")
    for task in {settings.task, TISSUE_CONVENTION[settings.task]}:
        write_shared_once(out / f"desc-{task}_dseg.tsv", dseg_lookup(task))
    write_shared(out / ".bidsignore", BIDSIGNORE)
    write_shared(out / "README.md", README)


def finished_outputs(settings, subject: str, session: str | None) -> Path | None:
    """The subject's derivative folder when a run of this task finished, else None."""
    anat = subject_folder(settings.output_dir, subject, session) / "anat"
    return anat if any(anat.glob(f"*_desc-{settings.task}_volumes.tsv")) else None


def write_settings(settings, subject: str, session: str | None,
                   images: dict[str, str]) -> Path:
    """Dump the run's settings and inputs into ``sub-X/log/<time>/``; return that folder."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-%f")
    folder = Path(settings.output_dir) / f"sub-{subject}" / "log" / stamp
    if session:
        folder = folder.parent / f"ses-{session}_{stamp}"
    dump = json.loads(settings.to_json())
    dump["inputs"] = images
    atomic_write_text(folder / "settings.json", json.dumps(dump, indent=2) + "\n")
    return folder


def _volume_tables(out: Path, task: str) -> list[Path]:
    """The participants' volumes tables of convention ``task`` in the output folder."""
    return sorted(out.glob(f"sub-*/**/anat/*_desc-{task}_volumes.tsv"))


def participant_conventions(output_dir: Path) -> list[str]:
    """The conventions (``--task``) whose participant volumes tables are in ``output_dir``:
    what the group level gathers when ``--task`` is not given. None is an
    ``InputProblems``."""
    out = Path(output_dir)
    found = [task for task in sorted(CONVENTIONS) if _volume_tables(out, task)]
    if not found:
        raise InputProblems([f"{out}: no participant results (*_desc-<task>_volumes.tsv); "
                             "run the participant level first"])
    return found


def write_group_table(settings) -> tuple[Path, Path]:
    """Gather every participant's volumes TSV into ``group_desc-<task>_volumes.tsv`` (with a
    JSON sidecar describing its columns) and write the cohort's QC report
    ``group_desc-<task>_report.html``; return the table's and the report's paths."""
    from mixnet_bids.reports import group_report, report_key

    out = Path(settings.output_dir)
    files = _volume_tables(out, settings.task)
    if not files:
        raise InputProblems([f"{out}: no participant results (*_desc-{settings.task}"
                             "_volumes.tsv); run the participant level first"])
    table = pd.concat([pd.read_csv(f, sep="\t") for f in files], ignore_index=True)
    target = out / f"group_desc-{settings.task}_volumes.tsv"
    report = out / f"group_desc-{settings.task}_report.html"
    links = {}
    for row in table.itertuples():
        session = getattr(row, "session_id", None)
        subject = row.participant_id.removeprefix("sub-")
        name = report_name(subject, session.removeprefix("ses-") if isinstance(session, str)
                           else None)
        links[report_key(row.participant_id, session)] = name
    atomic_write_text(target, table.to_csv(sep="\t", index=False, float_format="%.4f",
                                           na_rep="n/a"))
    atomic_write_text(target.with_suffix(".json"),
                      json.dumps(column_descriptions(files, table.columns), indent=2) + "\n")
    group_report(report, table, task=settings.task, report_links=links)
    return target, report


def column_descriptions(volume_files: list[Path], columns) -> dict:
    """The group table's JSON sidecar: each column as the participants' sidecars describe
    it (``*_volumes.json`` beside each ``*_volumes.tsv``)."""
    described = {}
    for path in volume_files:
        sidecar = path.with_suffix(".json")
        if sidecar.is_file():
            described.update(json.loads(sidecar.read_text(encoding="utf-8")))
    return {column: described[column] for column in columns if column in described}
