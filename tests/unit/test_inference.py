"""Per-plane prediction, fusion, tissue maps and volumes on small real NIfTI files."""

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from mixnet_bids.inference.predict import (
    MARGIN,
    fuse,
    normalised_entropy,
    predict_plane,
    slices_per_batch,
)
from mixnet_bids.interfaces.segment import Fusion
from mixnet_bids.interfaces.tissue import ConventionMaps, TissueVolumes
from mixnet_bids.model import build_mixnet
from mixnet_bids.preprocessing import crop_box, head_box, head_crop, paste
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


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
@pytest.mark.parametrize("plane", ["sagittal", "coronal", "axial"])
def test_predict_plane_fills_only_the_head_and_sums_to_one(plane, precision):
    torch.manual_seed(0)
    model = build_mixnet("v3", 4)
    image = np.random.default_rng(0).normal(size=(30, 26, 9, 3)).astype(np.float32)
    head = np.zeros(image.shape[:3], bool)
    head[5:20, 6:18, 2:7] = True
    probs = predict_plane(model, image, head, (0.958333, 0.958333, 3.0), plane, batch_size=4,
                          precision=precision)
    assert probs.shape == (30, 26, 9, 4) and probs.dtype == np.float32
    assert np.allclose(probs.sum(-1), 1, atol=1e-5)
    assert np.all(probs[0, 0, 0] == [1, 0, 0, 0])  # a slice without head: background
    big = np.zeros((40, 26, 9, 3), np.float32)     # a voxel outside the head's box too
    big[:30] = image
    far = predict_plane(model, big, np.pad(head, ((0, 10), (0, 0), (0, 0))),
                        (0.958333, 0.958333, 3.0), plane, precision=precision)
    assert np.all(far[39] == [1, 0, 0, 0]) and np.allclose(far.sum(-1), 1, atol=1e-5)
    # the head's slices are run: its voxels are not all certain background
    assert (probs[head][:, 0] < 1).any()


@pytest.mark.parametrize("zooms", [(0.958333, 0.958333, 3.0), (1.0, 1.0, 1.0)])
@pytest.mark.parametrize("plane", ["coronal", "axial"])
def test_mirroring_makes_the_prediction_left_right_symmetric(plane, zooms):
    """A network's output is not symmetric under a left-right flip of its input; the average
    with the mirrored run is: mirroring the head mirrors the probabilities (on the training
    grid, and on a 1 mm grid whose slices are resampled)."""
    torch.manual_seed(0)
    model = build_mixnet("v3", 4)
    image = np.random.default_rng(3).normal(size=(26, 22, 8, 3)).astype(np.float32)
    head = np.zeros(image.shape[:3], bool)
    head[3:20, 4:18, 1:7] = True      # off-centre: the box moves with the flip
    flipped_image, flipped_head = image[::-1].copy(), head[::-1].copy()
    plain = predict_plane(model, image, head, zooms, plane)
    assert not np.allclose(predict_plane(model, flipped_image, flipped_head, zooms, plane),
                           plain[::-1], atol=1e-4)
    mirrored = predict_plane(model, image, head, zooms, plane, mirror=True)
    assert np.allclose(mirrored.sum(-1), 1, atol=1e-5) and not np.allclose(mirrored, plain)
    assert np.allclose(predict_plane(model, flipped_image, flipped_head, zooms, plane,
                                     mirror=True), mirrored[::-1], atol=1e-6)


@pytest.mark.parametrize("zooms", [(0.958333, 0.958333, 3.0), (1.0, 1.0, 1.0)])
def test_a_mirrored_sagittal_network_gives_what_it_gives_unmirrored(zooms):
    """A left-right mirror only reverses the order of sagittal slices: the mirrored pass
    lands each slice's probabilities back where the plain pass puts them."""
    torch.manual_seed(0)
    model = build_mixnet("v3", 4)
    image = np.random.default_rng(5).normal(size=(24, 20, 8, 3)).astype(np.float32)
    head = np.zeros(image.shape[:3], bool)
    head[2:15, 3:17, 1:7] = True
    plain = predict_plane(model, image, head, zooms, "sagittal")
    assert np.allclose(predict_plane(model, image, head, zooms, "sagittal", mirror=True),
                       plain, atol=1e-6)


def test_batch_size_does_not_change_the_probabilities():
    torch.manual_seed(0)
    model = build_mixnet("v3", 4)
    image = np.random.default_rng(1).normal(size=(24, 20, 7, 3)).astype(np.float32)
    head = np.ones(image.shape[:3], bool)
    for zooms in ((0.958333, 0.958333, 3.0), (1.0, 1.2, 1.0)):  # the second is resampled
        one = predict_plane(model, image, head, zooms, "axial", batch_size=1)
        assert np.allclose(one, predict_plane(model, image, head, zooms, "axial"), atol=1e-5)
    assert slices_per_batch(256, 256) == 1 and slices_per_batch(144, 144) == 2
    assert slices_per_batch(4000, 4000) == 1
    assert slices_per_batch(256, 256, "cuda") == 8


