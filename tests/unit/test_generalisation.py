"""The generalisation benchmark's parts (``benchmarks/generalisation.py``): the conditions it
builds from MRBrainS and BrainWeb, its scoring, its peers (real antspyx N4 + Atropos and
scikit-learn's Gaussian mixture) on a phantom, and its table."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from helpers import random_weights, scalp_phantom, synthetic_subject
from scipy import ndimage

from mixnet_bids.evaluation.metrics import tissue_dice
from mixnet_bids.inference.planes import PLANES
from mixnet_bids.labels import TASK_CLASSES
from mixnet_bids.model import MODALITIES
from mixnet_bids.refinement import refine

ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("MIXNET_SHARED", ROOT.parent / "shared"))
BRAINWEB = SHARED / "data" / "brainweb20"


def load_script(name: str):
    """A script of ``benchmarks/`` as a module (registered: dataclasses look it up)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


bench = load_script("generalisation")
GM, WM, CSF, IGNORED = bench.GM, bench.WM, bench.CSF, bench.IGNORE_INDEX


# -- scoring ------------------------------------------------------------------------------


def test_dice_by_hand_with_ignored_voxels():
    reference = np.array([GM, WM, WM, WM, CSF, CSF, IGNORED, IGNORED, 0])
    prediction = np.array([GM, GM, WM, WM, CSF, 0, GM, WM, CSF])
    scores = tissue_dice(prediction, reference)
    # GM: predicted at 0, 1 (6 is ignored), true at 0 -> 2 * 1 / (2 + 1)
    # WM: predicted at 2, 3 (7 ignored), true at 1, 2, 3 -> 2 * 2 / (2 + 3)
    # CSF: predicted at 4, 8, true at 4, 5 -> 2 * 1 / (2 + 2)
    assert scores == pytest.approx({"GM": 2 / 3, "WM": 4 / 5, "CSF": 1 / 2})


def test_dice_of_a_tissue_absent_from_both_is_nan():
    scores = tissue_dice(np.array([GM, 0]), np.array([GM, IGNORED]))
    assert scores["GM"] == 1.0 and np.isnan(scores["WM"]) and np.isnan(scores["CSF"])


def test_mrbrains_labels_to_tissues_ignore_cerebellum_brainstem_and_others():
    codes = bench.tissue_codes(np.arange(11), bench.MRBRAINS_TISSUE)
    assert codes.tolist() == [0, GM, GM, WM, WM, CSF, CSF] + [IGNORED] * 4
    brainweb = bench.tissue_codes(np.arange(12), bench.BRAINWEB_TISSUE)
    assert brainweb.tolist() == [0, CSF, GM, WM] + [0] * 8


# -- conditions ---------------------------------------------------------------------------


def test_bias_and_gamma_is_a_smooth_field_of_the_set_range_on_the_gamma_contrast():
    data = np.zeros((30, 40, 20), np.float32)
    head = np.zeros(data.shape, bool)
    head[5:25, 5:35, 3:17] = True
    data[head] = 500.0
    data[10:20, 10:30, 5:15] = 1000.0
    out = bench.bias_and_gamma(data, head, np.random.default_rng(3), gamma=0.5,
                               log_range=1.0)
    assert out.dtype == np.float32 and np.isfinite(out).all()
    assert (out[data == 0] == 0).all()
    contrast = (data[head] / 1000.0) ** 0.5   # 1000 is the 99.5th percentile of the head
    log_field = np.log(out[head] / (1000.0 * contrast))
    assert log_field.max() - log_field.min() == pytest.approx(1.0, rel=1e-4)
    # smooth: neighbours differ by little, unlike the 1000/500 edge of the input
    field = np.where(head, out / np.where(data > 0, 1000.0 * (data / 1000.0) ** 0.5, 1), 1)
    assert np.abs(np.diff(np.log(field[5:25, 5:35, 3:17]), axis=0)).max() < 0.1


def test_skull_strip_keeps_the_dilated_mask_only():
    data = np.random.default_rng(0).uniform(1, 2, (20, 20, 20)).astype(np.float32)
    mask = np.zeros(data.shape, bool)
    mask[8:12, 8:12, 8:12] = True
    out = bench.skull_strip(data, mask, 2)
    kept = ndimage.binary_dilation(mask, iterations=2)
    assert (out[~kept] == 0).all() and (out[kept] == data[kept]).all()
    assert kept.sum() > mask.sum()


