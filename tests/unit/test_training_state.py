"""Training state that continues anywhere: compact checkpoints, a killed run resumed in a fresh
folder, the per-host precision check, recipes, the fine-class loss and state in git."""

import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import synthetic_subject
from torch import nn

from mixnet_bids.inference.planes import PLANES
from mixnet_bids.inference.weights import load_model, read_metadata, weight_path
from mixnet_bids.labels import (
    IGNORE_INDEX,
    TARGETS,
    TASK_CLASSES,
    convention_matrix,
    n_classes,
    target_codes,
    target_membership,
    to_convention,
)
from mixnet_bids.model import build_mixnet
from mixnet_bids.preprocessing import PREPROCESSING_VERSION
from mixnet_bids.training import precision as precision_module
from mixnet_bids.training.gitstate import commit_state, last_commit_time
from mixnet_bids.training.losses import CoarseLabelLoss, brain_edge
from mixnet_bids.training.precision import choose_precision, pick
from mixnet_bids.training.recipes import DEFAULT_RECIPE, RECIPES
from mixnet_bids.training.train import (
    RecipeMismatch,
    TrainConfig,
    check_same_preprocessing,
    host_precision,
    run_name,
    train_plane,
)

TESTS = Path(__file__).resolve().parents[1]
#: a tiny AdamW run of the fine task, as a separate process (so that it can be killed)
RUN = """
import sys
from helpers import synthetic_subject
from mixnet_bids.training.train import TrainConfig, train_plane
cfg = TrainConfig(plane="axial", task="fine", iterations=int(sys.argv[2]), batch_size=2,
                  crop=(32, 32), threads=1, checkpoint_every=1, optimizer="adamw", lr=1e-3,
                  schedule="cosine", p_t1w_only=0.25)
train_plane([synthetic_subject()], cfg, sys.argv[1], command="test")
"""


def _run(out: Path, iterations: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    return subprocess.Popen([sys.executable, "-c", RUN, str(out), str(iterations)], env=env)


def _iterations_logged(out: Path) -> int:
    log = out / "log.tsv"
    lines = log.read_text().splitlines()[1:] if log.exists() else []
    return int(lines[-1].split("\t")[0]) if lines else 0


def test_a_killed_run_resumed_in_a_fresh_folder_gives_the_same_weights(tmp_path):
    n = 12
    assert _run(tmp_path / "straight", n).wait(timeout=300) == 0
    # killed (SIGKILL: no chance to clean up) once half the iterations are checkpointed
    # (iteration k is logged after checkpoint k - 1 was written)
    killed = _run(tmp_path / "killed", n)
    deadline = time.monotonic() + 300
    while _iterations_logged(tmp_path / "killed") <= n // 2 and killed.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=60)
    stopped = torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=True)["iteration"]
    assert n // 2 <= stopped < n
    # a fresh clone holds what git holds: the run folder's files, copied elsewhere
    shutil.copytree(tmp_path / "killed", tmp_path / "clone")
    assert _run(tmp_path / "clone", n).wait(timeout=300) == 0
    a, meta = load_model(tmp_path / "straight" / "mixnet_v3_fine_axial.pt")
    b, _ = load_model(tmp_path / "clone" / "mixnet_v3_fine_axial.pt")
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert meta["iterations"] == n and meta["labels"] == list(TASK_CLASSES["fine"])


def test_the_checkpoint_keeps_optimizer_moments_in_bfloat16_and_stays_small(tmp_path):
    cfg = TrainConfig(plane="axial", task="fine", iterations=2, batch_size=2, crop=(32, 32),
                      threads=1, optimizer="adamw", lr=1e-3, stop_after=1,
                      checkpoint_every=1)
    checkpoint = train_plane([synthetic_subject()], cfg, tmp_path, command="test")
    state = torch.load(checkpoint, weights_only=True)
    moments = [v for s in state["optimizer"]["state"].values() for k, v in s.items()
               if k != "step"]
    assert moments and all(v.dtype == torch.bfloat16 for v in moments)
    assert all(v.dtype == torch.float32 for v in state["model"].values()
               if v.is_floating_point())
    # MixNetv3 with 10 classes: 1.2 MB of float32 weights + 2 x 0.6 MB of moments
    assert checkpoint.stat().st_size < 2.6e6


