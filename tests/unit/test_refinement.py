"""The intensity refinement: a Gaussian model of the image's tissue intensities with the
networks' probabilities as its prior (``mixnet_bids.refinement``), alone and in the app's
convention maps."""

import nibabel as nib
import numpy as np
import pytest

from mixnet_bids.cli.parser import build_parser
from mixnet_bids.cli.run import _settings_from_args
from mixnet_bids.conventions import refinement_grouping, segment
from mixnet_bids.interfaces.tissue import ConventionMaps
from mixnet_bids.labels import TASK_CLASSES
from mixnet_bids.refinement import PRIOR_EXPONENT, fit_tissues, refine

FINE = TASK_CLASSES["fine"]
#: tissue intensities of the phantom (a T1w: CSF dark, WM bright) and their noise
MEANS = {"GM": 60.0, "WM": 100.0, "CSF": 20.0}
NOISE = 4.0


def phantom(rng, n=4000):
    """A row of voxels, a quarter background, then GM, WM and CSF in equal runs; returns the
    intensities and each voxel's true tissue (0 background, 1 GM, 2 WM, 3 CSF)."""
    truth = np.repeat([0, 1, 2, 3], n // 4)
    image = np.array([0.0, MEANS["GM"], MEANS["WM"], MEANS["CSF"]])[truth]
    image = image + rng.normal(0, NOISE, n) * (truth > 0)
    return image.astype(np.float32), truth


def fine_probs(tissue_probs):
    """``(n, 4)`` background/GM/WM/CSF -> fine classes: GM split 3:1 into cortex and deep
    GM, WM all cerebral WM, CSF all extracerebral CSF."""
    out = np.zeros((len(tissue_probs), len(FINE)), np.float32)
    out[:, FINE.index("BG")] = tissue_probs[:, 0]
    out[:, FINE.index("cGM")] = 0.75 * tissue_probs[:, 1]
    out[:, FINE.index("dGM")] = 0.25 * tissue_probs[:, 1]
    out[:, FINE.index("WM")] = tissue_probs[:, 2]
    out[:, FINE.index("eCSF")] = tissue_probs[:, 3]
    return out


def test_em_recovers_the_tissue_intensities_from_a_vague_prior():
    rng = np.random.default_rng(0)
    image, truth = phantom(rng)
    brain = truth > 0
    # the networks are right but vague: 0.5 on the true tissue, 0.25 on each other
    prior = np.full((brain.sum(), 3), 0.25)
    prior[np.arange(brain.sum()), truth[brain] - 1] = 0.5
    _, fit = fit_tissues(image[brain].astype(np.float64), prior, np.ones(brain.sum()))
    assert fit["mean"] == pytest.approx([MEANS["GM"], MEANS["WM"], MEANS["CSF"]], abs=0.5)
    assert fit["sd"] == pytest.approx([NOISE] * 3, abs=0.5)
    assert 2 <= fit["iterations"] < 50


def test_the_intensities_decide_where_the_networks_hesitate_and_not_where_they_are_sure():
    rng = np.random.default_rng(1)
    image, truth = phantom(rng)
    tissue = np.zeros((len(truth), 4), np.float32)
    tissue[np.arange(len(truth)), truth] = 0.9
    tissue[np.arange(len(truth)), (truth % 3) + 1] += 0.1     # the rest on another tissue
    hesitant, sure = np.arange(1000, 1100), np.arange(1100, 1105)   # GM voxels
    tissue[hesitant, 1:] = [0.55, 0.0, 0.45]                  # GM or CSF: near a tie
    image[hesitant] = MEANS["CSF"]                            # and their intensity is CSF's
    tissue[sure, 1:] = [0.99, 0.0, 0.01]                      # sure of GM
    image[sure] = MEANS["CSF"]                                # a CSF intensity, 10 SDs away
    fused = fine_probs(tissue)
    refined, fit = refine(fused.copy(), image, refinement_grouping("fine"))
    labels = (refined @ refinement_grouping("fine")).argmax(axis=1)
    assert (labels[hesitant] == 3).all()                      # the intensity wins the tie
    # sure voxels: 0.99 ** 6 / 0.01 ** 6 = 1e12 outweighs a 10-SD likelihood ratio (~1e-11)
    assert (labels[sure] == 1).all()
    untouched = np.setdiff1d(np.arange(len(truth)), np.r_[hesitant, sure])
    assert (labels[untouched] == truth[untouched]).all()
    # kept: each voxel's background, its total, and each tissue's split into fine classes
    assert np.array_equal(refined[:, 0], fused[:, 0])
    assert np.allclose(refined.sum(axis=1), 1.0, atol=1e-5)
    cortex, deep = refined[:, FINE.index("cGM")], refined[:, FINE.index("dGM")]
    assert np.allclose(cortex, 3 * deep, atol=1e-6)
    assert fit["mean"][2] == pytest.approx(MEANS["CSF"], abs=1.0)


def test_labels_follow_the_sharpened_prior_and_probabilities_stay_as_soft():
    rng = np.random.default_rng(2)
    image, truth = phantom(rng, 400)
    tissue = rng.dirichlet(np.ones(4), size=len(truth)).astype(np.float32)
    tissue[:, 0] = 0.0
    tissue /= tissue.sum(axis=1, keepdims=True)
    fused = fine_probs(tissue)
    groups = refinement_grouping("fine")
    refined, fit = refine(fused.copy(), image, groups)
    # the written probabilities are p * L ** (1 / exponent); their argmax is that of
    # p ** exponent * L, and they stay within a factor of the networks' own
    out = refined @ groups
    mean, sd = np.array(fit["mean"]), np.array(fit["sd"])
    log_l = -0.5 * ((image[:, None] - mean) / sd) ** 2 - np.log(sd)
    sharp = PRIOR_EXPONENT * np.log(tissue[:, 1:]) + log_l
    assert np.array_equal(out[:, 1:].argmax(axis=1), sharp.argmax(axis=1))
    assert (out[:, 1:].argmax(axis=1) != tissue[:, 1:].argmax(axis=1)).any()
    ratio = out[:, 1:] / tissue[:, 1:]
    assert ratio.max() / ratio.min() < 50
    # a flat image has a flat likelihood: nothing changes
    flat, _ = refine(fused.copy(), np.full(image.shape, 7.0, np.float32), groups)
    assert np.allclose(flat, fused, atol=1e-6)
    assert PRIOR_EXPONENT > 1


def test_no_brain_and_a_wrong_grid():
    fused = np.zeros((3, 4, len(FINE)), np.float32)
    fused[..., 0] = 1.0
    out, fit = refine(fused.copy(), np.ones((3, 4), np.float32), refinement_grouping("fine"))
    assert fit == {} and np.array_equal(out, fused)
    with pytest.raises(ValueError, match="image shape"):
        refine(fused, np.ones((3, 5), np.float32), refinement_grouping("fine"))


def test_legacy_networks_are_grouped_into_the_mrbrains_tissues():
    eight = refinement_grouping("8label")
    classes = TASK_CLASSES["8label"]
    assert eight[classes.index("BG-basal")].tolist() == [0, 1, 0, 0]
    assert eight[classes.index("CB")].tolist() == [1, 0, 0, 0]   # background in 3label
    assert np.array_equal(refinement_grouping("3label"), np.eye(4))


def _save(data, path, dtype=np.float32):
    nib.save(nib.Nifti1Image(np.asarray(data, dtype), np.eye(4)), str(path))
    return str(path)


def test_convention_maps_refine_from_the_reference_image_unless_told_not_to(tmp_path):
    rng = np.random.default_rng(3)
    image, truth = phantom(rng, 4 * 600)
    tissue = np.full((len(truth), 4), 0.02, np.float32)
    tissue[np.arange(len(truth)), truth] = 0.94
    hesitant = np.arange(600, 640)                       # GM voxels with a CSF intensity
    tissue[hesitant] = [0.02, 0.5, 0.02, 0.46]
    image[hesitant] = MEANS["CSF"]
    shape = (40, 6, 10)
    fused = fine_probs(tissue).reshape(*shape, len(FINE))
    files = {"probs": _save(fused, tmp_path / "fused.nii.gz"),
             "reference": _save(image.reshape(shape), tmp_path / "t1w.nii.gz"),
             "template": _save(np.ones(shape), tmp_path / "tiv.nii.gz", np.uint8)}
    dsegs = {}
    for refine_it in (True, False):
        cwd = tmp_path / str(refine_it)
        cwd.mkdir()
        out = ConventionMaps(in_probs=files["probs"], networks="fine", convention="wholebrain",
                             reference=files["reference"], template_tiv=files["template"],
                             refine=refine_it).run(cwd=cwd).outputs
        dsegs[refine_it] = np.asarray(nib.load(out.out_dseg).dataobj).reshape(-1)
        assert bool(out.refinement) == refine_it
    assert (dsegs[False][hesitant] == 1).all() and (dsegs[True][hesitant] == 3).all()
    others = np.setdiff1d(np.arange(len(truth)), hesitant)
    assert np.array_equal(dsegs[True][others], dsegs[False][others])
    plain = segment(fused, "fine", "wholebrain", np.ones(shape), (1, 1, 1))
    assert np.array_equal(plain.dseg.reshape(-1), dsegs[False]) and plain.refinement is None


def test_the_refinement_is_on_unless_no_refine(tmp_path):
    base = [str(tmp_path), str(tmp_path / "out"), "participant"]
    assert _settings_from_args(build_parser().parse_args(base)).refine
    assert not _settings_from_args(build_parser().parse_args([*base, "--no-refine"])).refine