def tissue_means(case):
    image = nib.load(case.image).get_fdata(dtype=np.float32)
    reference = np.asarray(nib.load(case.reference).dataobj)
    return {code: float(image[reference == code].mean()) for code in (GM, WM, CSF)}


def check_case(case, stripped: bool, zooms=(1.0, 1.0, 1.0)):
    """Image, reference and mask share one grid, values are finite, the tissues sit where
    the reference says (CSF < GM < WM on a T1w), and a stripped image is 0 off the brain."""
    image, reference, mask = (nib.load(p) for p in (case.image, case.reference,
                                                     case.brain_mask))
    assert image.shape == reference.shape == mask.shape
    assert np.allclose(image.affine, reference.affine) and np.allclose(image.affine,
                                                                       mask.affine)
    assert np.allclose(nib.affines.voxel_sizes(image.affine), zooms)
    data = image.get_fdata(dtype=np.float32)
    assert np.isfinite(data).all() and data.min() >= 0
    assert case.image == case.bids_dir / f"sub-{case.subject}" / "anat" / \
        f"sub-{case.subject}_T1w.nii.gz"
    assert (case.bids_dir / "dataset_description.json").is_file()
    means = tissue_means(case)
    assert means[CSF] < means[GM] < means[WM]
    brain = np.asarray(mask.dataobj) > 0
    labelled = np.isin(np.asarray(reference.dataobj), (GM, WM, CSF))
    assert brain[labelled].all()
    if stripped:
        assert (data[~ndimage.binary_dilation(brain, iterations=3)] == 0).all()
        assert (data[brain] > 0).mean() > 0.99
    else:
        assert (data[~brain] > 0).sum() > brain.sum()   # a head around the brain
    return data, brain


@pytest.fixture(scope="module")
def mrbrains_cases(mrbrains_dir, tmp_path_factory):
    work = tmp_path_factory.mktemp("conditions")
    return {c: bench.build_case(c, "1", work, mrbrains_dir, BRAINWEB)
            for c in ("mrbrains", "mrbrains-stripped", "mrbrains-bias")}


def test_mrbrains_conditions(mrbrains_cases):
    whole, brain = check_case(mrbrains_cases["mrbrains"], stripped=False)
    stripped, _ = check_case(mrbrains_cases["mrbrains-stripped"], stripped=True)
    biased, _ = check_case(mrbrains_cases["mrbrains-bias"], stripped=False)
    assert np.array_equal(stripped[brain], whole[brain])
    # MRBrainS ignores its cerebellum and brainstem: some voxels are ignored, inside the brain
    reference = np.asarray(nib.load(mrbrains_cases["mrbrains"].reference).dataobj)
    assert (reference == IGNORED).sum() > 50_000 and brain[reference == IGNORED].all()
    # the bias field changes the same tissue's intensity by a lot across the head
    wm = reference == WM
    ratio = biased[wm] / whole[wm] ** bench.GAMMA
    assert np.percentile(ratio, 99) / np.percentile(ratio, 1) > 1.5


@pytest.fixture(scope="module")
def brainweb_dir():
    if not (BRAINWEB / "sub-05_desc-crisp_dseg.nii.gz").is_file():
        pytest.skip(f"BrainWeb label maps not found at {BRAINWEB} (set MIXNET_SHARED or place "
                    "the team's shared folder beside the project)")
    return BRAINWEB


def test_brainweb_conditions(brainweb_dir, tmp_path):
    head = bench.build_case("brainweb", "sub-05", tmp_path, SHARED, brainweb_dir)
    stripped = bench.build_case("brainweb-stripped", "05", tmp_path, SHARED, brainweb_dir)
    coronal = bench.build_case("brainweb-coronal", "05", tmp_path, SHARED, brainweb_dir)
    assert head.subject == stripped.subject == coronal.subject == "05"
    check_case(head, stripped=False)
    check_case(stripped, stripped=True)
    check_case(coronal, stripped=True, zooms=bench.CORONAL_SLICES_MM)
    assert bench.CORONAL_SLICES_MM[1] == 1.5   # thick along anterior-posterior: coronal
    assert nib.aff2axcodes(nib.load(coronal.image).affine) == ("R", "A", "S")
    ref_head, ref_stripped = (np.asarray(nib.load(c.reference).dataobj)
                              for c in (head, stripped))
    assert np.array_equal(ref_head, ref_stripped)
    assert not (ref_head == IGNORED).any()


