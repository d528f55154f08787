"""Per-plane prediction, fusion, tissue maps and volumes on small real NIfTI files."""

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from mixnet_bids.inference.predict import fuse, normalised_entropy, predict_plane
from mixnet_bids.interfaces.segment import Fusion
from mixnet_bids.interfaces.tissue import ConventionMaps, TissueVolumes
from mixnet_bids.model import build_mixnet
from mixnet_bids.volumes import tissue_probabilities


def test_fusion_weights_are_normalised_and_entropy_bounded():
    a = np.zeros((2, 2, 2, 4), np.float32)
    a[..., 1] = 1
    b = np.full((2, 2, 2, 4), 0.25, np.float32)
    fused = fuse({"axial": a.copy(), "sagittal": b}, {"axial": 3.0, "sagittal": 1.0})
    assert np.allclose(fused.sum(-1), 1)
    assert np.allclose(fused[..., 1], 0.75 + 0.0625)
    ent = normalised_entropy(np.stack([a, b])[..., :])
    assert np.allclose(ent[0], 0, atol=1e-5) and np.allclose(ent[1], 1, atol=1e-5)
    with pytest.raises(ValueError, match="positive"):
        fuse({"axial": a}, {"axial": 0.0})


@pytest.mark.parametrize("plane", ["sagittal", "coronal", "axial"])
def test_predict_plane_fills_only_the_head_and_sums_to_one(plane):
    torch.manual_seed(0)
    model = build_mixnet("v3", 4)
    image = np.random.default_rng(0).normal(size=(30, 26, 9, 3)).astype(np.float32)
    head = np.zeros(image.shape[:3], bool)
    head[5:20, 6:18, 2:7] = True
    probs = predict_plane(model, image, head, (0.958333, 0.958333, 3.0), plane, batch_size=4)
    assert probs.shape == (30, 26, 9, 4)
    assert np.allclose(probs.sum(-1), 1, atol=1e-5)
    assert np.all(probs[0, 0, 0] == [1, 0, 0, 0])  # far from the head: background


def _save(data, path, dtype=np.float32):
    nib.save(nib.Nifti1Image(data.astype(dtype), np.diag([2.0, 2.0, 2.0, 1.0])), str(path))
    return str(path)


def test_fusion_convention_maps_and_volumes_interfaces(tmp_path):
    rng = np.random.default_rng(0)
    shape = (6, 5, 4)
    files = []
    for i, plane in enumerate(["axial", "coronal"]):
        p = rng.random(shape + (9,)).astype(np.float32)
        files.append(_save(p / p.sum(-1, keepdims=True), tmp_path / f"{plane}.nii.gz"))
    fused = Fusion(in_probs=files, planes=["axial", "coronal"],
                   plane_weights={"axial": 4.0, "coronal": 1.0}).run(cwd=tmp_path).outputs
    probs = nib.load(fused.out_probs).get_fdata()
    planes = [nib.load(f).get_fdata() for f in files]
    assert np.allclose(probs, 0.8 * planes[0] + 0.2 * planes[1], atol=1e-6)
    assert np.allclose(nib.load(fused.out_probs).affine, np.diag([2.0, 2.0, 2.0, 1.0]))

    tiv = _save(np.ones(shape), tmp_path / "tiv.nii.gz", np.uint8)
    maps = ConventionMaps(in_probs=fused.out_probs, networks="8label", convention="8label",
                          template_tiv=tiv).run(cwd=tmp_path).outputs
    dseg = np.asarray(nib.load(maps.out_dseg).dataobj)
    assert np.array_equal(dseg, probs.argmax(-1))
    gm = nib.load(maps.out_probsegs[0]).get_fdata()
    assert np.allclose(gm, probs[..., 1] + probs[..., 2], atol=1e-5)  # cortex + basal ganglia
    expected = tissue_probabilities(probs, "8label")
    three = np.stack([1 - sum(expected.values())] + list(expected.values()), -1).argmax(-1)
    assert np.array_equal(np.asarray(nib.load(maps.out_tissue_dseg).dataobj), three)

    vol = TissueVolumes(probsegs=maps.out_probsegs, structures=maps.out_structures,
                        structure_names=maps.structure_names, tiv_mask=maps.out_tiv,
                        dseg=maps.out_dseg, uncertainty=maps.out_uncertainty,
                        convention="8label", subject="01", session="A").run(cwd=tmp_path).outputs
    row = pd.read_csv(vol.out_tsv, sep="\t").iloc[0]
    assert row["participant_id"] == "sub-01" and row["session_id"] == "ses-A"
    assert row["TIV_ml"] == pytest.approx(np.prod(shape) * 8 / 1000)
    assert row["GM_ml"] == pytest.approx(gm.sum() * 8 / 1000, abs=1e-4)  # TSV: 4 decimals
    assert row["cerebellum_ml"] == pytest.approx(probs[..., 7].sum() * 8 / 1000, abs=1e-4)
    assert row["GM_fraction"] == pytest.approx(row["GM_ml"] / row["TIV_ml"], abs=1e-3)
    assert "GM_ml" in vol.metadata and vol.metadata["GM_ml"]["Units"] == "mL"


def test_plane_inference_progress_bar_only_when_asked(tmp_path, capsys):
    from helpers import random_weights

    from mixnet_bids.inference.segment import write_plane_probabilities
    from mixnet_bids.inference.weights import weight_path

    weights = weight_path("3label", "axial", "v3", random_weights(tmp_path / "w"))
    data = np.random.default_rng(0).normal(size=(30, 26, 20, 3))
    zstack = _save(data, tmp_path / "z.nii.gz")
    head = _save(np.ones((30, 26, 20)), tmp_path / "head.nii.gz", np.uint8)
    write_plane_probabilities(zstack, head, "axial", weights, str(tmp_path / "a.nii.gz"))
    assert "MixNet axial" not in capsys.readouterr().err
    write_plane_probabilities(zstack, head, "axial", weights, str(tmp_path / "b.nii.gz"),
                              progress=True)
    assert "MixNet axial" in capsys.readouterr().err
    assert np.array_equal(nib.load(tmp_path / "a.nii.gz").get_fdata(),
                          nib.load(tmp_path / "b.nii.gz").get_fdata())
