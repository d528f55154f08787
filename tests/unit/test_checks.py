"""Input checks (mixnet_bids.checks), each case with a real file: one line naming the file
and the fix, exit code 2 from the CLI, and nothing written."""

from __future__ import annotations

import gzip
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
from helpers import bids_skeleton, random_weights, tiny_image

from mixnet_bids.checks import (
    MAX_VOXELS,
    Run,
    check_run,
    image_problems,
    overlap_problems,
    writable_folder_problem,
)
from mixnet_bids.cli.run import main


def save(path, data, affine=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.diag([4.0, 4.0, 4.0, 1.0]) if affine is None
                             else affine), str(path))
    return path


def only_problem(path, modality="T1w"):
    problems, _ = image_problems(path, modality)
    assert len(problems) == 1
    assert problems[0].startswith(f"{path}: ")
    assert "\n" not in problems[0]
    return problems[0]


def test_a_normal_image_passes(tmp_path):
    assert image_problems(tiny_image(tmp_path / "ok.nii.gz"), "T1w") == ([], [])


def test_corrupt_header_and_truncated_data(tmp_path):
    corrupt = tiny_image(tmp_path / "corrupt.nii.gz")
    corrupt.write_bytes(b"not a nifti file at all" * 10)
    assert "cannot be read as NIfTI" in only_problem(corrupt)
    truncated = tiny_image(tmp_path / "truncated.nii.gz")
    raw = gzip.decompress(truncated.read_bytes())
    truncated.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    assert "truncated or corrupt" in only_problem(truncated)


def test_4d_images(tmp_path):
    series = save(tmp_path / "4d.nii.gz", np.ones((20, 24, 16, 3), np.float32))
    assert "must be a 3D image" in only_problem(series)
    singleton = save(tmp_path / "4d1.nii.gz", np.random.rand(20, 24, 16, 1).astype(np.float32))
    assert "drop the singleton 4th dimension" in only_problem(singleton)


def test_complex_and_colour_images_are_refused_with_the_fix(tmp_path):
    data = np.random.default_rng(0).normal(100, 10, (20, 24, 16))
    complex_file = save(tmp_path / "complex.nii.gz", data.astype(np.complex64))
    assert "complex64 voxels" in only_problem(complex_file)
    assert "magnitude" in only_problem(complex_file)
    rgb = np.zeros(data.shape, [("R", "u1"), ("G", "u1"), ("B", "u1")])
    for channel in "RGB":
        rgb[channel] = data.clip(0, 255)
    rgb_file = save(tmp_path / "rgb.nii.gz", rgb)
    assert "RGB voxels" in only_problem(rgb_file)
    assert "grey-scale" in only_problem(rgb_file)
    # integer images of any width are real numbers: they pass
    for dtype in (np.uint8, np.int16, np.uint32, np.int64):
        path = tmp_path / f"{np.dtype(dtype).name}.nii.gz"
        nib.save(nib.Nifti1Image(data.astype(dtype), np.diag([4.0, 4.0, 4.0, 1.0]),
                                 dtype=dtype), str(path))
        assert image_problems(path, "T1w") == ([], []), dtype


def test_nan_inf_zero_and_constant_images(tmp_path):
    data = np.random.default_rng(0).normal(size=(20, 24, 16)).astype(np.float32)
    for name, value in (("nan", np.nan), ("inf", np.inf)):
        bad = data.copy()
        bad[3, 4, 5] = value
        assert "NaN or infinite" in only_problem(save(tmp_path / f"{name}.nii.gz", bad))
    zero = save(tmp_path / "zero.nii.gz", np.zeros((20, 24, 16), np.float32))
    assert "all zero" in only_problem(zero)
    constant = save(tmp_path / "constant.nii.gz", np.full((20, 24, 16), 7, np.int16))
    assert "constant" in only_problem(constant)