def test_an_unknown_condition_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown condition 'skull'"):
        bench.build_case("skull", "1", tmp_path, tmp_path, tmp_path)


def test_a_missing_mrbrains_subject_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="reg_T1.nii.gz not found"):
        bench.mrbrains_1mm(tmp_path, "7")


# -- peers --------------------------------------------------------------------------------


def phantom(shape=(56, 64, 48), seed=0):
    """A 3-tissue T1w-like head at 2 mm: a WM core in GM in CSF, a smooth bias, noise."""
    grid = np.indices(shape, dtype=np.float32)
    centre = (np.array(shape, np.float32) - 1) / 2
    radius = np.sqrt(sum(((grid[i] - centre[i]) / (0.45 * shape[i])) ** 2 for i in range(3)))
    truth = np.zeros(shape, np.uint8)
    truth[radius < 1.0] = CSF
    truth[radius < 0.8] = GM
    truth[radius < 0.5] = WM
    # a wavy GM/WM border, so that the classes are not one ball each
    truth[(radius < 0.65) & (np.sin(grid[0] / 2.0) > 0.3)] = WM
    means = np.array([0.0, 550.0, 800.0, 250.0], np.float32)   # by code: bg, GM, WM, CSF
    bias = np.exp(0.2 * (grid[0] / shape[0] - 0.5))
    noise = np.random.default_rng(seed).normal(0, 40, shape).astype(np.float32)
    return (means[truth] * bias + noise).astype(np.float32), truth


def test_atropos_and_the_gaussian_mixture_segment_a_phantom(tmp_path, monkeypatch):
    data, truth = phantom()
    mask = truth > 0
    corrected = bench.n4_corrected(data, (2.0, 2.0, 2.0), mask)
    assert corrected.shape == data.shape and np.isfinite(corrected).all()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))   # where antspyx would write
    for tissues in (bench.atropos_tissues(corrected, (2.0, 2.0, 2.0), mask),
                    bench.gmm_tissues(corrected, mask)):
        assert (tissues[~mask] == 0).all()
        scores = tissue_dice(tissues, truth)
        assert min(scores.values()) > 0.85, scores
    # Atropos's probability images are gone, and the temporary directory is restored
    assert list(tmp_path.iterdir()) == [] and tempfile.tempdir == str(tmp_path)


def test_classes_are_named_by_their_mean_intensity():
    intensities = np.array([900.0, 100.0, 500.0, 0.0])
    mask = np.array([True, True, True, False])
    classes = np.array([0, 1, 2, 0])
    assert bench.by_intensity(classes, intensities, mask).tolist() == [WM, CSF, GM, 0]


# -- the table ----------------------------------------------------------------------------


def report():
    meta = {"command": "python benchmarks/generalisation.py --conditions brainweb",
            "date": "2026-12-05", "cpu": "test CPU", "cores": 2, "niceness": 19,
            "commit": "abc123", "task": "3label", "networks": "3label", "weights": "shipped",
            "conditions": ["brainweb"], "subset": True}
    dice = {"GM": 0.8, "WM": 0.9, "CSF": 0.7}
    records = [{"condition": "brainweb", "subject": "05", "method": "mixnet-bids",
                "mask": None, "dice": dice, "seconds": 120.0, "mask_dice": 0.95,
                "tiv_error": -0.021, "skull_stripped": False}]
    for method, seconds in (("atropos", 40.0), ("gmm", 30.0)):
        for mask, gm in (("app", 0.6), ("true", 0.7)):
            records.append({"condition": "brainweb", "subject": "05", "method": method,
                            "mask": mask, "dice": {**dice, "GM": gm}, "seconds": seconds})
    return {"meta": meta, "records": records}


def test_the_table_has_both_masks_side_by_side_and_the_time_ratios():
    table = bench.markdown(report())
    assert "Command: `python benchmarks/generalisation.py --conditions brainweb`" in table
    assert "git abc123" in table and "test CPU" in table and "**A subset**" in table
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert rows[2] == ("| (d) BrainWeb held out, MPRAGE-like 1 mm | mixnet-bids | 05 | "
                       "0.800 / 0.900 / 0.700 | — | 120 | 1 |")
    assert rows[3] == ("|  | N4 + Atropos | 05 | 0.600 / 0.900 / 0.700 | "
                       "0.700 / 0.900 / 0.700 | 40 | 3.0 |")
    assert rows[4].endswith("| 30 | 4.0 |")
    assert "(d) 0.950 (volume -2.1 %)" in table and "call background" in table
    assert "`desc-preproc_T1w.json`: (d) false." in table


