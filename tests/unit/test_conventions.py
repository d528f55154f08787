"""Output conventions: which networks serve them, how their classes are derived, honest
volumes (never above the TIV) and the zero background, on small real NIfTI files."""

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from helpers import bids_skeleton, random_weights

from mixnet_bids.cli.parser import build_parser
from mixnet_bids.cli.run import _settings_from_args, main
from mixnet_bids.config import Settings
from mixnet_bids.conventions import (
    convention_probabilities,
    segment,
    stripping_rule,
    tiv_mask,
)
from mixnet_bids.derivatives import dseg_lookup
from mixnet_bids.inference.planes import PLANES
from mixnet_bids.inference.weights import (
    WeightsError,
    default_convention,
    networks_for,
    weight_path,
)
from mixnet_bids.interfaces.preproc import SignalMask
from mixnet_bids.interfaces.tissue import ConventionMaps, TissueVolumes
from mixnet_bids.labels import TASK_CLASSES, TISSUES
from mixnet_bids.preprocessing import signal_mask

FINE = TASK_CLASSES["fine"]
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])
VOXEL_ML = 8 / 1000


def save(data, path, dtype=np.float32):
    nib.save(nib.Nifti1Image(np.asarray(data).astype(dtype), AFFINE), str(path))
    return str(path)


def load(path):
    return np.asarray(nib.load(path).dataobj)


# --- which networks serve a convention ------------------------------------------------

def test_legacy_networks_serve_their_own_convention_and_wholebrain_needs_fine(tmp_path):
    folder = random_weights(random_weights(tmp_path / "w", "3label"), "8label")
    for convention in ("3label", "8label"):
        networks, files = networks_for(convention, list(PLANES), "v3", folder)
        assert networks == convention
        assert files == {p: weight_path(convention, p, "v3", folder) for p in PLANES}
    with pytest.raises(WeightsError) as err:
        networks_for("wholebrain", list(PLANES), "v3", folder)
    message = str(err.value)
    assert "\n" not in message and str(folder) in message
    assert "--task wholebrain needs fine networks" in message and "--task 3label" in message
    assert default_convention(list(PLANES), "v3", folder) == "3label"


def test_fine_networks_serve_every_convention_once_every_plane_has_one(tmp_path):
    folder = random_weights(tmp_path / "w", "3label")
    random_weights(folder, "fine", planes=("axial",))
    # a plane without a fine network: the convention's own networks, for every plane
    assert networks_for("3label", list(PLANES), "v3", folder)[0] == "3label"
    assert networks_for("3label", ["axial"], "v3", folder)[0] == "fine"
    random_weights(folder, "fine")
    for convention in ("wholebrain", "3label", "8label"):
        networks, files = networks_for(convention, ["sagittal", "axial"], "v3", folder)
        assert networks == "fine"
        assert [f.name for f in files.values()] == ["mixnet_v3_fine_sagittal.pt",
                                                   "mixnet_v3_fine_axial.pt"]
    assert default_convention(list(PLANES), "v3", folder) == "wholebrain"


def test_the_default_task_follows_the_installed_networks(tmp_path):
    shipped_fine = all(weight_path("fine", p, "v3").is_file() for p in PLANES)
    args = build_parser().parse_args([str(tmp_path), str(tmp_path / "o"), "participant"])
    assert _settings_from_args(args).task == ("wholebrain" if shipped_fine else "3label")
    fine = random_weights(tmp_path / "fine", "fine")
    args = build_parser().parse_args([str(tmp_path), str(tmp_path / "o"), "participant",
                                      "--weights-dir", str(fine)])
    assert _settings_from_args(args).task == "wholebrain"
    # the same default for a run built in Python, and an explicit task stays
    legacy = random_weights(tmp_path / "legacy")
    assert Settings(tmp_path, tmp_path / "o", tmp_path / "w", weights_dir=fine).task == \
        "wholebrain"
    assert Settings(tmp_path, tmp_path / "o", tmp_path / "w", weights_dir=legacy).task == \
        "3label"
    assert Settings(tmp_path, tmp_path / "o", tmp_path / "w", weights_dir=fine,
                    task="8label").task == "8label"


def test_wholebrain_without_fine_networks_is_one_line_and_exit_2(tmp_path, capsys):
    bids = bids_skeleton(tmp_path / "bids", {"01": ["T1w"]})
    legacy = random_weights(tmp_path / "w", "3label")
    code = main([str(bids), str(tmp_path / "out"), "participant", "--skip-bids-validation",
                 "--task", "wholebrain", "--weights-dir", str(legacy)])
    assert code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "--task wholebrain needs fine networks" in errors[0]
    assert str(legacy) in errors[0]
    assert not (tmp_path / "out").exists()


