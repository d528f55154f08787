"""Synthetic training slices from label maps: shapes, alignment, masks, z-scores, determinism;
fixed-contrast test volumes; loading label maps."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from helpers import head_phantom
from scipy import ndimage

from mixnet_bids.inference.planes import PLANES, TRAINING_SPACING
from mixnet_bids.preprocessing import ZSCORE_CLIP
from mixnet_bids.training.synth import (
    BRAIN_LUT,
    LabelVolume,
    SynthConfig,
    SynthSampler,
    box_weights,
    fill_holes_2d,
    load_label_volumes,
    majority_labels,
    render_volume,
    volume_moments,
    widen_csf,
)

ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("MIXNET_SHARED", ROOT.parent / "shared"))
BRAINWEB = SHARED / "data" / "brainweb20"
CROPS = {"axial": (128, 128), "coronal": (144, 48), "sagittal": (144, 48)}
#: no intensity randomness: fixed plausible contrasts, every channel, no texture/bias/noise
CLEAN = SynthConfig(p_plausible=1.0, prior_jitter=0.0, tissue_sd=(0.0, 0.0), p_t1w_only=0.0,
                    p_all_channels=1.0, bias_max=0.0, blur_max=0.0, noise_sd=(0.0, 0.0),
                    p_skull_stripped=0.0, p_flip_lr=0.0)


@pytest.fixture(scope="module")
def phantom() -> LabelVolume:
    return head_phantom()


def half_space(axis: int, boundary: int = 57, size: int = 120) -> LabelVolume:
    """GM below voxel ``boundary`` along ``axis``, WM from it on (boundary at 28.5 mm)."""
    labels = np.full((size,) * 3, 2, np.uint8)
    index = [slice(None)] * 3
    index[axis] = slice(boundary, None)
    labels[tuple(index)] = 3
    return LabelVolume("sub-half", labels, (0.5, 0.5, 0.5))


def present(image: np.ndarray) -> list[int]:
    return [c for c in range(image.shape[0]) if np.any(image[c])]


@pytest.mark.parametrize("plane", PLANES)
@pytest.mark.parametrize("small_crop", [False, True])
def test_sample_shapes_values_and_head_mask(phantom, plane, small_crop):
    crop = (40, 24) if small_crop else CROPS[plane]   # smaller / larger than the phantom
    sampler = SynthSampler([phantom], plane, crop, SynthConfig(p_skull_stripped=0.0), seed=1)
    for _ in range(20):
        image, labels = sampler.sample()
        assert image.shape == (3, *crop) and image.dtype == np.float32
        assert labels.shape == crop and labels.dtype == np.uint8
        assert np.all(np.isfinite(image)) and np.abs(image).max() <= ZSCORE_CLIP
        assert set(np.unique(labels)) <= {0, 1, 2, 3, 4, 6, 7, 8}
        assert labels.any()   # slices without head are never drawn
        # the phantom has no air inside: the head mask is exactly labels > 0
        assert not image[:, labels == 0].any()
        for c in present(image):
            assert np.mean(image[c][labels > 0] != 0) > 0.99


def test_channels_present_absent_and_their_frequencies(phantom):
    sampler = SynthSampler([phantom], "axial", (64, 64), SynthConfig(p_skull_stripped=0.0),
                           seed=2)
    subsets = [tuple(present(sampler.sample()[0])) for _ in range(400)]
    assert all(subsets)   # never an empty input
    assert 0.3 < np.mean([s == (0,) for s in subsets]) < 0.5
    assert 0.2 < np.mean([s == (0, 1, 2) for s in subsets]) < 0.4
    assert {(1,), (2,), (0, 1), (0, 2), (1, 2)} <= set(subsets)
    t1_only = SynthSampler([phantom], "axial", (64, 64), SynthConfig(p_t1w_only=1.0), seed=2)
    for _ in range(10):
        image, _ = t1_only.sample()
        assert present(image) == [0] and not image[1:].any()


@pytest.mark.parametrize("plane", PLANES)
@pytest.mark.parametrize("dim", [0, 1])
@pytest.mark.parametrize("coarse", [False, True])
def test_image_edge_and_label_edge_at_the_same_place(plane, dim, coarse):
    """A GM|WM half-space: the edge found from the image's partial-volume values equals the
    true boundary to 0.01 pixel, and the labels switch at the pixel whose centre passes it.

    Box widths are whole pixels (0.958 mm, 3 mm along S-I, 2.875 mm coarse) so that the
    partial-volume sum along a line is exactly the length past the boundary.
    """
    axes = {"sagittal": (0, 1, 2), "coronal": (1, 0, 2), "axial": (2, 0, 1)}[plane]
    axis = axes[1 + dim]
    cfg = replace(CLEAN, thin=(0.958333, 0.958333), thick=(3.0, 3.0), p_thick_axial=1.0,
                  p_thick_other=0.0, p_coarse_in_plane=1.0 if coarse else 0.0,
                  coarse=(3 * 0.958333, 3 * 0.958333))
    crop = CROPS[plane]
    sampler = SynthSampler([half_space(axis)], plane, crop, cfg, seed=3)
    inside = []     # pixels at least 5 mm inside the 60 mm phantom, per image dimension
    for n, axis_ in zip(crop, axes[1:]):
        spacing = TRAINING_SPACING[axis_]
        start = (60.0 - n * spacing) / 2    # the crop is centred on the smaller phantom
        centres = start + (np.arange(n) + 0.5) * spacing
        inside.append(np.flatnonzero((centres > 5.0) & (centres < 55.0)))
    spacing = TRAINING_SPACING[axis]
    start = (60.0 - crop[dim] * spacing) / 2
    boundary = (28.5 - start) / spacing - 0.5       # in pixel-centre coordinates
    p0, p1 = inside[dim][0], inside[dim][-1] + 1
    lines = inside[1 - dim]
    for _ in range(3):
        image, labels = sampler.sample()
        image, labels = np.moveaxis(image, dim + 1, 1), np.moveaxis(labels, dim, 0)
        first_wm = np.argmax(labels[p0:p1, lines] == 3, axis=0) + p0
        assert np.all(first_wm == int(np.ceil(boundary)))
        for c in range(3):
            for line in image[c][p0:p1, lines].T:
                gm, wm = line[0], line[-1]
                assert abs(wm - gm) > 0.5
                wm_length = np.sum((line - gm) / (wm - gm))
                assert abs((p1 - 0.5 - wm_length) - boundary) < 0.01


def test_majority_labels_hand_computed():
    """Five pixels, each the average of 2 x 2 x 2 sub-voxels (one eighth each)."""
    eighths = [[1, 1, 1, 1, 1, 2, 2, 2],    # CSF 5/8 -> CSF
               [2, 2, 2, 3, 3, 7, 7, 7],    # GM 3/8 ties the rest 3/8 -> the rest
               [2, 2, 3, 3, 4, 4, 4, 4],    # the rest (fat) 4/8 -> the rest
               [3, 3, 3, 2, 2, 1, 1, 0],    # WM 3/8 against the rest (air) 1/8 -> WM
               [7, 7, 7, 7, 7, 2, 2, 3]]    # the rest (skull) 5/8 -> the rest
    block = np.zeros((2, 2, 10), np.uint8)
    for p, values in enumerate(eighths):
        block[:, :, 2 * p:2 * p + 2] = np.reshape(values, (2, 2, 2))
    weights = [np.array([0.5, 0.5], np.float32), box_weights(np.array([0.5]), 1.0, 0, 2, 0.5),
               box_weights(np.arange(5) + 0.5, 1.0, 0, 10, 0.5)]
    centre = np.array([[2, 2, 3, 0, 7]], np.uint8)
    # where the rest wins, a brain label at the centre becomes 0; other labels stay
    assert majority_labels(block, weights, centre).tolist() == [[1, 0, 0, 3, 7]]


def test_widen_csf_turns_the_gm_near_csf_into_csf_in_each_slice():
    block = np.array([[[1, 2, 2, 2, 2, 3]], [[2, 2, 2, 2, 3, 3]]], np.uint8)
    # 0.5 mm pixels: the GM at 0.5 and 1.0 mm from the CSF becomes CSF; WM never does;
    # the slice without CSF stays as it was
    assert widen_csf(block, (0.5, 0.5), 1.0).tolist() == [
        [[1, 1, 1, 2, 2, 3]], [[2, 2, 2, 2, 3, 3]]]
    assert np.array_equal(widen_csf(block, (0.5, 0.5), 0.4), block)


def test_wider_csf_moves_labels_and_image_together(phantom):
    """The same draws with and without the widening: the labels differ only where GM became
    CSF, and there every channel is darker, as CSF is in the plausible contrasts."""
    cfg = replace(CLEAN, p_wide_csf=1.0, wide_csf_mm=(0.0, 0.0))
    plain = SynthSampler([phantom], "axial", CROPS["axial"], cfg, seed=5)
    wide = SynthSampler([phantom], "axial", CROPS["axial"],
                        replace(cfg, wide_csf_mm=(1.5, 1.5)), seed=5)
    changed = 0
    for _ in range(5):
        (image, labels), (image_w, labels_w) = plain.sample(), wide.sample()
        moved = labels != labels_w
        assert np.all(labels[moved] == 2) and np.all(labels_w[moved] == 1)
        assert np.all(image_w[:, moved] < image[:, moved])
        changed += moved.sum()
    assert changed > 0


def test_majority_labels_follow_the_slab_not_its_centre_slice():
    """GM with a 0.5 mm CSF sheet every 3 mm along S-I, in 3 mm axial slices: every slab
    holds one sixth CSF. The centre labels are CSF where the centre slice is a sheet; the
    majority labels never; the images are the same."""
    labels = np.full((120, 120, 120), 2, np.uint8)
    labels[:, :, ::6] = 1
    sheets = LabelVolume("sub-sheets", labels, (0.5, 0.5, 0.5))
    cfg = replace(CLEAN, thick=(3.0, 3.0), p_thick_axial=1.0)
    centre = SynthSampler([sheets], "axial", (64, 64), cfg, seed=8)
    majority = SynthSampler([sheets], "axial", (64, 64), replace(cfg, target="majority"),
                            seed=8)
    csf_at_centre = gm = 0
    for _ in range(30):
        (image, at_centre), (image_m, labels_m) = centre.sample(), majority.sample()
        assert np.array_equal(image, image_m)
        assert set(np.unique(labels_m)) <= {0, 2}
        assert np.all(at_centre[labels_m == 2] > 0)
        csf_at_centre += np.any(at_centre == 1)
        gm += np.any(labels_m == 2)
    assert 0 < csf_at_centre < 30 and gm > 25


def test_flips_keep_image_and_labels_together(phantom):
    cfg = SynthConfig(p_flip_lr=0.0)
    flipped = SynthConfig(p_flip_lr=1.0)
    for plane in ("axial", "coronal"):        # R-L is the row axis of these planes
        a = SynthSampler([phantom], plane, CROPS[plane], cfg, seed=4)
        b = SynthSampler([phantom], plane, CROPS[plane], flipped, seed=4)
        changed = 0
        for _ in range(5):
            (image, labels), (image_f, labels_f) = a.sample(), b.sample()
            assert np.array_equal(labels_f, labels[::-1])
            assert np.array_equal(image_f, image[:, ::-1])
            changed += not np.array_equal(labels_f, labels)
        assert changed   # the phantom is not symmetric where it has the vessel


def test_plausible_contrasts_order_the_tissues(phantom):
    sampler = SynthSampler([phantom], "axial", (128, 128), CLEAN, seed=5)
    values = {c: {k: [] for k in (1, 2, 3)} for c in range(3)}
    for _ in range(10):
        image, labels = sampler.sample()
        for c in range(3):
            for k in (1, 2, 3):
                values[c][k].extend(image[c][labels == k])
    mean = {c: {k: np.mean(v) for k, v in values[c].items()} for c in range(3)}
    assert mean[0][1] < mean[0][2] < mean[0][3]     # T1w: CSF < GM < WM
    assert mean[1][1] < mean[1][2] < mean[1][3]     # IR: CSF darkest, GM < WM
    assert mean[2][1] < mean[2][3] < mean[2][2]     # FLAIR: CSF suppressed, WM < GM


def test_skull_stripped_is_exactly_zero_outside_the_brain(phantom):
    exact = SynthConfig(p_skull_stripped=1.0, max_brain_dilation=0)
    sampler = SynthSampler([phantom], "coronal", (144, 48), exact, seed=6)
    brain_seen = 0
    for _ in range(30):
        image, labels = sampler.sample()
        brain = fill_holes_2d(BRAIN_LUT[labels])
        assert not image[:, ~brain].any()
        assert {4, 6, 7} & set(np.unique(labels))    # the labels keep the skull and skin
        for c in present(image):
            assert np.mean(image[c][brain] != 0) > 0.99
        brain_seen += brain.any()
    assert brain_seen > 20
    dilated = SynthConfig(p_skull_stripped=1.0, max_brain_dilation=2)
    sampler = SynthSampler([phantom], "axial", (128, 128), dilated, seed=6)
    rims = set()
    for _ in range(30):
        image, labels = sampler.sample()
        brain = fill_holes_2d(BRAIN_LUT[labels])
        assert not image[:, ~ndimage.binary_dilation(brain, iterations=2)].any()
        rims.add(int(np.count_nonzero(np.any(image != 0, axis=0) & ~brain) > 0))
    assert rims == {0, 1}   # dilated sometimes, not always


def test_brain_slices_are_favoured(phantom):
    sampler = SynthSampler([phantom], "axial", (64, 64), seed=7)
    with_brain = [BRAIN_LUT[sampler.sample()[1]].any() for _ in range(200)]
    assert np.mean(with_brain) > 0.85   # about 60 % of the phantom's head slices have brain


def test_volume_moments_match_a_mixture():
    rng = np.random.default_rng(8)
    fraction = np.zeros(256)
    fraction[[1, 2, 3]] = [0.2, 0.5, 0.3]
    means = np.zeros(256, np.float32)
    sds = np.zeros(256, np.float32)
    means[[1, 2, 3]] = [0.1, 0.5, 0.8]
    sds[[1, 2, 3]] = [0.02, 0.05, 0.03]
    voxels = np.concatenate([rng.normal(means[k], sds[k], int(2e5 * fraction[k]))
                             for k in (1, 2, 3)])
    voxels += rng.normal(0.0, 0.04, voxels.size)
    mean, sd = volume_moments(means, sds, fraction, noise_sd=0.04)
    assert mean == pytest.approx(voxels.mean(), abs=2e-3)
    assert sd == pytest.approx(voxels.std(), rel=1e-2)


def test_same_seed_same_samples_and_checkpointed_state_resumes(phantom):
    a = SynthSampler([phantom], "sagittal", (144, 48), seed=9)
    b = SynthSampler([phantom], "sagittal", (144, 48), seed=9)
    c = SynthSampler([phantom], "sagittal", (144, 48), seed=10)
    first = [a.sample() for _ in range(5)]
    for (image, labels), (image_b, labels_b) in zip(first, [b.sample() for _ in range(5)]):
        assert np.array_equal(image, image_b) and np.array_equal(labels, labels_b)
    assert not all(np.array_equal(x[0], y[0]) for x, y in zip(first, [c.sample()
                                                                       for _ in range(5)]))
    state = a.rng.bit_generator.state
    expected = [a.sample() for _ in range(3)]
    resumed = SynthSampler([phantom], "sagittal", (144, 48), seed=0)
    resumed.rng.bit_generator.state = state
    for (image, labels), (image_r, labels_r) in zip(expected, [resumed.sample()
                                                                for _ in range(3)]):
        assert np.array_equal(image, image_r) and np.array_equal(labels, labels_r)


def test_sampler_refuses_bad_arguments(phantom):
    with pytest.raises(ValueError, match="plane"):
        SynthSampler([phantom], "oblique", (64, 64))
    with pytest.raises(ValueError, match="no label volumes"):
        SynthSampler([], "axial", (64, 64))
    empty = LabelVolume("sub-x", np.full((10, 10, 10), 7, np.uint8), (0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="brain"):
        SynthSampler([empty], "axial", (64, 64))


def test_render_volume_grid_labels_contrast_and_noise(phantom):
    affine = np.diag([0.5, 0.5, 0.5, 1.0])
    affine[:3, 3] = (-30.0, -40.0, -20.0)
    volume = LabelVolume("sub-ph", phantom.labels, phantom.zooms, affine)
    image, labels, out_affine = render_volume(volume, np.random.default_rng(11), spacing=1.0)
    assert image.shape == labels.shape == tuple(n // 2 for n in phantom.labels.shape)
    assert image.dtype == np.float32 and labels.dtype == np.uint8
    assert np.allclose(np.diag(out_affine)[:3], 1.0)
    # output voxel 0 is the mean of input voxels 0 and 1 on each axis
    assert np.allclose(out_affine[:3, 3], affine[:3, 3] + 0.25)
    # majority labels: where a 2x2x2 block is uniform, its label
    blocks = phantom.labels.reshape(labels.shape[0], 2, labels.shape[1], 2, labels.shape[2], 2)
    uniform = blocks.min(axis=(1, 3, 5)) == blocks.max(axis=(1, 3, 5))
    assert np.array_equal(labels[uniform], blocks[:, 0, :, 0, :, 0][uniform])
    mean = {k: image[labels == k].mean() for k in (0, 1, 2, 3, 4, 7)}
    assert mean[1] < mean[2] < mean[3] < mean[4]   # MPRAGE: CSF < GM < WM < fat
    assert mean[7] < mean[1] and mean[0] < mean[7]
    assert np.all(image[labels == 0] > 0)          # Rician noise floor in the air
    again = render_volume(volume, np.random.default_rng(11), spacing=1.0)[0]
    assert np.array_equal(image, again)


def test_render_volume_skull_stripped_and_other_spacings(phantom):
    image, labels, affine = render_volume(phantom, np.random.default_rng(12), spacing=1.5,
                                          contrast="flair", skull_stripped=True)
    assert image.shape == tuple(n // 3 for n in phantom.labels.shape)
    assert np.allclose(affine[:3, :3], 1.5 * np.eye(3)) and np.allclose(affine[:3, 3], 0.5)
    brain = ndimage.binary_fill_holes(BRAIN_LUT[labels])
    assert np.all(image[~brain] == 0) and np.all(image[brain] > 0)
    assert image[labels == 2].mean() > image[labels == 3].mean()   # FLAIR: GM > WM
    # thick slices: one spacing per axis, partial volume over each slice's thickness
    thick, thick_labels, thick_affine = render_volume(phantom, np.random.default_rng(12),
                                                      spacing=(1.0, 1.5, 1.0))
    assert thick.shape == thick_labels.shape == (phantom.labels.shape[0] // 2,
                                                 phantom.labels.shape[1] // 3,
                                                 phantom.labels.shape[2] // 2)
    assert np.allclose(np.diag(thick_affine)[:3], (1.0, 1.5, 1.0))
    assert np.allclose(thick_affine[:3, 3], (0.25, 0.5, 0.25))
    assert np.isfinite(thick).all() and thick[thick_labels == 3].mean() > thick[
        thick_labels == 2].mean()   # MPRAGE: WM > GM
    with pytest.raises(ValueError, match="multiple"):
        render_volume(phantom, np.random.default_rng(0), spacing=0.958333)
    with pytest.raises(ValueError, match="0.75 mm is not a whole multiple"):
        render_volume(phantom, np.random.default_rng(0), spacing=(1.0, 0.75, 1.0))
    with pytest.raises(ValueError, match="contrast"):
        render_volume(phantom, np.random.default_rng(0), contrast="dwi")


def test_load_label_volumes_reorients_and_crops(tmp_path, phantom):
    labels = np.zeros((40, 50, 40), np.uint8)
    labels[10:30, 12:40, 10:25] = 2
    labels[11, 13, 11] = 9          # a marker voxel
    lps = np.diag([-0.5, -0.5, 0.5, 1.0])
    lps[:3, 3] = (10.0, 20.0, -5.0)
    nib.save(nib.Nifti1Image(labels, lps), str(tmp_path / "sub-01_desc-crisp_dseg.nii.gz"))
    nib.save(nib.Nifti1Image(labels, lps), str(tmp_path / "sub-02_desc-crisp_dseg.nii.gz"))
    volumes = load_label_volumes(tmp_path, ["sub-01"])
    assert [v.name for v in volumes] == ["sub-01"]
    volume = volumes[0]
    assert nib.aff2axcodes(volume.affine) == ("R", "A", "S")
    assert volume.zooms == (0.5, 0.5, 0.5)
    assert volume.labels.shape == (20 + 16, 28 + 16, 15 + 16)   # + 4 mm margins
    marker = np.argwhere(volume.labels == 9)[0]
    assert np.allclose(volume.affine @ np.r_[marker, 1], lps @ np.r_[11, 13, 11, 1])
    assert np.count_nonzero(volume.labels) == np.count_nonzero(labels)
    assert [v.name for v in load_label_volumes(tmp_path)] == ["sub-01", "sub-02"]
    assert [v.name for v in load_label_volumes(tmp_path, ["02"])] == ["sub-02"]
    with pytest.raises(FileNotFoundError, match="sub-03"):
        load_label_volumes(tmp_path, ["03"])


@pytest.mark.shared_data
def test_brainweb_subject_synthesis():
    path = BRAINWEB / "sub-05_desc-crisp_dseg.nii.gz"
    if not path.is_file():
        pytest.skip(f"BrainWeb label maps not found at {BRAINWEB} (set MIXNET_SHARED or "
                    "place the team's shared folder beside the project)")
    (volume,) = load_label_volumes(BRAINWEB, ["05"])
    assert volume.labels.dtype == np.uint8 and volume.labels.max() == 11
    assert nib.aff2axcodes(volume.affine) == ("R", "A", "S")
    for plane in PLANES:
        sampler = SynthSampler([volume], plane, CROPS[plane], seed=13)
        with_brain = 0
        for _ in range(30):
            image, labels = sampler.sample()
            assert image.shape == (3, *CROPS[plane]) and labels.shape == CROPS[plane]
            assert np.all(np.isfinite(image)) and np.abs(image).max() <= ZSCORE_CLIP
            assert labels.max() <= 11
            assert present(image) or not BRAIN_LUT[labels].any()   # stripped, no brain
            with_brain += np.count_nonzero(BRAIN_LUT[labels]) > 50
        assert with_brain >= 24
    clean = SynthSampler([volume], "axial", (128, 128), CLEAN, seed=14)
    values = {k: [] for k in (1, 2, 3)}
    for _ in range(10):
        image, labels = clean.sample()
        for k in values:
            values[k].extend(image[0][labels == k])
    assert np.mean(values[1]) < np.mean(values[2]) < np.mean(values[3])