def test_the_results_doc_gets_the_table_between_its_markers(tmp_path):
    doc = tmp_path / "results.md"
    doc.write_text("# Results\n\nearlier text\n")
    bench.update_results_doc(doc, "first table\n")
    bench.update_results_doc(doc, "second table\n")
    text = doc.read_text()
    assert text.startswith("# Results\n\nearlier text\n\n## Generalisation benchmark\n")
    assert "second table" in text and "first table" not in text
    assert text.count("## Generalisation benchmark") == 1
    json.dumps(report())   # the report is what main writes as JSON


# -- the boundary probe -------------------------------------------------------------------


def test_boundary_probe_bins_the_render_grid_by_gm_fraction(tmp_path, capsys):
    """On a 0.5 mm phantom, the probe's GM fractions sit on the render's 1 mm grid: voxels
    that are more than half GM are the render's GM, and a dseg that calls exactly those GM
    switches between 4/8 and 5/8 at the GM/CSF border."""
    probe = load_script("boundary_probe")
    from mixnet_bids.training.synth import load_label_volumes, render_volume

    labels = np.zeros((49, 47, 51), np.uint8)   # odd: the render drops a trailing voxel
    grid = np.indices(labels.shape)
    centre = np.array([23.3, 23.9, 24.6])[:, None, None, None]   # off the grid's symmetry
    radius = np.sqrt(((grid - centre) ** 2).sum(axis=0))
    labels[radius < 20] = 1      # CSF
    labels[radius < 17.3] = 2    # GM: a sphere boundary cuts voxels at every fraction
    labels[radius < 12.6] = 3    # WM
    nib.save(nib.Nifti1Image(labels, np.diag([0.5, 0.5, 0.5, 1.0])),
             str(tmp_path / "sub-99_desc-crisp_dseg.nii.gz"))
    borders, affine = probe.gm_fractions(tmp_path, "99")
    (volume,) = load_label_volumes(tmp_path, ["99"])
    _, rendered, render_affine = render_volume(volume, np.random.default_rng(0), 1.0)
    assert np.allclose(affine, render_affine)
    gm_csf = borders["GM/CSF"]
    assert gm_csf.shape == rendered.shape
    assert set(np.unique(gm_csf[(gm_csf > 0) & (gm_csf < 8)])) == set(range(1, 8))
    assert (rendered[gm_csf >= 5] == 2).all() and (rendered[(gm_csf >= 0) & (gm_csf <= 4)]
                                                   == 1).all()   # a 4/8 tie: CSF
    gm_wm = borders["GM/WM"]
    assert set(np.unique(gm_wm[gm_wm >= 0])) == set(range(9))
    assert (rendered[gm_wm >= 4] == 2).all() and (rendered[(gm_wm >= 0) & (gm_wm <= 3)]
                                                  == 3).all()   # a 4/8 tie: GM
    # pure voxels count only next to a mixed voxel of the border: not the whole WM core
    assert (gm_wm == 0).sum() < (rendered == 3).sum() / 2
    dseg = np.where(rendered == 2, 1, np.where(rendered == 3, 2, np.where(rendered == 1, 3, 0)))
    share = probe.gm_share(borders, dseg.astype(np.uint8))
    assert share["GM/CSF"][4] == 0.0 and share["GM/CSF"][5] == 1.0
    assert share["GM/WM"][3] == 0.0 and share["GM/WM"][4] == 1.0
    # the command: a table per border, one column per dseg
    path = tmp_path / "dseg.nii.gz"
    nib.save(nib.Nifti1Image(dseg.astype(np.uint8), render_affine), str(path))
    assert probe.main(["--brainweb", str(tmp_path), "--subject", "99",
                       "--dseg", f"truth={path}"]) == 0
    out = capsys.readouterr().out
    assert "| GM/CSF border: GM sub-voxels of 8 | voxels | truth: called GM |" in out
    assert "| GM/WM border: GM sub-voxels of 8 | voxels | truth: called GM |" in out
    gm_csf_rows = out.split("GM/WM border")[0].splitlines()
    assert any(r.startswith("| 4 |") and r.endswith("| 0.00 |") for r in gm_csf_rows)
    assert any(r.startswith("| 5 |") and r.endswith("| 1.00 |") for r in gm_csf_rows)
    assert "| 50 % point |  | 4.5 |" in gm_csf_rows
    assert probe.switch_point([0, 0, 0.2, 0.6, 1, 1, 1, 1, 1]) == pytest.approx(2.75)
    assert probe.switch_point([0.6] + [1] * 8) == float("-inf")
    assert probe.switch_point([0.1] * 9) == float("inf")
    # volumes and confusions against a reference: one GM voxel called WM, one unscored
    reference = dseg.astype(np.uint8)
    moved = reference.copy()
    gm = np.argwhere(reference == 1)
    moved[tuple(gm[0])] = 2
    reference[tuple(gm[1])] = 255
    counts = probe.confusion(reference, moved)
    n_gm, n_wm = (reference == 1).sum(), (reference == 2).sum()
    assert counts["GM->WM"] == 1 and counts["WM->GM"] == 0 and counts["CSF->GM"] == 0
    assert counts["GM volume / reference"] == (n_gm - 1) / n_gm
    assert counts["WM volume / reference"] == (n_wm + 1) / n_wm
    assert counts["GM Dice"] == 2 * (n_gm - 1) / (2 * n_gm - 1)
    assert counts["WM Dice"] == 2 * n_wm / (2 * n_wm + 1) and counts["CSF Dice"] == 1.0
    ref_path = tmp_path / "reference.nii.gz"
    nib.save(nib.Nifti1Image(reference, render_affine), str(ref_path))
    assert probe.main(["--reference", str(ref_path), "--dseg", f"truth={path}"]) == 0
    assert "| method | GM Dice | WM Dice | CSF Dice | GM volume / reference |" in \
        capsys.readouterr().out
    with pytest.raises(SystemExit):
        probe.main(["--dseg", f"truth={path}"])   # neither the borders nor a reference