def test_a_sidecar_of_another_task_is_refused_by_name(tmp_path, capsys):
    bids = bids_skeleton(tmp_path / "bids", {"01": ["T1w"]})
    folder = random_weights(tmp_path / "w", "3label")
    sidecar = weight_path("3label", "axial", "v3", folder).with_suffix(".json")
    sidecar.write_text(sidecar.read_text().replace('"task": "3label"', '"task": "8label"'))
    code = main([str(bids), str(tmp_path / "out"), "participant", "--skip-bids-validation",
                 "--task", "3label", "--weights-dir", str(folder)])
    assert code == 2
    assert f"{sidecar}: says task '8label', but the file name says '3label'" in \
        capsys.readouterr().err


# --- classes of each convention -------------------------------------------------------

def one_hot_fine(shape=(len(FINE), 3, 4)):
    """Fused fine probabilities: row i of the first axis is fine class i at 0.9."""
    probs = np.full(shape + (len(FINE),), 0.1 / (len(FINE) - 1), np.float32)
    for i in range(len(FINE)):
        probs[i, ..., i] = 0.9
    return probs


@pytest.mark.parametrize("convention,expected", [
    # BG cGM dGM WM WMH eCSF VEN cbGM cbWM BS
    ("wholebrain", [0, 1, 1, 2, 2, 3, 3, 1, 2, 2]),
    ("3label", [0, 1, 1, 2, 2, 3, 3, 0, 0, 0]),
    ("8label", [0, 1, 2, 3, 4, 5, 6, 7, 7, 8]),
])
def test_fine_networks_give_each_convention_through_the_interface(tmp_path, convention,
                                                                   expected):
    probs = save(one_hot_fine(), tmp_path / "fused.nii.gz")
    template = save(np.ones((len(FINE), 3, 4)), tmp_path / "tiv.nii.gz", np.uint8)
    out = ConventionMaps(in_probs=probs, networks="fine", convention=convention,
                         template_tiv=template, reference=template).run(cwd=tmp_path).outputs
    dseg = load(out.out_dseg)
    assert dseg[:, 0, 0].tolist() == expected
    assert (dseg == dseg[:, :1, :1]).all()
    assert nib.load(out.out_probs).shape[-1] == max(expected) + 1
    assert np.allclose(load(out.out_probs).sum(-1), 1, atol=1e-5)
    assert out.structure_names == ["cerebellum", "brainstem"]
    cerebellum, brainstem = (load(f) for f in out.out_structures)
    assert np.allclose(cerebellum[FINE.index("cbGM")], 0.9 + 0.1 / 9, atol=1e-5)
    assert np.allclose(brainstem[FINE.index("BS")], 0.9, atol=1e-5)
    gm = load(out.out_probsegs[0])[:, 0, 0]
    if convention == "wholebrain":  # the cerebellar cortex counts as GM
        assert gm[FINE.index("cbGM")] > 0.9
    else:                           # the MRBrainS tissues leave it out
        assert gm[FINE.index("cbGM")] < 0.1
    if convention == "8label":      # the 3-tissue labels come along
        assert load(out.out_tissue_dseg)[:, 0, 0].tolist() == [0, 1, 1, 2, 2, 3, 3, 0, 0, 0]


def test_legacy_networks_keep_their_classes_and_have_no_structures_or_other_conventions():
    probs = np.random.default_rng(0).dirichlet(np.ones(9), size=(4, 5, 3)).astype(np.float32)
    three = convention_probabilities(probs, "8label", "3label")
    assert np.allclose(three[..., 1], probs[..., 1] + probs[..., 2])  # cortex + basal ganglia
    assert np.allclose(three[..., 0], probs[..., [0, 7, 8]].sum(-1))  # CB, BS background
    result = segment(probs, "8label", "8label", np.ones((4, 5, 3)), (1, 1, 1))
    assert np.array_equal(result.dseg, probs.argmax(-1))
    assert np.array_equal(result.tissue_dseg, three.argmax(-1))
    assert set(result.structures) == {"cerebellum", "brainstem"}
    three_nets = segment(probs[..., :4] / probs[..., :4].sum(-1, keepdims=True), "3label",
                         "3label", np.ones((4, 5, 3)), (1, 1, 1))
    assert three_nets.structures == {} and three_nets.tissue_dseg is None
    with pytest.raises(ValueError, match="3label networks cannot give the wholebrain"):
        convention_probabilities(probs[..., :4], "3label", "wholebrain")