def test_recipes_name_every_setting_and_the_default_is_the_shipped_weights():
    default = RECIPES[DEFAULT_RECIPE]
    for plane in PLANES:
        shipped = read_metadata(weight_path("fine", plane, "v3"))
        settings = shipped["settings"]
        assert shipped["recipe"] == default.name and shipped["task"] == default.task
        assert (default.optimizer, default.lr, default.schedule, default.p_t1w_only) == (
            settings["optimizer"], settings["lr"], settings["schedule"],
            settings["p_t1w_only"])
        assert default.iterations[plane] == settings["iterations"]
    paper = RECIPES["paper"]
    assert (paper.optimizer, paper.lr, paper.schedule) == ("sgd", 2e-4, "paper")
    for recipe in RECIPES.values():
        cfg = TrainConfig.from_recipe(recipe, "coronal", threads=1)
        assert cfg.recipe == recipe.name and cfg.iterations == recipe.iterations["coronal"]
        assert cfg.task in TASK_CLASSES and cfg.precision == recipe.precision


def test_fine_targets_cover_both_label_sets():
    fine = TASK_CLASSES["fine"]
    covers = {t: {fine[k] for k in np.flatnonzero(row)}
              for t, row in enumerate(target_membership())}
    mrbrains = target_codes(np.arange(12), "mrbrains")
    assert covers[mrbrains[7]] == {"cbGM", "cbWM"} and covers[mrbrains[8]] == {"BS"}
    assert covers[mrbrains[2]] == {"dGM"} and list(mrbrains[9:]) == [IGNORE_INDEX] * 3
    brainweb = target_codes(np.arange(12), "brainweb")
    assert covers[brainweb[1]] == {"eCSF", "VEN"}
    assert covers[brainweb[2]] == {"cGM", "dGM", "cbGM"}
    assert covers[brainweb[3]] == {"WM", "WMH", "cbWM", "BS"}
    assert set(brainweb[[0, 4, 7, 10, 11]]) == {0}
    assert len(covers) == len(TARGETS)
    # every convention partitions the fine classes
    for name in ("wholebrain", "3label", "8label"):
        assert (convention_matrix(name).sum(axis=1) == 1).all(), name
    p = np.eye(10, dtype=np.float32)
    whole = np.argmax(to_convention(p, "wholebrain"), -1)
    mrb = np.argmax(to_convention(p, "3label"), -1)
    # cerebellar cortex: GM in the whole brain, background in the MRBrainS 3 labels
    assert whole[fine.index("cbGM")] == 1 and mrb[fine.index("cbGM")] == 0
    assert whole[fine.index("BS")] == 2 and mrb[fine.index("BS")] == 0


def test_the_coarse_label_loss_sums_the_covered_probabilities():
    # one pixel, three classes with probabilities 0.5, 0.3, 0.2
    logits = torch.log(torch.tensor([0.5, 0.3, 0.2])).reshape(1, 3, 1, 1)
    membership = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 1, 1]], bool)
    loss = CoarseLabelLoss(membership)
    assert loss(logits, torch.tensor([[[3]]])).item() == pytest.approx(-np.log(0.5))
    assert loss(logits, torch.tensor([[[0]]])).item() == pytest.approx(-np.log(0.5))
    assert loss(logits, torch.tensor([[[2]]])).item() == pytest.approx(-np.log(0.2))
    # two pixels, one ignored; weights average as in nn.CrossEntropyLoss
    two = torch.cat([logits, logits], dim=3)
    weighted = CoarseLabelLoss(membership, weights=[1.0, 1.0, 1.0, 3.0])
    assert weighted(two, torch.tensor([[[3, IGNORE_INDEX]]])).item() == pytest.approx(
        -np.log(0.5))
    assert weighted(two, torch.tensor([[[3, 1]]])).item() == pytest.approx(
        (3 * -np.log(0.5) + -np.log(0.3)) / 4)
    # with one class per target it is the cross-entropy
    x, y = torch.randn(2, 4, 5, 6), torch.randint(0, 4, (2, 5, 6))
    torch.testing.assert_close(CoarseLabelLoss(np.eye(4, dtype=bool))(x, y),
                               nn.functional.cross_entropy(x, y))