# -- the refinement probe -----------------------------------------------------------------


def test_app_args_reach_the_app_and_the_table(tmp_path):
    case = bench.Case("brainweb", "05", tmp_path / "bids", tmp_path / "t1w.nii.gz",
                      tmp_path / "ref.nii.gz", tmp_path / "mask.nii.gz")
    command = bench.app_command(case, tmp_path / "out", tmp_path / "work", "wholebrain", None,
                                bench.parse_args(["--mrbrains", "m", "--brainweb", "b",
                                                  "--app-args=--no-refine"]).app_args)
    assert command[-1] == "--no-refine" and "--task" in command
    with_args = report()
    with_args["meta"]["app_args"] = ["--no-refine"]
    assert "mixnet-bids `--task 3label --no-refine` from" in bench.markdown(with_args)
    assert "mixnet-bids `--task 3label` from" in bench.markdown(report())


def test_refine_probe_scores_each_exponent_against_the_reference(tmp_path, capsys):
    """A benchmark-shaped folder with one case: the app's labels score below the refined
    ones, which follow the CSF intensity of the voxels the maps leave undecided."""
    probe = load_script("refine_probe")
    rng = np.random.default_rng(0)
    shape = (20, 10, 10)
    reference = np.full(shape, GM, np.uint8)
    reference[10:] = CSF
    reference[:, :, 8:] = WM
    image = np.choose(reference - 1, [60.0, 100.0, 20.0]) + rng.normal(0, 3, shape)
    gm = np.where(reference == GM, 0.9, 0.05)
    csf = np.where(reference == CSF, 0.9, 0.05)
    undecided = np.zeros(shape, bool)
    undecided[10:13, :, :8] = True           # CSF voxels the maps call GM by a hair
    gm[undecided], csf[undecided] = 0.5, 0.45
    maps = {"GM": gm, "WM": 1.0 - gm - csf, "CSF": csf}
    anat = tmp_path / "brainweb" / "mixnet-bids" / "out" / "sub-05" / "anat"
    anat.mkdir(parents=True)
    (tmp_path / "brainweb" / "truth").mkdir()
    affine = np.eye(4)

    def save(data, path, dtype=np.float32):
        nib.save(nib.Nifti1Image(np.asarray(data, dtype), affine), str(path))

    save(reference, tmp_path / "brainweb" / "truth" / "sub-05_dseg.nii.gz", np.uint8)
    save(image, anat / "sub-05_desc-preproc_T1w.nii.gz")
    for tissue, data in maps.items():
        save(data, anat / f"sub-05_label-{tissue}_probseg.nii.gz")
    dseg = np.argmax(np.stack([maps[t] for t in ("GM", "WM", "CSF")], -1), -1) + 1
    save(dseg, anat / "sub-05_desc-wholebrain_dseg.nii.gz", np.uint8)
    result = probe.sweep(tmp_path, [1.0, 6.0])
    (none,), (refined,) = result["scores"]["brainweb"]["none"], result["scores"]["brainweb"][6.0]
    assert none["CSF"] < 0.9 and refined["CSF"] == pytest.approx(1.0)
    assert refined["GM"] == pytest.approx(1.0) and none["GM"] < 0.9
    assert probe.main([str(tmp_path), "--exponents", "6"]) == 0
    assert f"| brainweb | {none['GM']:.3f} / 1.000 / {none['CSF']:.3f} | 1.000 / 1.000 / " \
        "1.000 |" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="no benchmark case"):
        probe.main([str(tmp_path / "empty")])


