"""An offline TemplateFlow home, populated from the MNI152 2009a files inside nilearn.

TemplateFlow cannot download here (and must not at run time), but nilearn's wheel ships
the ICBM 2009a nonlinear symmetric T1 (brain-extracted) and its GM/WM probability maps.
:func:`ensure_templateflow` copies them into TemplateFlow's layout as
``tpl-MNI152NLin2009aSym`` (plus a 2 mm copy and an intracranial mask), once; the
workflow then reads them through ``templateflow.api.get``.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from mixnet_bids.io import atomic_write

TEMPLATE = "MNI152NLin2009aSym"
_NILEARN_FILES = {
    "T1w": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "label-GM_probseg": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "label-WM_probseg": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}


def default_home() -> Path:
    """TEMPLATEFLOW_HOME if set, else a folder in the user's cache."""
    if os.environ.get("TEMPLATEFLOW_HOME"):
        return Path(os.environ["TEMPLATEFLOW_HOME"])
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "mixnet-bids" / "templateflow"


def _template_files(home: Path) -> dict[str, Path]:
    folder = home / f"tpl-{TEMPLATE}"
    names = {}
    for res in (1, 2):
        for key in ("T1w", "label-GM_probseg", "label-WM_probseg", "desc-brain_mask"):
            names[f"res-{res}_{key}"] = folder / f"tpl-{TEMPLATE}_res-{res}_{key}.nii.gz"
    return names


def populate(home: Path) -> None:
    """Write the template files (atomically, each) from nilearn's data folder."""
    data = resources.files("nilearn.datasets") / "data"
    folder = home / f"tpl-{TEMPLATE}"
    folder.mkdir(parents=True, exist_ok=True)
    images = {key: nib.load(str(data / name)) for key, name in _NILEARN_FILES.items()}
    for key in ("label-GM_probseg", "label-WM_probseg"):  # nilearn stores them as 0-255
        img = images[key]
        images[key] = nib.Nifti1Image((img.get_fdata() / 255.0).astype(np.float32), img.affine)
    t1 = images["T1w"]
    # the template is brain-extracted: its support, hole-filled, is the intracranial mask
    mask = ndimage.binary_fill_holes(ndimage.binary_closing(
        np.asarray(t1.dataobj) > 0, iterations=2))
    images["desc-brain_mask"] = nib.Nifti1Image(mask.astype(np.uint8), t1.affine)
    files = _template_files(home)
    for key, img in images.items():
        order = 0 if key == "desc-brain_mask" else 1
        _save(img, files[f"res-1_{key}"])
        _save(_downsample(img, order), files[f"res-2_{key}"])
    description = {"Identifier": TEMPLATE, "Name": "ICBM 2009a Nonlinear Symmetric",
                   "Authors": ["Fonov V", "Evans AC", "McKinstry RC", "Almli CR",
                               "Collins DL"],
                   "ReferencesAndLinks": ["https://doi.org/10.1016/j.neuroimage.2010.07.033"],
                   "GeneratedBy": "mixnet-bids from the copy shipped in nilearn"}
    (folder / "template_description.json").write_text(json.dumps(description, indent=2))


def _downsample(img: nib.Nifti1Image, order: int) -> nib.Nifti1Image:
    from nibabel.processing import resample_to_output

    return resample_to_output(img, voxel_sizes=(2.0, 2.0, 2.0), order=order)


def _save(img: nib.Nifti1Image, path: Path) -> None:
    atomic_write(path, lambda tmp: nib.save(img, tmp))


def ensure_templateflow(home: Path | None = None) -> Path:
    """Make ``home`` a usable offline TemplateFlow home and point the library at it."""
    home = Path(home or default_home())
    os.environ["TEMPLATEFLOW_HOME"] = str(home)
    os.environ.setdefault("TEMPLATEFLOW_AUTOUPDATE", "0")
    if not all(p.is_file() and p.stat().st_size > 0 for p in _template_files(home).values()):
        populate(home)
    return home


def get_template(suffix: str, resolution: int = 2, **entities) -> str:
    """A template file through TemplateFlow's API (offline home, see above)."""
    from templateflow import api

    found = api.get(TEMPLATE, resolution=resolution, suffix=suffix, extension=".nii.gz",
                    raise_empty=True, **entities)
    if isinstance(found, list):
        raise RuntimeError(f"ambiguous TemplateFlow query for {suffix} {entities}: {found}")
    return str(found)
