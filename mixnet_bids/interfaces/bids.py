"""Write BIDS-Derivatives: one sink interface, atomic writes, lock-protected shared files."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from filelock import FileLock
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    traits,
)

from mixnet_bids.io import atomic_write, atomic_write_text

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