def test_refine_probe_takes_the_stripped_brain_of_skull_stripped_cases(tmp_path):
    """A skull-stripped case whose maps call the outer shell of the brain background: with
    ``stripped_brain`` the shell is tissue, and the labels follow its intensities."""
    probe = load_script("refine_probe")
    shape = (12, 12, 12)
    reference = np.zeros(shape, np.uint8)
    reference[2:10, 2:10, 2:10] = CSF                  # a CSF shell around GM
    reference[3:9, 3:9, 3:9] = GM
    image = np.choose(reference, [0.0, 60.0, 100.0, 20.0])
    gm = np.where(reference == GM, 0.9, 0.0)
    maps = {"GM": gm, "WM": np.where(reference == GM, 0.05, 0.0),
            "CSF": np.where(reference == GM, 0.05, 0.2)}   # shell: background 0.8
    anat = tmp_path / "brainweb-stripped" / "mixnet-bids" / "out" / "sub-05" / "anat"
    source = tmp_path / "brainweb-stripped" / "bids" / "sub-05" / "anat"
    for folder in (anat, source, tmp_path / "brainweb-stripped" / "truth"):
        folder.mkdir(parents=True)

    def save(data, path, dtype=np.float32):
        nib.save(nib.Nifti1Image(np.asarray(data, dtype), np.eye(4)), str(path))

    save(reference, tmp_path / "brainweb-stripped" / "truth" / "sub-05_dseg.nii.gz", np.uint8)
    save(image, source / "sub-05_T1w.nii.gz")
    save(image, anat / "sub-05_desc-preproc_T1w.nii.gz")
    (anat / "sub-05_desc-preproc_T1w.json").write_text(json.dumps({"SkullStripped": True}))
    for tissue, data in maps.items():
        save(data, anat / f"sub-05_label-{tissue}_probseg.nii.gz")
    dseg = np.where(reference == GM, GM, 0)
    save(dseg, anat / "sub-05_desc-wholebrain_dseg.nii.gz", np.uint8)
    (as_run,) = probe.sweep(tmp_path, [6.0])["scores"]["brainweb-stripped"][6.0]
    (stripped,) = probe.sweep(tmp_path, [6.0], stripped_brain=True)["scores"][
        "brainweb-stripped"][6.0]
    assert as_run["CSF"] == 0.0 and stripped["CSF"] == pytest.approx(1.0)
    assert stripped["GM"] == pytest.approx(1.0)


def finished_fold(cv: Path, name: str) -> Path:
    """A cross-validation folder ``cv`` whose fold ``name`` has fine networks (random) for
    every plane."""
    for plane in PLANES:
        random_weights(cv / name / plane, "fine", planes=(plane,))
    return cv


