"""Preprocessing numerics and the real ANTs programs (N4, registration) on small images."""

import nibabel as nib
import numpy as np
import pytest
from helpers import ellipsoid_radius
from scipy import ndimage

from mixnet_bids.preprocessing import (
    head_box,
    head_mask,
    n4_interface,
    normalisation_mask,
    rigid_registration_interface,
    write_like,
    zscore,
)


def phantom(shape=(48, 56, 40), background=0.0):
    """An ellipsoid 'head' with a brighter inner 'brain' and a darker core."""
    r = ellipsoid_radius(shape)
    data = np.full(shape, background, np.float32)
    data[r < 1.0] = 300.0
    data[r < 0.75] = 600.0
    data[r < 0.35] = 450.0
    return ndimage.gaussian_filter(data, 1.0) + np.random.default_rng(0).normal(0, 5, shape)


@pytest.mark.parametrize("background", [0.0, 2000.0])
def test_head_mask_finds_the_head_on_dark_and_bright_backgrounds(background):
    data = phantom(background=background)
    head = ellipsoid_radius(data.shape) < 1.0
    mask = head_mask(data)
    # the blur (s.d. 1 voxel) spreads the edge: the mask holds the head but its outermost
    # two voxels and stays within 3 voxels of it
    assert (ndimage.binary_erosion(head, iterations=2) & ~mask).sum() == 0
    assert (mask & ~ndimage.binary_dilation(head, iterations=3)).sum() == 0


def test_head_mask_refuses_4d_and_handles_constant():
    with pytest.raises(ValueError, match="3D"):
        head_mask(np.zeros((4, 4, 4, 2)))
    assert not head_mask(np.ones((8, 8, 8))).any()


def stripped_phantom(shape=(48, 56, 40)):
    """A skull-stripped 'brain': bright tissue inside a rim of dark CSF (intensity about 15,
    the noise keeping it above 0), exactly 0 outside."""
    r = ellipsoid_radius(shape)
    noise = np.abs(np.random.default_rng(0).normal(0, 3, shape))
    data = np.select([r < 0.5, r < 0.8, r < 1.0], [450.0, 600.0, 15.0], 0.0) + noise
    data[r >= 1.0] = 0.0
    return data.astype(np.float32), r < 1.0


def test_normalisation_mask_of_a_stripped_image_is_its_whole_signal(tmp_path):
    """Otsu's head mask leaves out the dark CSF rim of a stripped brain; the mask N4 and the
    z-score use holds every voxel the stripping kept, as the training synthesis does. A whole
    head keeps its head mask."""
    from mixnet_bids.interfaces.preproc import HeadMask

    data, brain = stripped_phantom()
    rim = brain & ~head_mask(data)
    assert rim.sum() > 0.1 * brain.sum()
    mask = normalisation_mask(data, (1.0, 1.0, 1.0))
    assert np.array_equal(mask, brain)
    src = tmp_path / "sub-1_desc-brain_T1w.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(src))
    out = HeadMask(in_file=str(src)).run(cwd=tmp_path).outputs.out_file
    assert np.array_equal(np.asarray(nib.load(out).dataobj) > 0, brain)
    z = zscore(data, mask)
    csf = brain & (data < 100)
    assert z[csf].max() < -0.5  # the dark rim is the darkest tissue, not background (0)
    head = phantom()
    assert np.array_equal(normalisation_mask(head, (1.0, 1.0, 1.0)), head_mask(head))


def test_zscore_inside_mask_and_background_zero():
    data = phantom()
    mask = head_mask(data)
    z = zscore(data, mask)
    assert np.all(z[~mask] == 0)
    assert abs(float(z[mask].mean())) < 0.05
    assert 0.9 < float(z[mask].std()) < 1.1
    with pytest.raises(ValueError, match="empty"):
        zscore(data, np.zeros_like(mask))
    with pytest.raises(ValueError, match="constant"):
        zscore(np.ones_like(data), mask)


def _save(data, path, zooms=(1.5, 1.5, 1.5)):
    affine = np.diag(list(zooms) + [1.0])
    img = nib.Nifti1Image(data.astype(np.float32), affine)
    nib.save(img, str(path))
    return img


