"""Write BIDS-Derivatives: one sink interface, atomic writes, lock-protected shared files."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    InputMultiObject,
    SimpleInterface,
    TraitedSpec,
    traits,
)

from mixnet_bids.bids import subject_key
from mixnet_bids.io import atomic_write, atomic_write_text, exchange

#: Entities in BIDS order that derivative names may carry.
ENTITY_ORDER = ("sub", "ses", "acq", "ce", "rec", "run", "space", "res", "label", "desc")
_LABEL = re.compile(r"^[A-Za-z0-9]+$")
#: Suffixes of label images, stored as unsigned 8-bit integers.
LABEL_SUFFIXES = ("dseg", "mask")


def atomic_copy(src: str | Path, dst: Path) -> Path:
    """Copy ``src`` to ``dst`` atomically."""
    return atomic_write(dst, lambda tmp: shutil.copyfile(src, tmp))


def write_shared_once(dst: Path, text: str) -> Path:
    """Create a file shared by concurrent participant jobs; the first writer wins.

    The text is written under a temporary name and hard-linked to ``dst``, which fails when
    ``dst`` exists: an atomic create-if-absent (also on NFS) that needs no lock file.
    """
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        try:
            os.link(tmp, dst)
        except FileExistsError:
            pass
    finally:
        os.unlink(tmp)
    return dst


def write_shared(dst: Path, text: str) -> Path:
    """Write a shared file that every job writes alike (e.g. ``.bidsignore``): replaced,
    atomically, when its content differs, so an older version is brought up to date."""
    if not dst.is_file() or dst.read_text(encoding="utf-8") != text:
        atomic_write_text(dst, text)
    return dst


def derivative_name(entities: dict[str, str | None], suffix: str, extension: str) -> Path:
    """``sub-X[/ses-Y]/anat/sub-X[_ses-Y]_..._<suffix><ext>``; labels are checked."""
    for key, value in entities.items():
        if key not in ENTITY_ORDER:
            raise ValueError(f"unknown BIDS entity {key!r}")
        if value is not None and not _LABEL.match(str(value)):
            raise ValueError(f"BIDS label {key}-{value!r} may only hold letters and digits")
    parts = [f"{k}-{entities[k]}" for k in ENTITY_ORDER if entities.get(k)]
    folder = Path(f"sub-{entities['sub']}")
    if entities.get("ses"):
        folder = folder / f"ses-{entities['ses']}"
    return folder / "anat" / ("_".join(parts + [suffix]) + extension)


def derivative_path(output_dir: Path, entities: dict[str, str | None], suffix: str,
                    extension: str) -> Path:
    """``<out>/`` + ``derivative_name``; refuses names that leave ``output_dir``."""
    path = output_dir / derivative_name(entities, suffix, extension)
    if output_dir.resolve() not in path.resolve().parents:
        raise ValueError(f"{path}: derivative path escapes the output folder")
    return path


def report_name(subject: str, session: str | None) -> str:
    """File name of a subject's HTML report (beside its ``sub-X`` folder)."""
    return subject_key(subject, session) + ".html"


def subject_folder(root: Path, subject: str, session: str | None) -> Path:
    folder = Path(root) / f"sub-{subject}"
    return folder / f"ses-{session}" if session else folder


def publish_subject(staging: Path, output_dir: Path, subject: str,
                    session: str | None) -> Path:
    """Move one finished subject's derivatives from the work dir into place, all at once.

    The ``anat`` folder is assembled beside its destination under a hidden name and
    renamed in one step, so a subject's derivatives appear complete or not at all (an
    interrupted publish leaves only a hidden ``.anat.partial-*`` folder, removed by the
    next run). With ``--overwrite`` the old ``anat`` is swapped out in the same step where
    the file system allows it. The report is copied first: ``anat`` is the mark of a
    finished subject.
    Returns the report's path.
    """
    src = subject_folder(staging, subject, session) / "anat"
    parent = subject_folder(output_dir, subject, session)
    parent.mkdir(parents=True, exist_ok=True)
    for stale in parent.glob(".anat.*"):
        shutil.rmtree(stale, ignore_errors=True)
    report = Path(output_dir) / report_name(subject, session)
    atomic_copy(Path(staging) / report.name, report)
    partial = Path(tempfile.mkdtemp(prefix=".anat.partial-", dir=parent))
    old = parent / f".anat.old-{os.getpid()}"
    try:
        for path in sorted(src.iterdir()):
            shutil.copyfile(path, partial / path.name)
            os.chmod(partial / path.name, 0o644)
        os.chmod(partial, 0o755)
        if not (parent / "anat").exists():
            os.replace(partial, parent / "anat")
        elif not exchange(partial, parent / "anat"):  # file systems without the swap:
            os.replace(parent / "anat", old)           # a moment without ``anat``
            try:
                os.replace(partial, parent / "anat")
            except OSError:
                os.replace(old, parent / "anat")  # put the previous results back
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return report


