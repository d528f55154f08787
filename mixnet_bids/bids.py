"""BIDS queries (pybids): which T1w, IR and FLAIR images belong to a subject/session."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from bids import BIDSLayout
from bids.layout import Query

from mixnet_bids.model import MODALITIES


def subject_key(subject: str, session: str | None = None) -> str:
    """``sub-X`` or ``sub-X_ses-Y``: how one participant's (session's) files and reports
    are named (labels without their ``sub-``/``ses-`` prefixes)."""
    return f"sub-{subject}" + (f"_ses-{session}" if session else "")


#: Default pybids queries per modality (keys as in ``MODALITIES``); ``--bids-filter-file``
#: entries (keys ``t1w``, ``ir``, ``flair``) update them, as in fMRIPrep.
DEFAULT_QUERIES: dict[str, dict] = {
    "T1w": {"datatype": "anat", "suffix": "T1w", "acquisition": [Query.NONE, Query.ANY]},
    "IR": {"datatype": "anat", "suffix": "T1w", "acquisition": "IR"},
    "FLAIR": {"datatype": "anat", "suffix": "FLAIR"},
}
EXTENSIONS = [".nii", ".nii.gz"]


class BIDSInputError(ValueError):
    """An input problem the user must fix; the message names the file and the fix."""


def load_filters(path: str | Path | None) -> dict[str, dict]:
    """Merge a ``--bids-filter-file`` (JSON) into the default per-modality queries."""
    queries = copy.deepcopy(DEFAULT_QUERIES)
    if path is None:
        return queries
    try:
        user = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise BIDSInputError(f"{path}: cannot read the BIDS filter file ({err}); "
                             "give a JSON object such as {\"t1w\": {\"run\": 1}}") from None
    if not isinstance(user, dict):
        raise BIDSInputError(f"{path}: the BIDS filter file must hold a JSON object")
    keys = {m.lower(): m for m in MODALITIES}
    for key, query in user.items():
        if key.lower() not in keys or not isinstance(query, dict):
            raise BIDSInputError(f"{path}: unknown filter {key!r}; use keys "
                                 f"{sorted(keys)} each mapping to an object of BIDS entities")
        queries[keys[key.lower()]].update(query)
    return queries


def collect_modalities(layout: BIDSLayout, subject: str, session: str | None,
                       queries: dict[str, dict]) -> dict[str, str]:
    """Return ``{modality: path}`` for one subject/session; fail clearly on ambiguity."""
    found: dict[str, str] = {}
    for modality in MODALITIES:
        query = dict(queries[modality])
        if session is not None:
            query["session"] = session
        files = layout.get(subject=subject, extension=EXTENSIONS, return_type="object",
                           invalid_filters="allow", **query)
        if modality == "T1w" and "acquisition" not in _explicit(queries, modality):
            files = [f for f in files if f.entities.get("acquisition") != "IR"]
        if session is None:
            sessions = sorted({f.entities.get("session") for f in files} - {None})
            if len(sessions) > 1:
                raise BIDSInputError(
                    f"sub-{subject}: {modality} images in sessions {sessions}; "
                    "process one session at a time with --session-label")
        if len(files) > 1:
            names = ", ".join(Path(f.path).name for f in files)
            raise BIDSInputError(
                f"sub-{subject}: several {modality} images ({names}); choose one with "
                f"--bids-filter-file, e.g. {{\"{modality.lower()}\": {{\"run\": 1}}}}")
        if files:
            found[modality] = files[0].path
    return found


def _explicit(queries: dict[str, dict], modality: str) -> dict:
    """The entities of a query that differ from the default."""
    return {k: v for k, v in queries[modality].items()
            if DEFAULT_QUERIES[modality].get(k, object()) != v}


def subject_sessions(layout: BIDSLayout, subject: str,
                     session_labels: list[str] | None) -> list[str | None]:
    """Sessions to process for a subject (``[None]`` for a dataset without sessions)."""
    sessions = layout.get_sessions(subject=subject)
    if not sessions:
        return [None]
    if session_labels:
        return [s for s in sessions if s in session_labels]
    return sorted(sessions)