def test_one_slice_and_tiny_field_of_view(tmp_path):
    one_slice = save(tmp_path / "slice.nii.gz", np.random.rand(64, 64, 1).astype(np.float32))
    assert "too small for a head" in only_problem(one_slice)
    tiny = save(tmp_path / "tiny.nii.gz", np.random.rand(20, 20, 20).astype(np.float32),
                np.eye(4))  # 20 mm
    assert "too small for a head" in only_problem(tiny)


def test_huge_image_is_refused_from_its_header(tmp_path):
    header = nib.Nifti1Header()
    header.set_data_shape((1024, 1024, 1024))
    header.set_data_dtype(np.float32)
    huge = tmp_path / "huge.nii"
    huge.write_bytes(header.binaryblock + b"\0" * 4)  # no data needed: refused before reading
    assert 1024 ** 3 > MAX_VOXELS
    assert "resample it to 1 mm" in only_problem(huge)


def test_oblique_and_anisotropic_images_warn_but_pass(tmp_path):
    angle = np.radians(20)
    rotation = np.array([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)],
                         [0, np.sin(angle), np.cos(angle)]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([1.0, 1.0, 3.0])
    path = save(tmp_path / "oblique.nii.gz", np.random.rand(80, 80, 30).astype(np.float32),
                affine)
    problems, warnings = image_problems(path, "FLAIR")
    assert problems == []
    assert any("oblique by 20 degrees" in w for w in warnings)
    assert any("anisotropic voxels" in w for w in warnings)


def test_modalities_that_do_not_overlap(tmp_path):
    t1 = tiny_image(tmp_path / "t1.nii.gz")
    far = np.diag([4.0, 4.0, 4.0, 1.0])
    far[:3, 3] = [500.0, 0.0, 0.0]
    flair = save(tmp_path / "flair.nii.gz", np.random.rand(20, 24, 16).astype(np.float32), far)
    problems = overlap_problems({"T1w": str(t1), "FLAIR": str(flair)})
    assert len(problems) == 1 and problems[0].startswith(f"{flair}: its field of view shares 0 %")
    shifted = np.diag([4.0, 4.0, 4.0, 1.0])
    shifted[:3, 3] = [8.0, 0.0, 0.0]  # 90 % overlap: fine
    ok = save(tmp_path / "ok.nii.gz", np.random.rand(20, 24, 16).astype(np.float32), shifted)
    # the reference is T1w whatever the order of the images
    assert check_run(Run("01", None, {"FLAIR": str(ok), "T1w": str(t1)})) == []
    assert check_run(Run("01", None, {"FLAIR": str(flair), "T1w": str(t1)})) != []


def test_output_below_a_file_is_reported(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    problem = writable_folder_problem(blocker / "out", "output folder")
    assert problem.startswith(f"{blocker / 'out'}: ") and "is a file" in problem
    assert writable_folder_problem(tmp_path / "new" / "out", "output folder") is None
    assert not (tmp_path / "new").exists()


def _unshare_available() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "true"],
                           capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _unshare_available(),
                    reason="needs `unshare --user --mount` (user namespaces) to make a real "
                           "read-only folder, which even root cannot write")
@pytest.mark.parametrize("which", ["output", "work"])
def test_read_only_output_or_work_folder(tmp_path, which):
    bids = bids_skeleton(tmp_path / "bids", {"01": ["T1w"]})
    weights = random_weights(tmp_path / "w")
    locked = tmp_path / "locked"
    locked.mkdir()
    out, work = tmp_path / "out", tmp_path / "work"
    if which == "output":
        out = target = locked / "out"
    else:
        work = target = locked / "work"
    script = (f"mount --bind {locked} {locked} && mount -o remount,bind,ro {locked} && "
              f"{sys.executable} -m mixnet_bids.cli.run {bids} {out} participant "
              f"-w {work} --skip-bids-validation --weights-dir {weights}")
    result = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                             script], capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert f"{target}: the {which} folder is not writable (it is on a read-only " \
           "file system" in result.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "work").exists()


def test_session_label_with_path_characters(tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        main([str(tmp_path), str(tmp_path / "o"), "participant", "--session-label", "a/b"])
    assert err.value.code == 2
    assert "not a BIDS label" in capsys.readouterr().err