def test_cv_refine_probe_scores_each_finished_fold_with_and_without_the_refinement(
        tmp_path, monkeypatch):
    probe = load_script("cv_refine_probe")
    subject = synthetic_subject()
    cv = finished_fold(tmp_path / "cv", subject.name)
    assert probe.fold_weights(cv, "sub-4") is None
    rows = probe.probe(subject, probe.fold_weights(cv, subject.name))
    assert [row[1:4] for row in rows] == [
        [modalities, method, task] for modalities in ("T1w+IR+FLAIR", "T1w")
        for method in ("networks", "refined by T1w") for task in ("3label", "wholebrain")]
    assert all(len(row[4].split(" / ")) == 3 for row in rows)
    # without a T1w the app refines by the FLAIR, else the IR; a subset it lacks is skipped
    partial = replace(subject, modalities=("IR", "FLAIR"))
    assert probe.subsets(partial, None) == [("IR", "FLAIR")]
    assert probe.subsets(partial, ["T1w+IR", "FLAIR+IR", "IR", "IR+FLAIR", "FLAIR"]) == [
        ("IR", "FLAIR"), ("IR",), ("FLAIR",)]
    refined_by = []

    def recording_refine(probs, image, groups):
        refined_by.append(image)
        return refine(probs, image, groups)

    monkeypatch.setattr(probe, "refine", recording_refine)
    rows = probe.probe(subject, probe.fold_weights(cv, subject.name), ["IR+FLAIR", "IR"])
    assert [row[1:4] for row in rows] == [
        [modalities, method, task] for modalities, reference in (("IR+FLAIR", "FLAIR"),
                                                                 ("IR", "IR"))
        for method in ("networks", f"refined by {reference}") for task in ("3label", "wholebrain")]
    for image, reference in zip(refined_by, ("FLAIR", "IR")):
        np.testing.assert_array_equal(image, subject.image[..., MODALITIES.index(reference)])
    with pytest.raises(SystemExit):
        probe.main(["--cv", str(cv), "--cache", str(tmp_path), "--subjects", "1",
                    "--inputs", "T2w"])


def test_cv_error_probe_sorts_errors_into_border_and_region_by_hand():
    probe = load_script("cv_error_probe")
    ref = np.zeros((6, 6, 2), np.uint8)
    ref[:, :3] = 1                                      # GM | CSF, the border between y 2 and 3
    ref[:, 3:] = 3
    ref[0, 0, 1] = IGNORED                              # never scored
    pred = ref.copy()
    pred[0, 0, 1] = 2                                   # wrong, but ignored
    pred[4, 2, 0] = 3                                   # GM -> CSF next to the CSF: border
    pred[1, 0, 0] = pred[1, 0, 1] = 2                   # GM -> WM, no WM anywhere: a region
    pred[5, 5, 1] = 0                                   # CSF -> background at the image edge
    table = probe.error_table(pred, ref, voxel_ml=0.5)
    assert table == {(1, 3): (0.5, 0.5), (1, 2): (1.0, 0.0), (3, 0): (0.5, 0.0)}
    errors, summary = probe.ranked(pred, ref, voxel_ml=0.5)
    assert errors[0] == ((1, 2), (1.0, 0.0)) and len(errors) == 3      # largest first
    assert summary == ["all errors", "2.0", "25%"]
    assert probe.ranked(ref, ref, voxel_ml=0.5) == ([], ["all errors", "0.0", "-"])


def test_cv_error_probe_lists_each_networks_largest_errors(tmp_path):
    probe = load_script("cv_error_probe")
    subject = synthetic_subject()
    cv = finished_fold(tmp_path / "cv", subject.name)
    weights = load_script("cv_refine_probe").fold_weights(cv, subject.name)
    rows = probe.probe(subject, {"held out": weights}, top=2)
    assert rows[0][:2] == [subject.name, "held out"] and rows[0][3] == "all errors"
    assert len(rows[0][2].split(" / ")) == 3 and 1 <= len(rows) <= 3
    listed = [float(row[4]) for row in rows[1:]]
    assert listed == sorted(listed, reverse=True) and sum(listed) <= float(rows[0][4]) + 0.1
    for row in rows[1:]:   # what each error is made of: MRBrainS structures, fine classes
        assert row[6].split()[0] in TASK_CLASSES["8label"], row
        assert row[7].split()[0] in TASK_CLASSES["fine"], row
        assert 1 / 4 <= float(row[8]) <= 1   # the predicted class is the most likely of four
    shares = probe.composition(np.array([3, 3, 3, 0]), ("BG", "GM", "WM", "CSF"))
    assert shares == "CSF 75%, BG 25%"


