"""Augmentation keeps labels aligned with images; robustness transforms behave."""

import numpy as np
import pytest

from mixnet_bids.training.augment import (
    AugmentConfig,
    coarser_resolution,
    drop_modalities,
    intensity,
    skull_strip,
    spatial,
)

ALWAYS = AugmentConfig(p_elastic=1, p_scale=1, p_rotate=1, p_translate=1, p_flip=1,
                       p_drop_modality=1, p_intensity=1, p_skull_strip=1, p_resolution=1)


def blobs(h=96, w=80):
    labels = np.zeros((h, w), np.uint8)
    yy, xx = np.mgrid[:h, :w]
    labels[(yy - 40) ** 2 + (xx - 35) ** 2 < 25 ** 2] = 3
    labels[(yy - 40) ** 2 + (xx - 35) ** 2 < 12 ** 2] = 1
    labels[60:80, 50:70] = 5
    image = np.stack([labels.astype(np.float32)] * 3)
    return image, labels


@pytest.mark.parametrize("plane", ["axial", "coronal", "sagittal"])
@pytest.mark.parametrize("seed", range(5))
def test_spatial_keeps_labels_aligned(plane, seed):
    image, labels = blobs()
    out, out_labels = spatial(image, labels, np.random.default_rng(seed), plane, ALWAYS)
    assert out.shape == image.shape and out_labels.shape == labels.shape
    assert not np.array_equal(out_labels, labels)  # something happened
    agree = np.mean(np.rint(out[0]) == out_labels)
    assert agree > 0.95, agree


def test_sagittal_and_coronal_get_no_rotation_or_scaling():
    image, labels = blobs()
    cfg = AugmentConfig(p_elastic=1, p_scale=1, p_rotate=1, p_translate=0, p_flip=0)
    out, out_labels = spatial(image, labels, np.random.default_rng(0), "coronal", cfg)
    assert np.array_equal(out_labels, labels) and np.array_equal(out, image)


def test_flips_mirror_left_and_right_only():
    image, labels = blobs()
    cfg = AugmentConfig(p_elastic=0, p_scale=0, p_rotate=0, p_translate=0, p_flip=1)
    for plane in ("axial", "coronal"):  # rows are R-L: mirrored
        out, out_labels = spatial(image, labels, np.random.default_rng(0), plane, cfg)
        assert np.array_equal(out_labels, labels[::-1]) and np.allclose(out, image[:, ::-1])
    # sagittal rows are A-P: a front-back mirror is no plausible anatomy
    out, out_labels = spatial(image, labels, np.random.default_rng(0), "sagittal", cfg)
    assert np.array_equal(out_labels, labels) and np.array_equal(out, image)


def test_drop_modalities_keeps_at_least_one_present_channel():
    image = np.ones((3, 8, 8), np.float32)
    for seed in range(20):
        out = drop_modalities(image, np.random.default_rng(seed), ALWAYS)
        kept = [c for c in range(3) if out[c].any()]
        assert 1 <= len(kept) < 3
        assert all(np.array_equal(out[c], image[c]) for c in kept)
    single = np.zeros_like(image)
    single[2] = 1
    assert np.array_equal(drop_modalities(single, np.random.default_rng(0), ALWAYS), single)


def t1w_alone_rate(cfg, present=(0, 1, 2), n=4000):
    image = np.zeros((3, 4, 4), np.float32)
    image[list(present)] = 1
    rng = np.random.default_rng(0)
    outs = [drop_modalities(image, rng, cfg) for _ in range(n)]
    return np.mean([o[0].any() and not o[1:].any() for o in outs])


def test_p_t1w_only_raises_the_t1w_alone_rate():
    # general dropout alone: p 0.5 x size 1 of {1, 2} x T1w 1 of 3 = 1/12
    assert t1w_alone_rate(AugmentConfig()) == pytest.approx(1 / 12, abs=0.015)
    # plus 0.25 first: 0.25 + 0.75 / 12 = 0.3125
    assert t1w_alone_rate(AugmentConfig(p_t1w_only=0.25)) == pytest.approx(0.3125, abs=0.025)
    # no T1w, nothing to keep alone: IR + FLAIR follow the general dropout only
    assert t1w_alone_rate(AugmentConfig(p_t1w_only=1.0), present=(1, 2)) == 0


def test_intensity_keeps_background_and_changes_foreground():
    image, _ = blobs()
    out = intensity(image, np.random.default_rng(1), ALWAYS)
    assert np.all(out[image == 0] == 0)
    assert not np.allclose(out[image != 0], image[image != 0])


def test_skull_strip_zeroes_outside_dilated_brain():
    image = np.ones((3, 40, 40), np.float32)
    labels = np.zeros((40, 40), np.uint8)
    labels[10:20, 10:20] = 1
    out = skull_strip(image, labels, np.random.default_rng(0), ALWAYS)
    assert out[:, 15, 15].all() and not out[:, 35, 35].any()


def test_coarser_resolution_keeps_shape_and_blurs():
    image, _ = blobs()
    out = coarser_resolution(image, np.random.default_rng(0), ALWAYS)
    assert out.shape == image.shape
    assert not np.array_equal(out, image)
