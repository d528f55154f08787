"""Write BIDS-Derivatives: one sink interface, atomic writes, lock-protected shared files."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from filelock import FileLock
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    InputMultiObject,
    SimpleInterface,
    TraitedSpec,
    traits,
)

from mixnet_bids.io import atomic_write, atomic_write_text, exchange

#: Entities in BIDS order that derivative names may carry.
ENTITY_ORDER = ("sub", "ses", "acq", "ce", "rec", "run", "space", "res", "label", "desc")
_LABEL = re.compile(r"^[A-Za-z0-9]+$")


def atomic_copy(src: str | Path, dst: Path) -> Path:
    """Copy ``src`` to ``dst`` atomically."""
    return atomic_write(dst, lambda tmp: shutil.copyfile(src, tmp))


def write_shared_once(dst: Path, text: str) -> Path:
    """Create a file shared by concurrent participant jobs (first writer wins)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dst.parent / f".{dst.name}.lock")):
        if not dst.exists():
            atomic_write_text(dst, text)
    return dst


def derivative_path(output_dir: Path, entities: dict[str, str], suffix: str,
                    extension: str) -> Path:
    """``<out>/sub-X[/ses-Y]/anat/sub-X[_ses-Y]_..._<suffix><ext>``; labels are checked."""
    for key, value in entities.items():
        if key not in ENTITY_ORDER:
            raise ValueError(f"unknown BIDS entity {key!r}")
        if value is not None and not _LABEL.match(str(value)):
            raise ValueError(f"BIDS label {key}-{value!r} may only hold letters and digits")
    parts = [f"{k}-{entities[k]}" for k in ENTITY_ORDER if entities.get(k)]
    folder = output_dir / f"sub-{entities['sub']}"
    if entities.get("ses"):
        folder = folder / f"ses-{entities['ses']}"
    path = folder / "anat" / ("_".join(parts + [suffix]) + extension)
    if output_dir.resolve() not in path.resolve().parents:
        raise ValueError(f"{path}: derivative path escapes the output folder")
    return path


def report_name(subject: str, session: str | None) -> str:
    """File name of a subject's HTML report (beside its ``sub-X`` folder)."""
    return f"sub-{subject}" + (f"_ses-{session}" if session else "") + ".html"


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