def test_cv_error_probe_reads_a_dseg_against_its_reference(tmp_path, capsys):
    probe = load_script("cv_error_probe")
    ref = np.zeros((8, 8, 4), np.uint8)
    ref[2:6, 2:6] = 3                                   # a CSF block in background
    ref[3:5, 3:5] = 1                                   # around a GM core
    pred = ref.copy()
    pred[2, 2:6] = 0                                    # one CSF row called background
    affine = np.diag([10.0, 10.0, 10.0, 1.0])           # 1 mL voxels
    files = []
    for name, data in (("pred", pred), ("ref", ref)):
        files.append(tmp_path / f"{name}.nii.gz")
        nib.save(nib.Nifti1Image(data, affine), files[-1])
    assert probe.main(["--dseg", *map(str, files)]) == 0
    out = capsys.readouterr().out
    # scored as the generalisation benchmark scores (tissue_dice): no WM in either, NaN
    assert "| pred.nii.gz |  | 1.000 / nan / 0.800 | all errors | 16.0 | 100% |" in out
    assert "| CSF -> background | 16.0 | 100% |" in out
    with pytest.raises(SystemExit):
        probe.main([])                                  # nothing to read


def test_the_cv_probes_read_the_finished_folds_only(tmp_path, capsys):
    probe = load_script("cv_error_probe")
    subject = synthetic_subject()                       # sub-1
    cache = tmp_path / "cache"
    (cache / "preproc").mkdir(parents=True)
    np.savez(cache / "preproc" / "sub-1.npz", image=subject.image.astype(np.float16),
             labels=subject.labels, affine=np.diag([*subject.zooms, 1.0]),
             modalities=np.array(subject.modalities))
    cv = finished_fold(tmp_path / "cv", subject.name)
    args = ["--cv", str(cv), "--cache", str(cache), "--subjects", "1", "sub-4", "--top", "2"]
    assert probe.main(args) == 0
    out = capsys.readouterr().out
    assert "sub-4: its fold has not finished every plane; skipped" in out
    assert "| sub-1 | held out (its fold) |" in out and "sub-4 |" not in out


@pytest.mark.parametrize("stripped", [False, True])
def test_head_mask_probe_compares_the_thresholds_on_a_dark_csf(stripped):
    """The probe puts the two thresholds side by side: Otsu's threshold of the intensities
    (the app's) lies above the dark CSF under a bright scalp, and the probe counts what it
    leaves out; the log threshold lies between air and the darkest tissue and keeps it."""
    from skimage.filters import threshold_otsu

    from mixnet_bids.preprocessing import head_mask

    probe = load_script("head_mask_probe")
    data, inside = scalp_phantom(stripped)
    assert probe.log_otsu(data) < 40.0 < threshold_otsu(data)
    otsu_cell, log_cell = probe.cells(data, inside, 0.001)
    left_out = int(otsu_cell.split()[0])
    assert left_out == int((inside & ~head_mask(data)).sum()) > 0.01 * inside.sum()
    assert int(log_cell.split()[0]) <= 0.001 * inside.sum()


def test_train_processes_times_the_trainers_while_they_all_train():
    probe = load_script("train_processes")
    line = "2026-12-07 10:56:{:02d},000 mixnet_bids.training.train coronal fine it {}/400 loss 1.0"
    first = "\n".join(["2026-12-07 10:56:01,000 mixnet_bids.training.train coronal fine: "
                       "training in bfloat16"]
                      + [line.format(s, i) for s, i in ((10, 50), (20, 100), (35, 150))]
                      + ["2026-12-07 10:56:36,000 mixnet_bids.training.train stopped"])
    points = probe.checkpoints(first)
    assert [i for _, i in points] == [50, 100, 150]
    # 100 iterations from 10:56:10 to 10:56:35; start-up before the first checkpoint left out
    assert probe.iterations_per_second(points) == pytest.approx(4.0)
    # a second process that started later: only the time both trained counts
    second = probe.checkpoints("\n".join(line.format(s, i) for s, i in
                                         ((18, 50), (28, 100), (38, 150))))
    start, end = second[0][0], points[-1][0]
    assert probe.iterations_per_second(points, start, end) == pytest.approx(50 / 15)
    assert probe.iterations_per_second(second, start, end) == pytest.approx(5.0)
    with pytest.raises(RuntimeError, match="fewer than two checkpoints"):
        probe.iterations_per_second(points[:1])