def test_dseg_lookup_says_which_voxels_each_class_covers():
    whole = dseg_lookup("wholebrain").splitlines()
    assert whole[0] == "index\tname\tabbreviation"
    assert [row.split("\t")[2] for row in whole[1:]] == ["BG", "GM", "WM", "CSF"]
    assert whole[2].split("\t")[1] == "Gray matter = cerebral cortex + deep gray matter " \
        "(basal ganglia, thalamus) + cerebellar cortex"
    assert "cerebellar white matter" in whole[3] and "brain stem" in whole[3]
    assert whole[4].split("\t")[1] == "Cerebrospinal fluid = extracerebral csf + ventricles"
    mrbrains = dseg_lookup("3label").splitlines()
    assert [row.split("\t")[2] for row in mrbrains[1:]] == ["BG", "GM", "WM", "CSF"]
    assert "cerebellar cortex" in mrbrains[1] and "brain stem" in mrbrains[1]  # background
    assert "cerebellar" not in mrbrains[2] and "brain stem" not in mrbrains[3]
    assert "cerebellar" not in mrbrains[3]
    assert "Cerebellum = cerebellar cortex + cerebellar white matter" in dseg_lookup("8label")


# --- honest volumes -------------------------------------------------------------------

def test_volumes_never_exceed_the_tiv_and_fractions_sum_to_at_most_1(tmp_path):
    """Random fine probabilities with tissue everywhere, and a template mask that covers a
    small part of the image: without the TIV definition, GM + WM + CSF would exceed it."""
    shape = (14, 12, 10)
    rng = np.random.default_rng(1)
    fused = rng.dirichlet(np.full(len(FINE), 0.3), size=shape).astype(np.float32)
    fused[..., 0] *= 0.5
    fused /= fused.sum(-1, keepdims=True)
    template = np.zeros(shape, np.uint8)
    template[4:10, 3:9, 3:7] = 1
    assert (1 - fused[..., 0]).sum() > template.sum()  # tissue beyond the template mask
    files = {"probs": save(fused, tmp_path / "fused.nii.gz"),
             "template": save(template, tmp_path / "template.nii.gz", np.uint8)}
    for convention in ("wholebrain", "3label", "8label"):
        cwd = tmp_path / convention
        cwd.mkdir()
        maps = ConventionMaps(in_probs=files["probs"], networks="fine", convention=convention,
                              template_tiv=files["template"], reference=files["template"],
                              ).run(cwd=cwd).outputs
        tiv, dseg = load(maps.out_tiv) > 0, load(maps.out_dseg)
        brain = (fused[..., 0] < 0.5) | (dseg > 0)
        assert tiv[brain].all()  # the TIV holds the brain, and adds only template voxels
        assert not tiv[~brain & (template == 0)].any()
        vol = TissueVolumes(probsegs=maps.out_probsegs, structures=maps.out_structures,
                            structure_names=maps.structure_names, tiv_mask=maps.out_tiv,
                            dseg=maps.out_dseg, uncertainty=maps.out_uncertainty,
                            convention=convention, subject="01").run(cwd=cwd).outputs
        row = pd.read_csv(vol.out_tsv, sep="\t").iloc[0]
        assert row["TIV_ml"] == pytest.approx(tiv.sum() * VOXEL_ML)
        assert row["GM_ml"] + row["WM_ml"] + row["CSF_ml"] <= row["TIV_ml"] + 1e-4
        assert row["brain_ml"] <= row["TIV_ml"] + 1e-4
        fractions = [row[f"{t}_fraction"] for t in TISSUES]
        assert all(0 <= f <= 1 for f in fractions) and sum(fractions) <= 1 + 1e-4
        for tissue, path in zip(TISSUES, maps.out_probsegs):
            prob = load(path)
            assert (prob[~tiv] == 0).all()
            assert row[f"{tissue}_ml"] == pytest.approx(prob.sum() * VOXEL_ML, abs=1e-4)
        assert {"cerebellum_ml", "brainstem_ml"} <= set(row.index)
        # one volume definition: no voxel counts beside the mL
        assert not [c for c in row.index if c.endswith("_voxels")]
        described = vol.metadata
        assert set(row.index) <= set(described)
        assert "probability-weighted" in described["GM_ml"]["Description"]
        if convention == "wholebrain":
            assert "cerebellar cortex" in described["GM_ml"]["Description"]
            assert "included in GM_ml and WM_ml" in described["cerebellum_ml"]["Description"]
        else:
            assert "cerebellar cortex" not in described["GM_ml"]["Description"]
            assert "background in the 3label" in described["cerebellum_ml"]["Description"]