def test_the_brain_edge_is_both_sides_of_the_brain_background_border():
    row = torch.tensor([[[0, 0, 0, 1, 5, 5, 3]]])
    assert brain_edge(row, 1).tolist() == [[[False, False, True, True, False, False, False]]]
    assert brain_edge(row, 2).tolist() == [[[False, True, True, True, True, False, False]]]
    # an ignored pixel is inside the brain; the image's own edge is no border
    assert brain_edge(torch.tensor([[[0, IGNORE_INDEX, 2]]]), 1).tolist() == [
        [[True, True, False]]]
    assert not brain_edge(torch.full((1, 4, 4), 2), 1).any()
    # a square neighbourhood: the diagonal neighbour of a brain pixel is on the edge
    square = torch.zeros(1, 3, 3, dtype=torch.int64)
    square[0, 1, 1] = 1
    assert brain_edge(square, 1).all()


def test_the_edge_weight_multiplies_the_weight_of_the_pixels_near_the_border():
    # four pixels with probabilities 0.5, 0.3, 0.2; targets 0 0 0 1, edge width 1: the
    # last two pixels are near the border
    logits = torch.log(torch.tensor([0.5, 0.3, 0.2])).reshape(1, 3, 1, 1).expand(1, 3, 1, 4)
    targets = torch.tensor([[[0, 0, 0, 1]]])
    a, b = -np.log(0.5), -np.log(0.3)
    plain = CoarseLabelLoss(np.eye(3, dtype=bool))
    assert plain(logits, targets).item() == pytest.approx((3 * a + b) / 4)
    edged = CoarseLabelLoss(np.eye(3, dtype=bool), edge_weight=3.0, edge_width=1)
    assert edged(logits, targets).item() == pytest.approx((a + a + 3 * a + 3 * b) / 8)
    with pytest.raises(ValueError, match="edge width"):
        CoarseLabelLoss(np.eye(3, dtype=bool), edge_weight=3.0)
    # limited to target 1: the background pixel next to the border keeps its weight
    inner = CoarseLabelLoss(np.eye(3, dtype=bool), edge_weight=3.0, edge_width=1,
                            edge_targets=[False, True, False])
    assert inner(logits, targets).item() == pytest.approx((3 * a + 3 * b) / 6)
    with pytest.raises(ValueError, match="2 edge targets for 3 targets"):
        CoarseLabelLoss(np.eye(3, dtype=bool), edge_weight=3.0, edge_width=1,
                        edge_targets=[True, False])