def test_head_box_widens_by_the_margin_and_stops_at_the_edges():
    mask = np.zeros((40, 30, 20), bool)
    mask[15:20, 2:5, 10:12] = True
    assert head_box(mask, 3) == (slice(12, 23), slice(0, 8), slice(7, 15))
    assert head_box(np.zeros((4, 4, 4), bool), 3) is None


def test_crop_box_and_paste_place_a_box_by_its_affine():
    affine = np.array([[-1.0, 0, 0, 90], [0, 1.0, 0, -120], [0, 0, 2.0, -60], [0, 0, 0, 1]])
    img = nib.Nifti1Image(np.zeros((30, 40, 20), np.float32), affine)
    crop = img.slicer[4:14, 5:25, 3:9]
    box = crop_box(crop.shape, crop.affine, img.shape, affine)
    assert box == (slice(4, 14), slice(5, 25), slice(3, 9))
    values = np.random.default_rng(0).random(crop.shape + (2,)).astype(np.float32)
    whole = paste(values, crop.affine, img.shape, affine, fill=[1.0, 0.0])
    assert np.array_equal(whole[box], values)
    assert np.all(whole[0, 0, 0] == [1, 0]) and whole.shape == (30, 40, 20, 2)
    shifted = crop.affine.copy()
    shifted[:3, 3] += 0.5  # half a voxel: not a box of the grid
    with pytest.raises(ValueError, match=r"\(10, 20, 6\).*\(30, 40, 20\)"):
        crop_box(crop.shape, shifted, img.shape, affine)


def _save(data, path, dtype=np.float32):
    nib.save(nib.Nifti1Image(data.astype(dtype), np.diag([2.0, 2.0, 2.0, 1.0])), str(path))
    return str(path)


def test_fusion_convention_maps_and_volumes_interfaces(tmp_path):
    rng = np.random.default_rng(0)
    shape, box = (9, 8, 6), (slice(2, 8), slice(1, 6), slice(1, 5))
    reference = nib.Nifti1Image(np.zeros(shape, np.float32), np.diag([2.0, 2.0, 2.0, 1.0]))
    nib.save(reference, str(tmp_path / "reference.nii.gz"))
    files = []
    for plane in ["axial", "coronal"]:
        crop = reference.slicer[box]
        p = rng.random(crop.shape + (9,)).astype(np.float32)
        files.append(str(tmp_path / f"{plane}.nii"))
        nib.save(nib.Nifti1Image(p / p.sum(-1, keepdims=True), crop.affine), files[-1])
    fused = Fusion(in_probs=files, planes=["axial", "coronal"],
                   plane_weights={"axial": 4.0, "coronal": 1.0}).run(cwd=tmp_path).outputs
    probs = nib.load(fused.out_probs).get_fdata()
    planes = [nib.load(f).get_fdata() for f in files]
    assert np.allclose(probs, 0.8 * planes[0] + 0.2 * planes[1], atol=1e-6)
    assert np.allclose(nib.load(fused.out_probs).affine, reference.slicer[box].affine)

    template = np.zeros(shape)
    template[0:3] = 1  # reaches outside the probabilities' box
    tiv = _save(template, tmp_path / "tiv.nii.gz", np.uint8)
    maps = ConventionMaps(in_probs=fused.out_probs, networks="8label", convention="8label",
                          reference=str(tmp_path / "reference.nii.gz"),
                          template_tiv=tiv).run(cwd=tmp_path).outputs
    dseg = np.asarray(nib.load(maps.out_dseg).dataobj)
    assert dseg.shape == shape and np.allclose(nib.load(maps.out_dseg).affine, reference.affine)
    assert np.array_equal(dseg[box], probs.argmax(-1))
    outside = np.ones(shape, bool)
    outside[box] = False
    assert not dseg[outside].any()
    assert np.all(nib.load(maps.out_uncertainty).get_fdata()[outside] == 0)
    tiv_out = np.asarray(nib.load(maps.out_tiv).dataobj) > 0
    # the TIV is computed in the box (the head's, with a margin): nothing outside it
    assert not tiv_out[outside].any() and tiv_out[box].all()
    gm = nib.load(maps.out_probsegs[0]).get_fdata()
    assert np.allclose(gm[box], probs[..., 1] + probs[..., 2], atol=1e-5)  # cortex + b. ganglia
    assert not gm[outside].any()
    all_probs = nib.load(maps.out_probs).get_fdata()
    assert np.all(all_probs[outside][:, 0] == 1) and np.allclose(all_probs.sum(-1), 1, atol=1e-5)
    expected = tissue_probabilities(probs, "8label")
    three = np.stack([1 - sum(expected.values())] + list(expected.values()), -1).argmax(-1)
    assert np.array_equal(np.asarray(nib.load(maps.out_tissue_dseg).dataobj)[box], three)

    vol = TissueVolumes(probsegs=maps.out_probsegs, structures=maps.out_structures,
                        structure_names=maps.structure_names, tiv_mask=maps.out_tiv,
                        dseg=maps.out_dseg, uncertainty=maps.out_uncertainty,
                        convention="8label", subject="01", session="A").run(cwd=tmp_path).outputs
    row = pd.read_csv(vol.out_tsv, sep="\t").iloc[0]
    assert row["participant_id"] == "sub-01" and row["session_id"] == "ses-A"
    assert row["TIV_ml"] == pytest.approx(tiv_out.sum() * 8 / 1000)
    assert row["GM_ml"] == pytest.approx(gm.sum() * 8 / 1000, abs=1e-4)  # TSV: 4 decimals
    assert row["cerebellum_ml"] == pytest.approx(probs[..., 7].sum() * 8 / 1000, abs=1e-4)
    assert row["GM_fraction"] == pytest.approx(row["GM_ml"] / row["TIV_ml"], abs=1e-3)
    assert "GM_ml" in vol.metadata and vol.metadata["GM_ml"]["Units"] == "mL"
    # which voxels the TIV holds, right after it, with both definitions in the sidecar
    assert list(row.index[list(row.index).index("TIV_ml") + 1:][:1]) == ["TIV_source"]
    assert row["TIV_source"] == "networks"
    assert set(vol.metadata["TIV_source"]["Levels"]) == {"networks", "skull-stripping"}