def test_the_template_adds_to_the_tiv_only_near_the_brain():
    """A brain of x = 10..19 and a template mask grown over x = 2..39 (a registration that
    scaled it up): the TIV is the brain plus the template within 3 mm, in mm of each axis."""
    shape = (50, 3, 3)
    brain = np.zeros(shape)
    brain[10:20] = 0.9
    template = np.zeros(shape, np.uint8)
    template[2:40] = 1
    no_tissue = np.zeros(shape, np.uint8)
    tiv = tiv_mask(template, brain, no_tissue, (1.0, 1.0, 1.0), reach_mm=3.0)
    assert np.flatnonzero(tiv[:, 1, 1]).tolist() == list(range(7, 23))
    coarse = tiv_mask(template, brain, no_tissue, (2.0, 1.0, 1.0), reach_mm=3.0)
    assert np.flatnonzero(coarse[:, 1, 1]).tolist() == list(range(9, 21))  # 1 voxel of 2 mm
    # voxel sizes read from an affine carry float noise: the rim at exactly 3 mm stays
    noisy = tiv_mask(template, brain, no_tissue, (1.0000001, 0.9999999, 1.0), reach_mm=3.0)
    assert np.array_equal(noisy, tiv)
    # tissue the dseg labels counts as brain even below 0.5; the template beyond 3 mm of all
    # brain is not added
    dseg = np.zeros(shape, np.uint8)
    dseg[45] = 2
    far = tiv_mask(template, brain, dseg, (1.0, 1.0, 1.0))
    assert far[45].all() and far[7:23].all()
    assert not far[2:7].any() and not far[23:45].any()  # template or not, beyond 3 mm
    assert np.array_equal(tiv_mask(template, np.zeros(shape), no_tissue, (1, 1, 1)),
                          template > 0)  # no brain found: the template mask


def test_convention_maps_take_the_tiv_rim_in_mm_of_the_probabilities_grid(tmp_path):
    """Brain in x 8..11, z 4..5 on 1 x 1 x 3 mm voxels, a template mask over everything: the
    written TIV adds 3 voxels in x and 1 slice in z."""
    shape, affine = (20, 6, 10), np.diag([1.0, 1.0, 3.0, 1.0])
    fused = np.zeros(shape + (len(FINE),), np.float32)
    fused[..., 0] = 1.0
    fused[8:12, :, 4:6] = 0.0
    fused[8:12, :, 4:6, FINE.index("WM")] = 1.0
    for name, data, dtype in (("fused", fused, np.float32),
                              ("template", np.ones(shape), np.uint8)):
        nib.save(nib.Nifti1Image(data.astype(dtype), affine), str(tmp_path / f"{name}.nii.gz"))
    maps = ConventionMaps(in_probs=str(tmp_path / "fused.nii.gz"), networks="fine",
                          convention="wholebrain", template_tiv=str(tmp_path / "template.nii.gz"),
                          reference=str(tmp_path / "template.nii.gz")).run(cwd=tmp_path).outputs
    tiv = load(maps.out_tiv) > 0
    assert np.flatnonzero(tiv[:, 2, 4]).tolist() == list(range(5, 15))
    assert np.flatnonzero(tiv[9, 2, :]).tolist() == [3, 4, 5, 6]


def test_3label_networks_report_no_structure_columns(tmp_path):
    shape = (8, 6, 5)
    fused = np.random.default_rng(2).dirichlet(np.ones(4), size=shape).astype(np.float32)
    template = save(np.ones(shape), tmp_path / "t.nii.gz", np.uint8)
    maps = ConventionMaps(in_probs=save(fused, tmp_path / "fused.nii.gz"), networks="3label",
                          convention="3label", template_tiv=template, reference=template,
                          ).run(cwd=tmp_path).outputs
    assert maps.out_structures == [] and maps.structure_names == []
    vol = TissueVolumes(probsegs=maps.out_probsegs, tiv_mask=maps.out_tiv, dseg=maps.out_dseg,
                        uncertainty=maps.out_uncertainty, convention="3label", subject="01",
                        session="A").run(cwd=tmp_path).outputs
    row = pd.read_csv(vol.out_tsv, sep="\t").iloc[0]
    assert row["session_id"] == "ses-A"
    assert "cerebellum_ml" not in row.index and "brainstem_ml" not in row.index
    assert row["GM_ml"] == pytest.approx(fused[..., 1].sum() * VOXEL_ML, abs=1e-4)


