"""Inference precision: the host check, its record, and bfloat16 against float32 with the
shipped networks on real images."""

import nibabel as nib
import numpy as np
import pytest
import torch

from mixnet_bids.cli.parser import build_parser
from mixnet_bids.conventions import convention_probabilities
from mixnet_bids.evaluation.metrics import tissue_dice
from mixnet_bids.inference.planes import PLANES, canonical_zooms, to_canonical
from mixnet_bids.inference.precision import (
    AGREEMENT_DICE,
    choose_precision,
    label_agreement,
    native_bfloat16,
)
from mixnet_bids.inference.predict import DEFAULT_PLANE_WEIGHTS, autocast, fuse, predict_plane
from mixnet_bids.inference.weights import load_model, networks_for
from mixnet_bids.labels import TASK_CLASSES
from mixnet_bids.preprocessing import head_mask, zscore

CPU = torch.device("cpu")
#: Smallest Dice per tissue between the bfloat16 and the float32 fused segmentation of a
#: real subject with the shipped networks.
SUBJECT_DICE = 0.995


def shipped(task="wholebrain"):
    return networks_for(task, list(PLANES), "v3")[1]


def test_precision_option_and_autocast():
    parser = build_parser()
    assert parser.parse_args(["b", "o", "participant"]).precision == "auto"
    assert parser.parse_args(["b", "o", "participant", "--precision", "bfloat16"]
                             ).precision == "bfloat16"
    with pytest.raises(SystemExit):
        parser.parse_args(["b", "o", "participant", "--precision", "float16"])
    with autocast("bfloat16"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with autocast("float32"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    with pytest.raises(ValueError, match="float16"):
        autocast("float16")


def test_float32_asked_for_runs_no_check():
    choice, record = choose_precision("float32", shipped(), CPU)
    assert choice == "float32" and "agreement" not in record
    assert record["requested"] == "float32" and record["layout"] == "channels_last"
    with pytest.raises(ValueError, match="float16"):
        choose_precision("float16", shipped(), CPU)


def test_auto_takes_bfloat16_only_where_native_and_in_agreement():
    choice, record = choose_precision("auto", shipped(), CPU)
    assert record["native_bfloat16"] == native_bfloat16(CPU)
    if not record["native_bfloat16"]:
        assert choice == "float32" and "agreement" not in record
    else:
        assert set(record["agreement"]) == set(PLANES)
        assert choice == ("bfloat16" if record["worst_dice"] >= AGREEMENT_DICE else "float32")


@pytest.mark.parametrize("convention", ["wholebrain", "3label"])
def test_shipped_networks_agree_in_bfloat16_on_the_template(convention):
    """Each plane's shipped network labels the middle slices of the MNI152 T1w alike in
    bfloat16 and float32, in the classes the app writes (computed natively or emulated, the
    arithmetic is the same)."""
    task, files = networks_for(convention, list(PLANES), "v3")
    models = {plane: load_model(path)[0] for plane, path in files.items()}
    agreement = label_agreement(models, CPU, task, convention)
    assert set(agreement) == set(PLANES)
    for plane, scores in agreement.items():
        # background, GM, WM and CSF fill those slices: each of them is scored
        assert set(scores) == {"BG", "GM", "WM", "CSF"}, (plane, scores)
        assert min(scores.values()) >= AGREEMENT_DICE, (plane, scores)


def test_the_check_scores_the_run_convention_or_the_networks_own_classes():
    files = shipped("wholebrain")
    task = load_model(files["axial"])[1]["task"]
    own = label_agreement({"axial": load_model(files["axial"])[0]}, CPU, task)["axial"]
    assert set(own) <= set(TASK_CLASSES[task]) and {"BG", "WM"} <= set(own)
    _, record = choose_precision("bfloat16" if native_bfloat16(CPU) else "auto",
                                 {"axial": files["axial"]}, CPU, "3label")
    if record["native_bfloat16"]:
        assert record["agreement_classes"] == "3label"
        assert set(record["agreement"]["axial"]) <= {"BG", "GM", "WM", "CSF"}


@pytest.mark.slow
@pytest.mark.shared_data
def test_bfloat16_segmentation_of_a_real_subject_agrees_with_float32(mrbrains_dir):
    """MRBrainS subject 1 (T1w, IR, FLAIR; z-scored in the head mask, no N4): the fused
    whole-brain tissue segmentation in bfloat16 agrees with float32 to Dice >= SUBJECT_DICE."""
    folder = mrbrains_dir / "1" / "orig"
    images = [nib.load(str(folder / name)) for name in ("reg_T1.nii.gz", "IR.nii.gz",
                                                        "FLAIR.nii.gz")]
    data = [img.get_fdata(dtype=np.float32) for img in images]
    head = np.logical_or.reduce([head_mask(d) for d in data])
    stack = np.stack([zscore(d, head) for d in data], axis=-1)
    image, affine = to_canonical(stack, images[0].affine)
    mask, _ = to_canonical(head, images[0].affine)
    task, files = networks_for("wholebrain", list(PLANES), "v3")
    labels = {}
    for precision in ("float32", "bfloat16"):
        probs = {plane: predict_plane(load_model(path)[0], image, mask,
                                      canonical_zooms(affine), plane, precision=precision)
                 for plane, path in files.items()}
        fused = fuse(probs, DEFAULT_PLANE_WEIGHTS)
        labels[precision] = convention_probabilities(fused, task, "wholebrain").argmax(-1)
    scores = tissue_dice(labels["bfloat16"], labels["float32"])
    assert all(score >= SUBJECT_DICE for score in scores.values()), scores