def test_plane_inference_progress_bar_only_when_asked(tmp_path, capsys):
    from helpers import random_weights

    from mixnet_bids.inference.segment import write_plane_probabilities
    from mixnet_bids.inference.weights import weight_path

    weights = weight_path("3label", "axial", "v3", random_weights(tmp_path / "w"))
    data = np.random.default_rng(0).normal(size=(30, 26, 20, 3))
    zstack = _save(data, tmp_path / "z.nii.gz")
    head = _save(np.ones((30, 26, 20)), tmp_path / "head.nii.gz", np.uint8)
    write_plane_probabilities(zstack, head, "axial", weights, str(tmp_path / "a.nii"))
    assert "MixNet axial" not in capsys.readouterr().err
    write_plane_probabilities(zstack, head, "axial", weights, str(tmp_path / "b.nii"),
                              progress=True)
    assert "MixNet axial" in capsys.readouterr().err
    assert np.array_equal(nib.load(tmp_path / "a.nii").get_fdata(),
                          nib.load(tmp_path / "b.nii").get_fdata())


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_plane_probabilities_are_written_on_the_heads_box(tmp_path, precision):
    from helpers import random_weights

    from mixnet_bids.inference.segment import write_plane_probabilities
    from mixnet_bids.inference.weights import weight_path

    weights = weight_path("3label", "coronal", "v3", random_weights(tmp_path / "w"))
    shape = (40, 36, 30)
    affine = np.array([[-2.0, 0, 0, 40], [0, 2.0, 0, -30], [0, 0, 2.0, -20], [0, 0, 0, 1]])
    head = np.zeros(shape, np.uint8)
    head[12:25, 20:30, 5:12] = 1
    data = np.random.default_rng(0).normal(size=shape + (3,)).astype(np.float32)
    zstack = str(tmp_path / "z.nii.gz")
    nib.save(nib.Nifti1Image(data, affine), zstack)
    nib.save(nib.Nifti1Image(head, affine), str(tmp_path / "head.nii.gz"))
    out = write_plane_probabilities(zstack, str(tmp_path / "head.nii.gz"), "coronal",
                                    weights, str(tmp_path / "p.nii"), precision=precision)
    img = nib.load(out)
    box = crop_box(img.shape, img.affine, shape, affine)
    head_img = nib.load(str(tmp_path / "head.nii.gz"))
    assert box == head_crop(head_img, MARGIN) == head_box(head > 0, MARGIN)
    assert box == (slice(12 - MARGIN, 25 + MARGIN), slice(20 - MARGIN, 36),
                   slice(0, 12 + MARGIN))
    probs = np.asarray(img.dataobj)
    assert probs.shape == tuple(b.stop - b.start for b in box) + (4,)
    assert np.isfinite(probs).all() and np.allclose(probs.sum(-1), 1, atol=1e-5)
    # a second run on the same host in the same precision is byte-identical
    again = write_plane_probabilities(zstack, str(tmp_path / "head.nii.gz"), "coronal",
                                      weights, str(tmp_path / "q.nii"), precision=precision)
    assert np.array_equal(np.asarray(nib.load(again).dataobj), probs)