# --- the zero background --------------------------------------------------------------

def test_signal_mask_drops_the_zero_background_and_keeps_enclosed_zeros(tmp_path):
    data = np.zeros((12, 12, 8), np.int16)
    data[2:10, 2:10, 2:6] = 50           # the stripped brain
    data[5:7, 5:7, 3:5] = 0              # dark voxels inside it (an integer CSF)
    data[0, 0, 0] = 7                    # a non-zero voxel on the border
    mask = signal_mask(data)
    assert mask[2:10, 2:10, 2:6].all()   # the enclosed zeros may be tissue
    assert mask[0, 0, 0] and mask.sum() == 8 * 8 * 4 + 1
    path = save(data, tmp_path / "t1.nii.gz", np.int16)
    out = SignalMask(in_file=path).run(cwd=tmp_path).outputs.out_file
    assert np.array_equal(load(out) > 0, mask)


def test_signal_mask_without_a_zero_background():
    assert signal_mask(np.ones((5, 6, 4))).all()              # no zeros at all
    assert not signal_mask(np.zeros((5, 6, 4))).any()         # nothing but background
    inside = np.ones((5, 6, 4))
    inside[2, 2:4, 1:3] = 0                                   # zeros that touch no border
    assert signal_mask(inside).all()


def test_zero_background_of_a_skull_stripped_input_is_never_tissue(tmp_path):
    """Random fine probabilities say tissue everywhere; voxels exactly 0 in every input
    (outside the stripped brain of the T1w and outside the FLAIR's slab) get none."""
    shape = (12, 12, 8)
    t1w = np.zeros(shape, np.float32)
    t1w[2:10, 2:10, 2:6] = 80.0
    flair = np.zeros(shape, np.float32)
    flair[1:11, 1:11, 4:7] = 40.0        # another input with signal outside the T1w's brain
    masks = [save(signal_mask(img), tmp_path / f"{n}.nii.gz", np.uint8)
             for n, img in (("t1w", t1w), ("flair", flair))]
    fused = np.random.default_rng(3).dirichlet(np.ones(len(FINE)), size=shape)
    probs = save(fused, tmp_path / "fused.nii.gz")
    template = save(np.ones(shape), tmp_path / "template.nii.gz", np.uint8)
    out = ConventionMaps(in_probs=probs, networks="fine", convention="wholebrain",
                         template_tiv=template, signal_masks=masks, reference=template,
                         ).run(cwd=tmp_path).outputs
    background = (t1w == 0) & (flair == 0)
    assert background.any() and (~background).any()
    assert (load(out.out_dseg)[background] == 0).all()
    for path in [*out.out_probsegs, *out.out_structures]:
        prob = load(path)
        assert (prob[background] == 0).all()
        assert (prob[~background] > 0).all()  # elsewhere the networks' own probabilities
    assert np.allclose(load(out.out_probs)[background, 0], 1.0)
    assert load(out.out_uncertainty)[background].max() < 1e-4
    assert (load(out.out_dseg)[~background] > 0).mean() > 0.5


# --- skull-stripped inputs: the stripping tool's brain is the brain --------------------

def _stripped_case():
    """A 12 x 12 x 8 grid whose signal is a brain-sized box off the border; the networks
    call its outer shell background, and one voxel background with certainty."""
    shape = (12, 12, 8)
    signal = np.zeros(shape, bool)
    signal[2:10, 2:10, 2:6] = True
    fused = np.random.default_rng(5).dirichlet(np.ones(len(FINE)), size=shape)
    shell = signal & ~np.pad(np.ones((6, 6, 2), bool), ((3, 3), (3, 3), (3, 3)))
    fused[shell, 0] = 50.0                            # the networks: mostly background
    fused /= fused.sum(axis=-1, keepdims=True)
    fused[2, 2, 2] = 0.0
    fused[2, 2, 2, 0] = 1.0                           # certain background, no brain at all
    return fused.astype(np.float32), signal, shell


