"""Detection of skull-stripped inputs on real NIfTI files: nilearn's MNI152 template (brain
extracted), MRBrainS subject 1's whole-head T1w and a BrainWeb anatomy rendered with and
without its head."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mixnet_bids.interfaces.preproc import SkullStripped
from mixnet_bids.preprocessing import SKULL_STRIPPED_MAX_ML, looks_skull_stripped, signal_mask
from mixnet_bids.training.recipes import BRAINWEB_HELD_OUT

ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("MIXNET_SHARED", ROOT.parent / "shared"))
BRAINWEB = SHARED / "data" / "brainweb20"


def mni152() -> nib.Nifti1Image:
    """nilearn's MNI152 2009a T1 at 1 mm: 0 outside the brain and its CSF."""
    return nib.load(str(resources.files("nilearn.datasets") / "data"
                        / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"))


def detect(img: nib.Nifti1Image) -> bool:
    return looks_skull_stripped(np.asanyarray(img.dataobj),
                                tuple(nib.affines.voxel_sizes(img.affine)))


def run_interface(img: nib.Nifti1Image, tmp_path, metadata: dict) -> dict:
    path = tmp_path / "sub-01_T1w.nii.gz"
    nib.save(img, str(path))
    result = SkullStripped(in_file=str(path), metadata=metadata).run(cwd=str(tmp_path))
    return result.outputs.metadata


def test_the_mni152_brain_is_skull_stripped_and_the_sidecar_says_so(tmp_path):
    img = mni152()
    assert detect(img)
    metadata = run_interface(img, tmp_path, {"Description": "x", "Sources": ["bids:raw:a"]})
    assert metadata == {"Description": "x", "Sources": ["bids:raw:a"], "SkullStripped": True}


def test_a_brain_cut_by_the_field_of_view_is_still_skull_stripped():
    img = mni152()
    data = np.asanyarray(img.dataobj)
    lowest = int(np.flatnonzero(data.any(axis=(0, 1)))[0])
    cut = img.slicer[:, :, lowest + 15:]   # the field of view starts 15 mm into the brain
    assert signal_mask(np.asanyarray(cut.dataobj))[:, :, 0].any()
    assert detect(cut)


def test_a_head_sized_region_on_a_zero_background_is_not_skull_stripped():
    img = mni152()
    # the same zero background around a region 1.4^3 = 2.7 times larger: a head's volume
    large = nib.Nifti1Image(np.asanyarray(img.dataobj), np.diag([1.4, 1.4, 1.4, 1.0]))
    voxels = signal_mask(np.asanyarray(img.dataobj)).sum()
    assert voxels * 1.4 ** 3 / 1000 > SKULL_STRIPPED_MAX_ML
    assert not detect(large)


def test_noise_around_the_brain_is_not_skull_stripped():
    img = mni152()
    data = np.asanyarray(img.dataobj).astype(np.float32)
    noisy = np.abs(data + np.random.default_rng(0).normal(0, 3, data.shape)).astype(np.float32)
    assert not detect(nib.Nifti1Image(noisy, img.affine))


def test_the_whole_head_mrbrains_t1w_is_not_skull_stripped(mrbrains_dir, tmp_path):
    img = nib.load(mrbrains_dir / "1" / "orig" / "reg_T1.nii.gz")
    # resampled onto the FLAIR grid: zero outside the T1w's field of view, which cuts the head
    assert (np.asanyarray(img.dataobj) == 0).mean() > 0.3
    assert run_interface(img, tmp_path, {})["SkullStripped"] is False


def test_a_rendered_head_is_not_skull_stripped_even_with_its_air_set_to_zero():
    if not (BRAINWEB / f"{BRAINWEB_HELD_OUT[0]}_desc-crisp_dseg.nii.gz").is_file():
        pytest.skip(f"BrainWeb label maps not found at {BRAINWEB} (set MIXNET_SHARED or place "
                    "the team's shared folder beside the project)")
    from mixnet_bids.training.synth import load_label_volumes, render_volume

    (volume,) = load_label_volumes(BRAINWEB, [BRAINWEB_HELD_OUT[0]])
    head, labels, _ = render_volume(volume, np.random.default_rng(0), 2.0)
    stripped, _, _ = render_volume(volume, np.random.default_rng(0), 2.0, skull_stripped=True)
    zooms = (2.0, 2.0, 2.0)
    assert not looks_skull_stripped(head, zooms)          # Rician noise in the air
    assert not looks_skull_stripped(np.where(labels > 0, head, 0), zooms)
    assert looks_skull_stripped(stripped, zooms)