def write_bids_image(src: str | Path, dst: Path, suffix: str) -> Path:
    """Copy a NIfTI image to ``dst`` (atomically) with the header BIDS validators expect.

    Spatial units are millimetres (the volumes assume them), with seconds on a 4th axis;
    label images (``LABEL_SUFFIXES``) are stored as uint8 after checking that their values
    are whole numbers 0-255. Returns ``dst``.
    """
    img = nib.load(str(src))
    xyz, t = img.header.get_xyzt_units()
    is_label = suffix in LABEL_SUFFIXES
    if xyz == "mm" and (img.ndim < 4 or t != "unknown") and (
            not is_label or img.get_data_dtype() == np.uint8):
        return atomic_copy(src, dst)
    header = img.header.copy()
    header.set_xyzt_units("mm", "sec" if img.ndim > 3 and t == "unknown" else t)
    data = img.dataobj
    if is_label:
        values = np.asanyarray(img.dataobj)
        if values.size and (values.min() < 0 or values.max() > 255
                            or not np.array_equal(values, np.round(values))):
            raise ValueError(f"{src}: a {suffix} image must hold whole numbers 0-255")
        data = values.astype(np.uint8)
        header.set_data_dtype(np.uint8)
        header.set_slope_inter(1, 0)
    out = nib.Nifti1Image(data, img.affine, header)
    out.set_qform(*img.get_qform(coded=True))
    out.set_sform(*img.get_sform(coded=True))
    return atomic_write(dst, lambda tmp: nib.save(out, tmp))


class _SinkInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True)
    base_directory = traits.Directory(mandatory=True, desc="the derivatives folder")
    subject = traits.Str(mandatory=True)
    session = traits.Either(None, traits.Str, usedefault=True)
    acquisition = traits.Either(None, traits.Str, usedefault=True)
    space = traits.Either(None, traits.Str, usedefault=True)
    res = traits.Either(None, traits.Str, usedefault=True)
    label = traits.Either(None, traits.Str, usedefault=True)
    desc = traits.Either(None, traits.Str, usedefault=True)
    suffix = traits.Str(mandatory=True)
    extension = traits.Str(".nii.gz", usedefault=True)
    metadata = traits.Dict(desc="JSON sidecar content (no sidecar when empty)")


class _SinkOutputSpec(TraitedSpec):
    out_file = File(exists=True)


class DerivativesDataSink(SimpleInterface):
    """Copy one result into mixnet-bids' derivatives folder under its BIDS name."""

    input_spec = _SinkInputSpec
    output_spec = _SinkOutputSpec
    always_run = True

    def _run_interface(self, runtime):
        entities = {"sub": self.inputs.subject, "ses": self.inputs.session,
                    "acq": self.inputs.acquisition, "space": self.inputs.space,
                    "res": self.inputs.res,
                    "label": self.inputs.label, "desc": self.inputs.desc}
        dst = derivative_path(Path(self.inputs.base_directory), entities, self.inputs.suffix,
                              self.inputs.extension)
        if self.inputs.metadata:
            sidecar = dst.with_name(dst.name[: -len(self.inputs.extension)] + ".json")
            atomic_write_text(sidecar, json.dumps(self.inputs.metadata, indent=2) + "\n")
        if self.inputs.extension in (".nii", ".nii.gz"):
            self._results["out_file"] = str(write_bids_image(self.inputs.in_file, dst,
                                                             self.inputs.suffix))
        else:
            self._results["out_file"] = str(atomic_copy(self.inputs.in_file, dst))
        return runtime


class _PublishInputSpec(BaseInterfaceInputSpec):
    staging = traits.Directory(mandatory=True, desc="where the derivatives were assembled")
    base_directory = traits.Directory(mandatory=True, desc="the derivatives folder")
    subject = traits.Str(mandatory=True)
    session = traits.Either(None, traits.Str, usedefault=True)
    in_files = InputMultiObject(File(exists=True), mandatory=True,
                                desc="the staged files (publishing waits for them)")
    report = File(exists=True, mandatory=True, desc="the staged HTML report")


class _PublishOutputSpec(TraitedSpec):
    report = File(exists=True, desc="the published report")


class PublishSubject(SimpleInterface):
    """Move the subject's staged derivatives into the derivatives folder at once (the last
    node of a subject's graph, so it also runs as a cluster job with SLURMGraph)."""

    input_spec = _PublishInputSpec
    output_spec = _PublishOutputSpec
    always_run = True

    def _run_interface(self, runtime):
        self._results["report"] = str(publish_subject(
            Path(self.inputs.staging), Path(self.inputs.base_directory), self.inputs.subject,
            self.inputs.session))
        return runtime