def test_in_a_stripped_input_every_voxel_of_the_signal_is_tissue():
    fused, signal, shell = _stripped_case()
    template = np.ones(signal.shape, bool)             # would grow the TIV everywhere
    seg = segment(fused, "fine", "wholebrain", template, (2.0, 2.0, 2.0), signal,
                  stripped=True)
    assert (seg.dseg[signal] > 0).all() and (seg.dseg[~signal] == 0).all()
    assert np.array_equal(seg.tiv, signal)           # the TIV is the stripping tool's brain
    total = sum(seg.tissues.values())
    assert np.allclose(total[signal], 1.0, atol=1e-5) and (total[~signal] == 0).all()
    # the brain classes keep the networks' proportions where the networks give any brain
    voxel = (2, 5, 3)
    brain = fused[voxel][1:]
    gm = brain[[FINE.index(c) - 1 for c in ("cGM", "dGM", "cbGM")]].sum() / brain.sum()
    assert shell[voxel] and fused[voxel + (0,)] > 0.5 and seg.dseg[voxel] > 0
    assert seg.tissues["GM"][voxel] == pytest.approx(gm, rel=1e-4)
    # with no brain probability at all, each tissue takes a third
    for tissue in TISSUES:
        assert seg.tissues[tissue][2, 2, 2] == pytest.approx(1 / 3, rel=1e-5)
    # without the flag, the networks' background stays background
    networks = segment(fused, "fine", "wholebrain", template, (2.0, 2.0, 2.0), signal)
    assert (networks.dseg[shell] == 0).mean() > 0.9
    assert not np.array_equal(networks.tiv, signal)


def test_a_stripped_brain_needs_the_signal_and_fine_networks():
    fused, signal, _ = _stripped_case()
    with pytest.raises(ValueError, match="signal mask and fine networks"):
        segment(fused, "fine", "wholebrain", signal, (2.0, 2.0, 2.0), stripped=True)
    three = np.stack([fused[..., 0], fused[..., 1:4].sum(-1), fused[..., 4:7].sum(-1),
                      fused[..., 7:].sum(-1)], axis=-1)
    with pytest.raises(ValueError, match="got 3label networks"):
        segment(three, "3label", "3label", signal, (2.0, 2.0, 2.0), signal, stripped=True)


def test_the_stripping_rule_is_for_fine_networks():
    assert stripping_rule("fine") and not stripping_rule("fine", trust_stripping=False)
    assert not stripping_rule("3label") and not stripping_rule("8label")


@pytest.mark.parametrize("trust", [True, False])
def test_convention_maps_take_the_stripped_brain_unless_told_not_to(tmp_path, trust):
    fused, signal, shell = _stripped_case()
    probs = save(fused, tmp_path / "fused.nii.gz")
    template = save(np.ones(signal.shape), tmp_path / "template.nii.gz", np.uint8)
    stripped = save(signal, tmp_path / "stripped.nii.gz", np.uint8)
    head = signal.copy()
    head[:, :, :2] = True                             # a head the field of view cuts
    whole = save(head, tmp_path / "head.nii.gz", np.uint8)
    out = ConventionMaps(in_probs=probs, networks="fine", convention="wholebrain",
                         template_tiv=template, signal_masks=[stripped], reference=template,
                         trust_stripping=trust, refine=False).run(cwd=tmp_path).outputs
    assert out.skull_stripped is trust
    assert bool((load(out.out_dseg)[shell] > 0).all()) is trust
    # the volumes table says which voxels the TIV holds
    volumes = TissueVolumes(probsegs=out.out_probsegs, tiv_mask=out.out_tiv, dseg=out.out_dseg,
                            uncertainty=out.out_uncertainty, convention="wholebrain",
                            subject="01", skull_stripped=out.skull_stripped
                            ).run(cwd=tmp_path).outputs
    row = pd.read_csv(volumes.out_tsv, sep="\t").iloc[0]
    assert row["TIV_source"] == ("skull-stripping" if trust else "networks")
    assert row["TIV_ml"] == pytest.approx(load(out.out_tiv).sum() * 8 / 1000)
    for masks in ([whole], [stripped, whole]):   # a whole head among the inputs: no rule
        out = ConventionMaps(in_probs=probs, networks="fine", convention="wholebrain",
                             template_tiv=template, signal_masks=masks, reference=template,
                             trust_stripping=True).run(cwd=tmp_path).outputs
        assert out.skull_stripped is False and (load(out.out_dseg)[shell] == 0).mean() > 0.9


def test_ignore_stripping_is_a_flag():
    base = ["/data", "/out", "participant"]
    assert _settings_from_args(build_parser().parse_args(base)).trust_stripping
    assert not _settings_from_args(
        build_parser().parse_args([*base, "--ignore-stripping"])).trust_stripping
