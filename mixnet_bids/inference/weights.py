"""Shipped model weights: a plain state_dict (.pt, loaded with ``weights_only=True``)
plus a JSON sidecar with the metadata and the SHA-256 of the weight file; and which
networks serve an output convention."""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path

import torch

from mixnet_bids.io import atomic_write, atomic_write_text
from mixnet_bids.labels import CONVENTIONS, n_classes
from mixnet_bids.model import MixNet, build_mixnet

WEIGHTS_DIR = Path(str(resources.files("mixnet_bids.data") / "weights"))


class WeightsError(RuntimeError):
    """Missing, corrupted or mismatched weights."""


def weight_path(task: str, plane: str, version: str, folder: Path | None = None) -> Path:
    return Path(folder or WEIGHTS_DIR) / f"mixnet_{version}_{task}_{plane}.pt"


def networks_for(convention: str, planes: list[str], version: str,
                 folder: Path | None = None) -> tuple[str, dict[str, Path]]:
    """The networks that serve the output ``convention``: ``(task, {plane: weight file})``.

    Fine networks (``mixnet_<version>_fine_<plane>.pt``) give every convention, so they are
    used whenever ``folder`` (default: the shipped weights) holds one for every plane in
    ``planes``; otherwise the networks trained for the convention itself (``3label`` or
    ``8label``). ``wholebrain`` has no networks of its own: without fine networks it is a
    ``WeightsError``. The files are not opened here; ``load_model`` verifies them.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown convention {convention!r}; choose one of "
                         f"{sorted(CONVENTIONS)}")
    fine = {plane: weight_path("fine", plane, version, folder) for plane in planes}
    if all(path.is_file() for path in fine.values()):
        return "fine", fine
    if convention == "wholebrain":
        where = Path(folder or WEIGHTS_DIR)
        raise WeightsError(f"{where}: --task wholebrain needs fine networks "
                           f"(mixnet_{version}_fine_<plane>.pt for {', '.join(planes)}), "
                           "which are not there; use --task 3label or 8label, or "
                           "--weights-dir with fine networks from mixnet-bids-train")
    return convention, {plane: weight_path(convention, plane, version, folder)
                        for plane in planes}


def default_convention(planes: list[str], version: str, folder: Path | None = None) -> str:
    """``wholebrain`` when fine networks are installed for ``planes``, else ``3label``."""
    fine = networks_for("3label", planes, version, folder)[0] == "fine"
    return "wholebrain" if fine else "3label"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_weights(model: MixNet, path: Path, metadata: dict) -> Path:
    """Write ``path`` (state_dict) and ``path.with_suffix('.json')`` (metadata + hash)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(path, lambda tmp: torch.save(state, tmp))
    meta = dict(metadata, version=model.version, pool=model.pool, sha256=sha256(path))
    atomic_write_text(path.with_suffix(".json"), json.dumps(meta, indent=2) + "\n")
    return path


def read_metadata(path: Path) -> dict:
    sidecar = Path(path).with_suffix(".json")
    if not sidecar.is_file():
        raise WeightsError(f"{sidecar}: weight metadata missing; reinstall mixnet-bids")
    try:
        return json.loads(sidecar.read_text())
    except json.JSONDecodeError as err:
        raise WeightsError(f"{sidecar}: weight metadata is not valid JSON ({err}); "
                           "reinstall mixnet-bids or export the weights again") from None


def load_model(path: Path) -> tuple[MixNet, dict]:
    """Build the network described by the sidecar and load its verified weights (eval)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weight file missing; reinstall mixnet-bids or train "
                           "one with mixnet-bids-train")
    meta = read_metadata(path)
    if sha256(path) != meta.get("sha256"):
        raise WeightsError(f"{path}: SHA-256 does not match its metadata (corrupted or "
                           "tampered); reinstall mixnet-bids")
    # sidecars written before the pooling became an option are pooled networks
    model = build_mixnet(meta["version"], n_classes(meta["task"]), pool=meta.get("pool", True))
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval(), meta
