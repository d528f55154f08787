"""pybids queries, derivative naming and atomic, concurrent-safe writes."""

import json
import threading

import nibabel as nib
import numpy as np
import pytest
from bids import BIDSLayout
from helpers import bids_skeleton

from mixnet_bids.bids import DEFAULT_QUERIES, BIDSInputError, collect_modalities, load_filters
from mixnet_bids.interfaces.bids import (
    derivative_path,
    write_bids_image,
    write_shared,
    write_shared_once,
)


def test_collect_modalities_distinguishes_t1w_from_ir(tmp_path):
    root = bids_skeleton(tmp_path / "bids", {"01": ["T1w", "acq-IR_T1w", "FLAIR"],
                                              "02": ["acq-IR_T1w"]})
    layout = BIDSLayout(str(root), validate=False)
    one = collect_modalities(layout, "01", None, DEFAULT_QUERIES)
    assert one["T1w"].endswith("sub-01_T1w.nii.gz")
    assert one["IR"].endswith("sub-01_acq-IR_T1w.nii.gz")
    assert one["FLAIR"].endswith("sub-01_FLAIR.nii.gz")
    assert list(collect_modalities(layout, "02", None, DEFAULT_QUERIES)) == ["IR"]


def test_several_runs_fail_clearly_and_the_filter_file_chooses(tmp_path):
    root = bids_skeleton(tmp_path / "bids", {"01": ["run-1_T1w", "run-2_T1w"]})
    layout = BIDSLayout(str(root), validate=False)
    with pytest.raises(BIDSInputError, match="several T1w images.*bids-filter-file"):
        collect_modalities(layout, "01", None, DEFAULT_QUERIES)
    filt = tmp_path / "filter.json"
    filt.write_text(json.dumps({"t1w": {"run": 2}}))
    found = collect_modalities(layout, "01", None, load_filters(filt))
    assert found["T1w"].endswith("run-2_T1w.nii.gz")


def test_bad_filter_files(tmp_path):
    bad = tmp_path / "f.json"
    bad.write_text("{not json")
    with pytest.raises(BIDSInputError, match="cannot read"):
        load_filters(bad)
    bad.write_text(json.dumps({"bold": {}}))
    with pytest.raises(BIDSInputError, match="unknown filter"):
        load_filters(bad)


def test_derivative_path_names_and_refuses_escapes(tmp_path):
    path = derivative_path(tmp_path, {"sub": "01", "ses": "A", "desc": "3label"}, "dseg",
                           ".nii.gz")
    assert path == tmp_path / "sub-01" / "ses-A" / "anat" / "sub-01_ses-A_desc-3label_dseg.nii.gz"
    for bad in ("../x", "a/b", "a_b"):
        with pytest.raises(ValueError, match="letters and digits"):
            derivative_path(tmp_path, {"sub": bad}, "dseg", ".nii.gz")


def test_shared_files_are_written_once_under_concurrency(tmp_path):
    target = tmp_path / "dataset_description.json"
    texts = [json.dumps({"writer": i}) for i in range(8)]
    threads = [threading.Thread(target=write_shared_once, args=(target, t)) for t in texts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert target.read_text() in texts
    assert [p.name for p in tmp_path.iterdir()] == [target.name]  # no lock or temporary file


def test_shared_file_written_alike_by_every_job_is_brought_up_to_date(tmp_path):
    target = tmp_path / ".bidsignore"
    target.write_text("sub-*/log/\n")  # what an older version wrote
    write_shared(target, "sub-*/log\n")
    assert target.read_text() == "sub-*/log\n"
    before = target.stat().st_mtime_ns
    write_shared(target, "sub-*/log\n")
    assert target.stat().st_mtime_ns == before  # unchanged content is not rewritten


def test_derivative_images_get_mm_units_and_labels_uint8(tmp_path):
    affine = np.diag([1.5, 1.5, 2.0, 1.0])
    affine[:3, 3] = [-90, -120, -60]
    labels = nib.Nifti1Image(np.arange(24, dtype=np.float32).reshape(2, 3, 4) % 4, affine)
    labels.set_qform(affine, code=1)
    nib.save(labels, str(tmp_path / "labels.nii.gz"))
    assert labels.header.get_xyzt_units() == ("unknown", "unknown")
    out = write_bids_image(tmp_path / "labels.nii.gz", tmp_path / "sub-01_dseg.nii.gz", "dseg")
    img = nib.load(out)
    assert img.header.get_xyzt_units()[0] == "mm"
    assert img.get_data_dtype() == np.uint8
    assert np.array_equal(np.asarray(img.dataobj), np.asarray(labels.dataobj))
    assert np.allclose(img.affine, affine)
    assert (int(img.header["qform_code"]), int(img.header["sform_code"])) == (1, 2)
    probs = nib.Nifti1Image(np.random.default_rng(0).random((2, 3, 4, 3), np.float32), affine)
    nib.save(probs, str(tmp_path / "probs.nii.gz"))
    img = nib.load(write_bids_image(tmp_path / "probs.nii.gz", tmp_path / "p.nii.gz", "probseg"))
    assert img.header.get_xyzt_units() == ("mm", "sec")  # the validator asks a 4th-axis unit
    assert img.get_data_dtype() == np.float32
    assert np.array_equal(img.get_fdata(), probs.get_fdata())
    with pytest.raises(ValueError, match="whole numbers 0-255"):
        write_bids_image(tmp_path / "probs.nii.gz", tmp_path / "m_mask.nii.gz", "mask")
    assert not (tmp_path / "m_mask.nii.gz").exists()