def test_n4_removes_a_synthetic_bias_field(tmp_path):
    clean = np.clip(phantom(), 1, None)
    grid = np.indices(clean.shape, dtype=np.float32)
    bias = np.exp(0.35 * (grid[0] / clean.shape[0] - 0.5) + 0.25 * (grid[1] / clean.shape[1]))
    like = _save(clean * bias, tmp_path / "biased.nii.gz")
    mask = head_mask(clean)
    write_like(mask, like, tmp_path / "mask.nii.gz", np.uint8)
    result = n4_interface(input_image=str(tmp_path / "biased.nii.gz"),
                          mask_image=str(tmp_path / "mask.nii.gz"),
                          output_image=str(tmp_path / "corrected.nii.gz")).run(cwd=tmp_path)
    corrected = nib.load(result.outputs.output_image).get_fdata()
    brain = (clean > 550) & mask  # the uniform 600 compartment

    def cv(x):
        return float(x[brain].std() / x[brain].mean())
    assert cv(corrected) < 0.6 * cv(clean * bias), (cv(corrected), cv(clean * bias))


def test_rigid_registration_recovers_a_shift(tmp_path):
    """As the workflow runs it: the metric sampled inside the fixed image's head mask."""
    fixed = phantom()
    moving = ndimage.shift(fixed, (3.0, -2.0, 0.0), order=1)
    like = _save(fixed, tmp_path / "fixed.nii.gz")
    _save(moving, tmp_path / "moving.nii.gz")
    write_like(head_mask(fixed), like, tmp_path / "mask.nii.gz", np.uint8)
    result = rigid_registration_interface(
        fixed_image=str(tmp_path / "fixed.nii.gz"), moving_image=str(tmp_path / "moving.nii.gz"),
        fixed_image_masks=str(tmp_path / "mask.nii.gz"),
        output_transform_prefix="t_").run(cwd=tmp_path)
    assert "--masks [ " in result.runtime.cmdline, result.runtime.cmdline
    warped = nib.load(result.outputs.warped_image).get_fdata()
    inner = (slice(8, -8),) * 3
    before = np.abs(moving - fixed)[inner].mean()
    after = np.abs(warped - fixed)[inner].mean()
    assert after < 0.35 * before, (before, after)


def test_n4_on_the_head_box_is_pasted_back_on_the_whole_grid(tmp_path):
    """Mask -> head box -> real N4 -> paste: the whole grid and affine come back, the voxels
    outside the box are the input's, and the head is corrected as N4 on the whole grid
    corrects it."""
    from mixnet_bids.interfaces.preproc import N4_MARGIN, HeadCrop, HeadMask, PasteCrop

    head = np.clip(phantom(), 1, None)
    grid = np.indices(head.shape, dtype=np.float32)
    head = head * np.exp(0.35 * (grid[0] / head.shape[0] - 0.5)
                         + 0.25 * (grid[1] / head.shape[1]))
    data = np.random.default_rng(1).normal(20, 5, (80, 88, 64)).astype(np.float32)
    data[20:68, 6:62, 16:56] = head  # off-centre, touching no edge
    affine = np.array([[-1.2, 0, 0, 50], [0, 1.2, 0, -60], [0, 0, 1.5, -30], [0, 0, 0, 1]])
    src = tmp_path / "sub-1_T1w.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), str(src))

    mask = HeadMask(in_file=str(src)).run(cwd=tmp_path).outputs.out_file
    crop = HeadCrop(in_file=str(src), mask=mask).run(cwd=tmp_path).outputs
    assert nib.load(crop.out_file).shape < data.shape
    assert nib.load(crop.out_mask).shape == nib.load(crop.out_file).shape
    n4 = n4_interface(input_image=crop.out_file, mask_image=crop.out_mask).run(cwd=tmp_path)
    out = PasteCrop(in_file=n4.outputs.output_image, full_file=str(src)).run(cwd=tmp_path)
    img = nib.load(out.outputs.out_file)
    assert img.shape == data.shape and np.allclose(img.affine, affine)
    corrected = img.get_fdata(dtype=np.float32)

    brain = nib.load(mask).get_fdata() > 0
    inside = np.zeros(data.shape, bool)
    inside[head_box(brain, N4_MARGIN)] = True
    assert 0 < inside.sum() < 0.8 * inside.size
    assert np.array_equal(corrected[~inside], data[~inside])
    whole = n4_interface(input_image=str(src), mask_image=mask,
                         output_image=str(tmp_path / "whole.nii.gz")).run(cwd=tmp_path)
    reference = nib.load(whole.outputs.output_image).get_fdata(dtype=np.float32)
    assert np.corrcoef(corrected[brain], reference[brain])[0, 1] > 0.99
