"""Shipped weights: present for every plane, verified by hash, loaded with weights_only."""

import json
import shutil

import pytest
import torch

from mixnet_bids.inference.planes import PLANES
from mixnet_bids.inference.weights import WEIGHTS_DIR, WeightsError, load_model, sha256, weight_path
from mixnet_bids.labels import TASK_CLASSES
from mixnet_bids.preprocessing import PREPROCESSING_VERSION
from mixnet_bids.training.recipes import BRAINWEB_HELD_OUT


class Payload:
    """Stands for any pickled object that is not a tensor."""


SHIPPED_TASKS = sorted({p.stem.split("_")[2] for p in WEIGHTS_DIR.glob("mixnet_*.pt")})


def test_fine_networks_ship_for_every_plane():
    """Fine networks serve every output convention only as a full set of planes."""
    for plane in PLANES:
        assert weight_path("fine", plane, "v3").is_file(), plane


@pytest.mark.parametrize("task", SHIPPED_TASKS)
@pytest.mark.parametrize("plane", PLANES)
def test_shipped_weights_load_and_describe_themselves(task, plane):
    model, meta = load_model(weight_path(task, plane, "v3"))
    assert meta["plane"] == plane and meta["task"] == task
    assert meta["labels"] == list(TASK_CLASSES[task])
    assert meta["modalities"] == ["T1w", "IR", "FLAIR"]
    # trained on the images this version makes (a preprocessing change needs new networks)
    assert meta["preprocessing_version"] == PREPROCESSING_VERSION
    assert meta["iterations"] > 0 and meta["wall_time_s"] > 0 and meta["command"]
    # the seven MRBrainS subjects; fine networks also the 16 BrainWeb anatomies but the 3
    # held out for validation
    assert len(meta["training_data"]) == (7 + 13 if task == "fine" else 7)
    assert not set(meta["training_data"]) & set(BRAINWEB_HELD_OUT)
    with torch.inference_mode():
        out = model(torch.zeros(1, 3, 33, 41))
    assert out.shape == (1, len(TASK_CLASSES[task]), 33, 41)


def test_tampered_weights_are_refused(tmp_path):
    src = weight_path("fine", "axial", "v3")
    dst = tmp_path / src.name
    shutil.copy(src, dst)
    shutil.copy(src.with_suffix(".json"), dst.with_suffix(".json"))
    data = bytearray(dst.read_bytes())
    data[-100] ^= 0xFF
    dst.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="SHA-256 does not match"):
        load_model(dst)


def test_pickled_objects_are_not_loaded(tmp_path):
    """A weight file holding arbitrary Python objects fails under weights_only=True."""
    src = weight_path("fine", "axial", "v3")
    evil = tmp_path / src.name
    torch.save({"payload": Payload()}, evil)
    meta = json.loads(src.with_suffix(".json").read_text())
    meta["sha256"] = sha256(evil)
    evil.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(Exception, match="Weights only load failed|weights_only"):
        load_model(evil)