class _BrokenUnderBfloat16(nn.Module):
    """Finite in float32, NaN under bfloat16 autocast (as a CPU kernel bug would be)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        return y * float("nan") if torch.is_autocast_enabled("cpu") else y


def test_the_precision_check_rejects_candidates_whose_gradients_are_wrong(monkeypatch):
    images, targets = torch.randn(2, 3, 16, 16), torch.randint(0, 4, (2, 16, 16))
    loss = nn.CrossEntropyLoss()
    # "auto" checks bfloat16 only where it is native: make it so on any host
    monkeypatch.setattr(precision_module, "native_bfloat16", lambda device: True)
    chosen, report = choose_precision(_BrokenUnderBfloat16(), loss, images, targets, "auto")
    assert not chosen.bf16 and set(report) == {"float32 default", "float32 channels_last",
                                               "bfloat16 default", "bfloat16 channels_last"}
    assert not report["bfloat16 default"]["ok"] and report["float32 default"]["ok"]
    with pytest.raises(FloatingPointError, match="no bfloat16 candidate"):
        choose_precision(_BrokenUnderBfloat16(), loss, images, targets, "bfloat16")


def test_the_host_check_tests_a_fresh_network_and_leaves_the_runs_random_streams(
        monkeypatch):
    """One answer for a run that starts from trained weights and for the same run resumed:
    the check runs the recipe's network initialised from seed 0, whatever the run's random
    stream holds, and draws nothing from that stream."""
    import mixnet_bids.training.train as train_module

    checked = []

    def capture(model, *args, **kwargs):
        checked.append({k: v.clone() for k, v in model.state_dict().items()})
        return choose_precision(model, *args, **kwargs)

    monkeypatch.setattr(train_module, "choose_precision", capture)
    cfg = TrainConfig(plane="axial", batch_size=2, threads=1, precision="float32", pool=False)
    for seed in (7, 8):
        torch.manual_seed(seed)
        state = torch.get_rng_state()
        host_precision(nn.CrossEntropyLoss(), cfg, (32, 32))
        assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(0)
    expected = build_mixnet(cfg.version, n_classes(cfg.task), pool=False).state_dict()
    for weights in checked:
        assert weights.keys() == expected.keys()
        assert all(torch.equal(weights[k], expected[k]) for k in expected)


def test_a_checkpoint_of_another_preprocessing_version_is_not_resumed(tmp_path):
    """A run's checkpoint records the preprocessing version of its images; resuming it
    under another version is refused before anything is written (one recorded before the
    version was stored is not judged)."""
    cfg = TrainConfig(plane="axial", iterations=4, batch_size=2, crop=(32, 32), threads=1,
                      checkpoint_every=2, precision="float32", stop_after=2)
    checkpoint = train_plane([synthetic_subject()], cfg, tmp_path, command="test")
    state = torch.load(checkpoint, weights_only=True)
    assert state["preprocessing_version"] == PREPROCESSING_VERSION
    check_same_preprocessing(state, checkpoint)
    torch.save({**state, "preprocessing_version": PREPROCESSING_VERSION + 1}, checkpoint)
    files = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(RecipeMismatch, match=f"preprocessing version "
                                             f"{PREPROCESSING_VERSION + 1}, but this code "
                                             f"makes version {PREPROCESSING_VERSION}"):
        train_plane([synthetic_subject()], cfg, tmp_path, command="again")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == files
    del state["preprocessing_version"]
    check_same_preprocessing(state, checkpoint)


def _git(repo, *args):
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True,
                          text=True).stdout


def test_commit_state_commits_the_run_folder_and_nothing_else(tmp_path):
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "config", "user.email", "t@example.org")
    _git(tmp_path, "config", "user.name", "t")
    (tmp_path / "code.py").write_text("x = 1\n")
    _git(tmp_path, "add", "code.py")  # someone's staged work, not the run's
    run = tmp_path / "checkpoints" / "r" / "axial"
    run.mkdir(parents=True)
    (run / "checkpoint.pt").write_bytes(b"state")
    curve = tmp_path / "docs" / "curves" / "r_axial.png"
    curve.parent.mkdir(parents=True)
    curve.write_bytes(b"png")
    assert commit_state([run, curve], "training state: r axial at iteration 1")
    assert _git(tmp_path, "show", "--name-only", "--format=%s", "HEAD").split() == [
        "training", "state:", "r", "axial", "at", "iteration", "1",
        "checkpoints/r/axial/checkpoint.pt", "docs/curves/r_axial.png"]
    assert _git(tmp_path, "diff", "--cached", "--name-only").split() == ["code.py"]
    assert not commit_state([run], "nothing changed")


def test_a_fine_network_trains_on_real_and_synthetic_slices_and_logs_validation(tmp_path):
    from helpers import head_phantom

    from mixnet_bids.training.dataset import MixedSampler, SliceSampler
    from mixnet_bids.training.synth import SynthSampler
    from mixnet_bids.training.validation import mrbrains_case

    real = SliceSampler([synthetic_subject()], "axial", "fine", crop=(32, 32), seed=0)
    synth = SynthSampler([head_phantom()], "axial", (32, 32), seed=0)
    mixed = MixedSampler(real, synth, fraction=0.5, seed=0)
    images, targets = mixed.batch(16)
    assert images.shape == (16, 3, 32, 32) and targets.shape == (16, 32, 32)
    codes = set(torch.unique(targets).tolist())
    # real MRBrainS slices give fine codes (1 cortex, 3 WM), synthetic BrainWeb ones their
    # coarse codes (11 CSF, 12 GM, 13 WM)
    assert codes & {1, 3} and codes & {11, 12, 13}
    assert codes <= set(range(len(TARGETS))) | {IGNORE_INDEX}
    with pytest.raises(ValueError, match="fine classes only"):
        MixedSampler(SliceSampler([synthetic_subject()], "axial", "3label"), synth, 0.5)

    cfg = TrainConfig(plane="axial", task="fine", iterations=4, batch_size=2, crop=(32, 32),
                      threads=1, checkpoint_every=2, optimizer="adamw", lr=1e-3,
                      synth_fraction=0.5, validate_every=2)
    held_out = synthetic_subject("sub-2", seed=3)
    path = train_plane([synthetic_subject()], cfg, tmp_path, command="test",
                       synth=SynthSampler([head_phantom()], "axial", (32, 32), seed=0),
                       validation=[mrbrains_case(held_out)])
    _, meta = load_model(path)
    assert meta["training_data"] == ["sub-1", "sub-ph"] and meta["settings"]["synth_fraction"]
    log = [line.split("\t") for line in (tmp_path / "log.tsv").read_text().splitlines()]
    assert log[0][-3:] == ["val_GM", "val_WM", "val_CSF"]
    assert [row[0] for row in log[1:]] == ["2", "4"]
    assert all(0.0 <= float(v) <= 1.0 for row in log[1:] for v in row[4:6])
    with pytest.raises(ValueError, match="give the BrainWeb label maps"):
        train_plane([synthetic_subject()], cfg, tmp_path / "no_synth", command="test")


def test_a_run_commits_its_state_and_redrawn_curve_as_it_goes(tmp_path):
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "config", "user.email", "t@example.org")
    _git(tmp_path, "config", "user.name", "t")
    run = tmp_path / "checkpoints" / "probe" / "3label_v3_axial"
    cfg = TrainConfig(plane="axial", recipe="probe", iterations=4, batch_size=2,
                      crop=(32, 32), threads=1, checkpoint_every=2, commit_every=1e-9)
    train_plane([synthetic_subject()], cfg, run, command="test",
                curves_dir=tmp_path / "docs" / "curves")
    subjects = _git(tmp_path, "log", "--format=%s").splitlines()
    assert subjects == ["training state: probe axial finished (4 iterations)",
                        "training state: probe axial at iteration 4 of 4",
                        "training state: probe axial at iteration 2 of 4"]
    # a cross-validation fold's folder (<fold>/<plane>) names the fold
    assert run_name(cfg, tmp_path / "cv" / "3label_v3" / "sub-4" / "axial") == \
        "probe fold sub-4 axial"
    files = _git(tmp_path, "ls-files").split()
    assert "checkpoints/probe/3label_v3_axial/checkpoint.pt" in files
    assert "checkpoints/probe/3label_v3_axial/mixnet_v3_3label_axial.pt" in files
    png = tmp_path / "docs" / "curves" / "probe_3label_v3_axial.png"
    assert "docs/curves/probe_3label_v3_axial.png" in files
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_stop_after_ends_at_a_checkpoint_and_a_restart_keeps_the_hosts_choice(tmp_path):
    cfg = TrainConfig(plane="axial", iterations=10, batch_size=2, crop=(32, 32), threads=1,
                      checkpoint_every=4, stop_after=3, precision="float32")
    checkpoint = train_plane([synthetic_subject()], cfg, tmp_path, command="test")
    # 3 iterations asked, stopped at the checkpoint an uninterrupted run makes (4)
    assert torch.load(checkpoint, weights_only=True)["iteration"] == 4
    train_plane([synthetic_subject()], cfg, tmp_path, command="test")
    hosts = [json.loads(line) for line in (tmp_path / "hosts.jsonl").read_text().splitlines()]
    assert [h["iteration"] for h in hosts] == [0, 4]
    assert hosts[1]["precision"] == hosts[0]["precision"]
    assert hosts[0]["cpu"] and hosts[0]["cpu"] != "x86_64" or not Path("/proc/cpuinfo").exists()


def test_a_finished_plane_is_left_as_it_is_on_a_rerun(tmp_path):
    """Rerunning a recipe resumes its unfinished planes; a finished plane's files stay
    byte for byte (no new host check, no second export)."""
    cfg = TrainConfig(plane="axial", iterations=4, batch_size=2, crop=(32, 32), threads=1,
                      checkpoint_every=2, precision="float32")
    export = train_plane([synthetic_subject()], cfg, tmp_path, command="test")
    files = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert train_plane([synthetic_subject()], cfg, tmp_path, command="again") == export
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == files


def test_a_preferred_precision_is_kept_when_it_passes(monkeypatch):
    images, targets = torch.randn(2, 3, 16, 16), torch.randint(0, 4, (2, 16, 16))
    loss = nn.CrossEntropyLoss()
    net = nn.Conv2d(3, 4, 3, padding=1)
    # the tiny network's timings are noise: only the check decides here, not the speed
    monkeypatch.setattr(precision_module, "PREFER_SLOWDOWN", math.inf)
    monkeypatch.setattr(precision_module, "native_bfloat16", lambda device: True)
    for prefer in ("float32 default", "float32 channels_last"):
        chosen, _ = choose_precision(net, loss, images, targets, "float32", prefer=prefer)
        assert chosen.describe() == prefer
    # a preference that fails the check is not kept
    chosen, report = choose_precision(_BrokenUnderBfloat16(), loss, images, targets, "auto",
                                      prefer="bfloat16 default")
    assert not chosen.bf16 and report["bfloat16 default"]["gradient_difference"] is None


def test_auto_checks_bfloat16_only_on_a_cpu_that_computes_it_natively(monkeypatch, caplog):
    """Emulated bfloat16 (an AVX2 host) took 5-16 times float32's step: "auto" does not time
    it there, and a run that trained in bfloat16 elsewhere switches to float32 with a
    warning. An explicit "bfloat16" is still checked as asked."""
    images, targets = torch.randn(2, 3, 16, 16), torch.randint(0, 4, (2, 16, 16))
    loss, net = nn.CrossEntropyLoss(), nn.Conv2d(3, 4, 3, padding=1)
    monkeypatch.setattr(precision_module, "native_bfloat16", lambda device: False)
    with caplog.at_level(logging.INFO, logger=precision_module.__name__):
        chosen, report = choose_precision(net, loss, images, targets, "auto",
                                          prefer="bfloat16 channels_last")
    assert set(report) == {"float32 default", "float32 channels_last"} and not chosen.bf16
    assert "no native bfloat16" in caplog.text
    assert "previous bfloat16 channels_last is not a candidate on this host" in caplog.text
    _, report = choose_precision(net, loss, images, targets, "bfloat16")
    assert set(report) == {"bfloat16 default", "bfloat16 channels_last"}
    monkeypatch.setattr(precision_module, "native_bfloat16", lambda device: True)
    _, report = choose_precision(net, loss, images, targets, "auto")
    assert len(report) == 4


def test_a_preferred_precision_much_slower_on_this_host_is_dropped():
    """A run that started in bfloat16 on a host with AVX-512 BF16 resumes on a host
    without it, where the check (these are its times, rounded) found bfloat16 five times
    slower."""
    report = {"float32 default": {"seconds": 2.255, "ok": True},
              "float32 channels_last": {"seconds": 1.4409, "ok": True},
              "bfloat16 default": {"seconds": 22.6409, "ok": True},
              "bfloat16 channels_last": {"seconds": 7.272, "ok": True}}
    assert pick(report, prefer="bfloat16 channels_last") == "float32 channels_last"
    assert pick(report, prefer="float32 default") == "float32 channels_last"  # 1.56 times
    # within 1.5 times the fastest, the run's previous choice stays
    report["float32 default"]["seconds"] = 2.1
    assert pick(report, prefer="float32 default") == "float32 default"
    report["float32 default"]["seconds"] = 1.5 * 1.4409  # the boundary keeps it
    assert pick(report, prefer="float32 default") == "float32 default"
    assert pick(report) == "float32 channels_last"
    assert pick(report, prefer="float16 default") == "float32 channels_last"
    report["float32 channels_last"]["ok"] = False
    assert pick(report, prefer="float32 channels_last") == "float32 default"
    assert pick({"bfloat16 default": {"seconds": 1.0, "ok": False}}) is None


def test_a_failed_commit_leaves_nothing_staged(tmp_path):
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "config", "user.email", "t@example.org")
    _git(tmp_path, "config", "user.name", "t")
    hook = tmp_path / ".git" / "hooks" / "pre-commit"
    hook.write_text("#!/bin/sh\nexit 1\n")
    hook.chmod(0o755)
    run = tmp_path / "checkpoints" / "r"
    run.mkdir(parents=True)
    (run / "checkpoint.pt").write_bytes(b"state")
    assert not commit_state([run], "refused by the hook")
    assert _git(tmp_path, "diff", "--cached", "--name-only") == ""
    assert last_commit_time(run) == 0.0
    hook.unlink()
    assert commit_state([run], "accepted") and last_commit_time(run) > 0


def test_a_curve_is_flat_when_no_tissue_gained_over_the_last_quarter():
    import pandas as pd

    from mixnet_bids.training.curves import (
        FLAT_GAIN,
        describe_gain,
        has_flattened,
        validation_gain,
    )

    def log(dice_by_iteration):
        rows = [{"iteration": it, "loss": 0.5, "lr": 1e-3, "seconds": it,
                 "val_GM": gm, "val_WM": wm, "val_CSF": csf}
                for it, (gm, wm, csf) in dice_by_iteration.items()]
        return pd.DataFrame(rows)

    climbing = log({1000: (0.80, 0.85, 0.60), 2000: (0.85, 0.88, 0.70),
                    3000: (0.86, 0.89, 0.72), 4000: (0.87, 0.89, 0.75)})
    start, end, gains = validation_gain(climbing)
    # the last quarter of 4000 iterations starts at 3000: the mean of the last 3 validations
    # at or before it (1000-3000) against the mean of those after it (4000 alone)
    assert (start, end) == (3000, 4000)
    assert gains == pytest.approx({"GM": 0.87 - 2.51 / 3, "WM": 0.89 - 2.62 / 3,
                                   "CSF": 0.75 - 2.02 / 3})
    assert "still climbing" in describe_gain(climbing)

    # a swing at the last validation alone does not decide it: the means smooth it
    swinging = log({it: (0.90, 0.93, (0.60, 0.70, 0.65)[i % 3])
                    for i, it in enumerate(range(1000, 13000, 1000))})
    assert validation_gain(swinging)[:2] == (9000, 12000)
    assert abs(validation_gain(swinging)[2]["CSF"]) < 1e-9

    plateau = log({it: (0.870 + it * 1e-7, 0.890, 0.750) for it in range(1000, 9000, 1000)})
    assert max(validation_gain(plateau)[2].values()) < FLAT_GAIN
    assert "flat" in describe_gain(plateau) and "GM +0.000" in describe_gain(plateau)
    # a run stops once the last two validations read flat, not one
    assert has_flattened(plateau) and not has_flattened(climbing)
    dip = log({**{it: (0.87, 0.89, 0.75) for it in range(1000, 8000, 1000)},
               8000: (0.95, 0.95, 0.95)})
    assert not has_flattened(dip) and not has_flattened(log({1000: (0.8, 0.8, 0.6)}))
    # too early to say: one validation, or none before the last quarter
    assert validation_gain(log({1000: (0.8, 0.8, 0.6)})) is None
    assert validation_gain(log({1000: (0.8, 0.8, 0.6), 1100: (0.8, 0.8, 0.6)})) is None
    assert "too few validations" in describe_gain(log({}).reindex(
        columns=["iteration", "val_GM", "val_WM", "val_CSF"]))


@pytest.mark.parametrize("stop_after", [4, 6, 8])
def test_a_flat_curve_cools_down_and_exports_and_a_resumed_cooldown_is_the_same(
        tmp_path, monkeypatch, stop_after):
    """With ``cooldown``, a run stops when its validation curve has flattened: the learning
    rate falls linearly to 0 and the network is exported before the budget. Flat is forced
    here by a threshold no gain reaches; the training and validation are real."""
    from mixnet_bids.training import curves
    from mixnet_bids.training.validation import mrbrains_case

    monkeypatch.setattr(curves, "FLAT_GAIN", 1.01)
    validation = [mrbrains_case(synthetic_subject("sub-2", seed=3))]

    def run(out, stop_after=None):
        cfg = TrainConfig(plane="axial", task="fine", iterations=40, batch_size=2,
                          crop=(32, 32), threads=1, checkpoint_every=2, optimizer="adamw",
                          lr=1e-3, schedule="cosine", validate_every=2, cooldown=4,
                          stop_after=stop_after)
        return train_plane([synthetic_subject()], cfg, out, command="test",
                           validation=validation)

    path = run(tmp_path / "straight")
    log = [line.split("\t") for line in (tmp_path / "straight" / "log.tsv").read_text()
           .splitlines()[1:]]
    # flat at the validations of 4 (the first with a gain) and 6: cooldown over 7..10
    assert [int(row[0]) for row in log] == [2, 4, 6, 8, 10]
    lr6 = float(log[2][2])
    assert float(log[3][2]) == pytest.approx(lr6 / 2, rel=1e-2) and float(log[4][2]) == 0
    _, meta = load_model(path)
    assert meta["iterations"] == 10 and "flattened at iteration 6 of a 40-iteration" in \
        meta["stopped"]

    # stopped before, at the start of, and inside the cooldown, and resumed: the same
    # weights and the same log
    assert run(tmp_path / "split", stop_after=stop_after).name == "checkpoint.pt"
    cooldown = torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=True)["cooldown"]
    assert (cooldown or {}).get("to") == (None if stop_after < 6 else 10)
    a, _ = load_model(path)
    b, _ = load_model(run(tmp_path / "split"))
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
    logs = [(tmp_path / d / "log.tsv").read_text().splitlines() for d in ("straight", "split")]
    assert [row.split("\t")[:3] for row in logs[0]] == [row.split("\t")[:3] for row in logs[1]]


def test_a_resumed_run_drops_the_log_rows_after_its_checkpoint(tmp_path):
    """A run killed after logging a row and before saving that checkpoint logs it again on
    resuming: the rows past the checkpoint go first."""
    cfg = TrainConfig(plane="axial", iterations=6, batch_size=2, crop=(32, 32), threads=1,
                      checkpoint_every=2, stop_after=4, precision="float32")
    train_plane([synthetic_subject()], cfg, tmp_path, command="test")
    log = tmp_path / "log.tsv"
    log.write_text(log.read_text() + "6\t0.5\t0.001\t1\t\t\t\n")  # logged, never saved
    train_plane([synthetic_subject()], replace(cfg, stop_after=None), tmp_path, command="test")
    assert [row.split("\t")[0] for row in log.read_text().splitlines()[1:]] == ["2", "4", "6"]
