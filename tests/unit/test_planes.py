"""Plane geometry: canonical reorientation by the affine, slicing, resampling."""

import nibabel as nib
import numpy as np
import pytest

from mixnet_bids.inference.planes import (
    PLANES,
    SLICE_AXIS,
    from_canonical,
    plane_shape,
    resize_axes,
    slices_to_grid,
    to_canonical,
    volume_to_slices,
)


def test_canonical_roundtrip_for_lps():
    data = np.random.default_rng(0).random((6, 7, 8, 3)).astype(np.float32)
    lps = np.diag([-1.0, -1.0, 3.0, 1.0])
    canonical, affine = to_canonical(data, lps)
    assert nib.aff2axcodes(affine) == ("R", "A", "S")
    assert canonical.shape == data.shape
    # voxel [0,0,0] of LPS is the right-most, anterior-most, inferior corner
    assert np.array_equal(canonical[5, 6, 0], data[0, 0, 0])
    assert np.array_equal(canonical[0, 6, 0], data[5, 0, 0])
    assert np.array_equal(from_canonical(canonical, lps), data)


def test_canonical_uses_the_affine_not_the_array_axes():
    data = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    # PIR: array axis 0 runs posterior, 1 inferior, 2 right
    pir = np.array([[0, 0, 1, 0], [-1, 0, 0, 0], [0, -1, 0, 0], [0, 0, 0, 1]], float)
    canonical, affine = to_canonical(data, pir)
    assert canonical.shape == (4, 2, 3)
    assert nib.aff2axcodes(affine) == ("R", "A", "S")
    world = lambda aff, ijk: (aff @ np.r_[ijk, 1])[:3]  # noqa: E731
    for ijk in [(0, 0, 0), (1, 2, 3), (1, 0, 2)]:
        value = data[ijk]
        where = np.argwhere(canonical == value)[0]
        assert np.allclose(world(pir, ijk), world(affine, where))


def test_resize_same_shape_is_identity_and_roundtrip_close():
    data = np.random.default_rng(1).random((20, 30, 5)).astype(np.float32)
    assert resize_axes(data, (20, 30, 5), order=1) is data
    up = resize_axes(data, (20, 60, 5), order=1)
    assert up.shape == (20, 60, 5)
    labels = (data > 0.5).astype(np.uint8)
    assert set(np.unique(resize_axes(labels, (40, 30, 5), order=0))) <= {0, 1}


@pytest.mark.parametrize("shape", [(23, 11, 5), (7, 40, 9), (1, 16, 3)])
def test_linear_resize_is_trilinear_interpolation_on_the_edge_aligned_grid(shape):
    """The separable passes give what one 3-D linear interpolation of the same grid mapping
    (clamped at the edges) gives."""
    from scipy import ndimage

    data = np.random.default_rng(3).random((12, 16, 6, 2)).astype(np.float32)
    scale = np.array(data.shape[:3], float) / np.array(shape, float)
    expected = np.stack([ndimage.affine_transform(
        data[..., c], np.diag(scale), offset=0.5 * scale - 0.5, output_shape=shape, order=1,
        mode="nearest") for c in range(2)], axis=-1)
    out = resize_axes(data, shape, order=1)
    assert out.dtype == np.float32 and out.shape == shape + (2,)
    assert np.abs(out - expected).max() < 1e-6


@pytest.mark.parametrize("plane", PLANES)
def test_slices_roundtrip_on_training_grid(plane):
    data = np.random.default_rng(2).random((24, 20, 6, 3)).astype(np.float32)
    zooms = (0.958333, 0.958333, 3.0)
    slices = volume_to_slices(data, zooms, plane)
    n_axis = {"sagittal": 0, "coronal": 1, "axial": 2}[plane]
    assert slices.shape[0] == data.shape[n_axis]
    back = slices_to_grid(slices, data.shape, plane)
    assert np.array_equal(np.moveaxis(back, 0, SLICE_AXIS[plane]), data)


@pytest.mark.parametrize("plane", PLANES)
def test_slices_go_back_to_the_volume_grid_batch_by_batch(plane):
    """A 1 mm volume's slices are resampled in-plane; any batch of them goes back to the
    volume's grid as those slices of the whole."""
    data = np.random.default_rng(4).random((20, 18, 16, 2)).astype(np.float32)
    slices = volume_to_slices(data, (1.0, 1.0, 1.0), plane)
    assert slices.shape[1:3] != tuple(np.delete(data.shape[:3], SLICE_AXIS[plane]))
    whole = slices_to_grid(slices, data.shape, plane)
    assert np.moveaxis(whole, 0, SLICE_AXIS[plane]).shape == data.shape
    assert np.array_equal(slices_to_grid(slices[3:5], data.shape, plane), whole[3:5])
    # a constant survives the two linear resamplings of the round trip
    constant = np.broadcast_to(np.float32([2.0, 5.0]), data.shape)
    back = slices_to_grid(volume_to_slices(constant, (1.0, 1.0, 1.0), plane), data.shape, plane)
    assert np.allclose(back, np.moveaxis(constant, SLICE_AXIS[plane], 0), atol=1e-6)


def test_isotropic_input_is_resampled_in_plane_only():
    shape, zooms = (180, 216, 180), (1.0, 1.0, 1.0)
    assert plane_shape(shape, zooms, "axial") == (188, 225, 180)
    assert plane_shape(shape, zooms, "coronal") == (188, 216, 60)
    assert plane_shape(shape, zooms, "sagittal") == (180, 225, 60)
