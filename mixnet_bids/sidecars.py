"""What the JSON sidecars of the derivatives say: what each image is, the files it was made
from (``Sources``, as BIDS URIs) and the image whose grid it shares (``SpatialReference``).

BIDS URIs name a file inside a dataset: ``bids::<path>`` in these derivatives,
``bids:raw:<path>`` in the input dataset and ``bids:templateflow:<path>`` in the TemplateFlow
home the run read its template from (``mixnet_bids.templates``); the ``DatasetLinks`` of
``dataset_description.json`` say where ``raw`` and ``templateflow`` are.
"""

from __future__ import annotations

import os
from pathlib import Path

from mixnet_bids.templates import TEMPLATE, default_home

TISSUE_NAMES = {"GM": "gray matter", "WM": "white matter", "CSF": "cerebrospinal fluid"}


def dataset_links(bids_dir: str | Path) -> dict[str, str]:
    """``DatasetLinks`` for ``dataset_description.json``."""
    return {"raw": Path(bids_dir).absolute().as_uri(),
            "templateflow": default_home().absolute().as_uri()}


def raw_uri(bids_dir: str | Path, path: str | Path) -> str:
    """BIDS URI of an input file (``path`` inside ``bids_dir``)."""
    relative = os.path.relpath(Path(path).absolute(), Path(bids_dir).absolute())
    if relative.startswith(".."):
        raise ValueError(f"{path} is not inside the BIDS folder {bids_dir}")
    return f"bids:raw:{Path(relative).as_posix()}"


def own_uri(relative_path: str | Path) -> str:
    """BIDS URI of a file of these derivatives (path relative to their root)."""
    return f"bids::{Path(relative_path).as_posix()}"


def template_uri(name: str) -> str:
    """BIDS URI of a TemplateFlow file of ``TEMPLATE``, e.g. ``res-2_T1w.nii.gz``."""
    return f"bids:templateflow:tpl-{TEMPLATE}/tpl-{TEMPLATE}_{name}"
