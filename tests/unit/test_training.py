"""Training loop: sampler output, checkpoint/resume reproduces an uninterrupted run."""

import json
import shutil
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import synthetic_subject

from mixnet_bids.inference.predict import predict_plane
from mixnet_bids.inference.weights import load_model, read_metadata, weight_path
from mixnet_bids.labels import IGNORE_INDEX, TARGETS
from mixnet_bids.preprocessing import PREPROCESSING_VERSION
from mixnet_bids.training.cli import main as train_main
from mixnet_bids.training.cli import start_weights
from mixnet_bids.training.crossval import (
    cross_validate,
    fold_plans,
    fused_probabilities,
    labels_in,
    run_fold,
    score_subject,
    trained_cooldowns,
)
from mixnet_bids.training.crossval import main as cv_main
from mixnet_bids.training.dataset import SliceSampler
from mixnet_bids.training.locks import Busy, hold, hold_run
from mixnet_bids.training.recipes import DEFAULT_RECIPE, get_recipe
from mixnet_bids.training.synth import SynthConfig
from mixnet_bids.training.train import (
    NonFiniteLoss,
    RecipeMismatch,
    TrainConfig,
    make_loss,
    make_optimizer,
    make_scheduler,
    train_plane,
)


def test_sampler_crops_and_maps_labels():
    sampler = SliceSampler([synthetic_subject()], "axial", "3label", crop=(32, 24), seed=1)
    images, targets = sampler.batch(6)
    assert images.shape == (6, 3, 32, 24) and images.dtype == torch.float32
    assert targets.shape == (6, 32, 24) and targets.dtype == torch.int64
    assert set(torch.unique(targets).tolist()) <= {0, 1, 2, 3, IGNORE_INDEX}
    # sagittal slices are 44 x 12: the crop pads the short axis
    sag = SliceSampler([synthetic_subject()], "sagittal", "8label", crop=(32, 16), seed=1)
    assert sag.batch(2)[0].shape == (2, 3, 32, 16)


def _train(out, iterations, **kw):
    cfg = TrainConfig(plane="axial", iterations=iterations, batch_size=2, crop=(32, 32),
                      threads=1, checkpoint_every=2, **kw)
    return train_plane([synthetic_subject()], cfg, out, command="test")


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path):
    straight = _train(tmp_path / "a", 6)
    # an interrupted run: stop after 4 iterations (checkpointed), then resume to 6
    interrupted = _train(tmp_path / "b", 6, stop_after=4)
    assert interrupted.name == "checkpoint.pt"
    assert not list((tmp_path / "b").glob("mixnet_*.pt"))
    assert torch.load(interrupted, weights_only=True)["iteration"] == 4
    resumed = _train(tmp_path / "b", 6)
    a, meta = load_model(straight)
    b, _ = load_model(resumed)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert meta["iterations"] == 6 and meta["task"] == "3label"
    assert meta["preprocessing_version"] == PREPROCESSING_VERSION  # of the images it trained on
    log = (tmp_path / "b" / "log.tsv").read_text().splitlines()
    assert log[0].startswith("iteration") and log[-1].startswith("6\t")
    assert json.loads((tmp_path / "b" / "config.json").read_text())["subjects"] == ["sub-1"]


def _all_finite(state_dict):
    return all(torch.isfinite(v).all() for v in state_dict.values() if v.is_floating_point())


def test_a_diverging_run_stops_before_the_bad_step_reaches_the_checkpoint(tmp_path):
    # AdamW steps of ~lr per weight: after one step of 1e30 the activations overflow
    cfg = TrainConfig(plane="axial", iterations=20, batch_size=2, crop=(32, 32), threads=1,
                      checkpoint_every=1, lr=1e30, optimizer="adamw")
    with pytest.raises(NonFiniteLoss, match=r"axial network: loss .* lower the learning rate"):
        train_plane([synthetic_subject()], cfg, tmp_path, command="test")
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert _all_finite(state["model"])
    assert not list(tmp_path.glob("mixnet_*.pt"))


def test_bfloat16_training_keeps_the_gradients_finite(tmp_path):
    # 64 x 64 crops give 32 x 32 feature maps: there, in channels-last, the grouped dilated
    # convolutions' bfloat16 weight gradients were NaN on an AVX-512 BF16 CPU
    cfg = TrainConfig(plane="axial", iterations=3, batch_size=2, crop=(64, 64), threads=1,
                      precision="bfloat16", optimizer="adamw", lr=1e-3)
    model, _ = load_model(train_plane([synthetic_subject()], cfg, tmp_path, command="test"))
    assert _all_finite(model.state_dict())


def test_a_network_trained_without_pooling_loads_without_pooling(tmp_path):
    path = _train(tmp_path, 2, pool=False)
    model, meta = load_model(path)
    assert meta["pool"] is False and model.pool is False
    assert isinstance(model.init.pool, torch.nn.Identity)
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 21, 17)).shape == (1, 4, 21, 17)
    assert load_model(_train(tmp_path / "pooled", 2))[0].pool is True


def test_a_checkpoint_only_resumes_with_the_recipe_it_was_trained_with(tmp_path):
    _train(tmp_path, 4, stop_after=2)
    with pytest.raises(RecipeMismatch, match=r"pool=True.*use a new --out"):
        _train(tmp_path, 4, pool=False)
    with pytest.raises(RecipeMismatch, match=r"lr=0.0002"):
        _train(tmp_path, 4, lr=1e-3)
    # the checkpoints are where the optimiser's moments are rounded: part of the run
    with pytest.raises(RecipeMismatch, match=r"checkpoint_every=2"):
        train_plane([synthetic_subject()], TrainConfig(
            plane="axial", iterations=4, batch_size=2, crop=(32, 32), threads=1,
            checkpoint_every=1), tmp_path, command="test")
    # a config written before a field existed: that field counts as its default
    config = json.loads((tmp_path / "config.json").read_text())
    del config["pool"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    # the stopping point may change (so may the threads): the run finishes
    assert _train(tmp_path, 4).name.startswith("mixnet_")


def test_score_subject_scores_every_subset_of_the_present_modalities(tmp_path):
    subject = synthetic_subject()
    subject.image[..., 1] = 0  # no IR
    subject.modalities = ("T1w", "FLAIR")
    weights = _train(tmp_path, 2, p_t1w_only=0.5)
    assert read_metadata(weights)["settings"]["p_t1w_only"] == 0.5
    rows = score_subject(subject, {"axial": weights}, ("3label",))["3label"]
    assert [(r["modalities"], r["label"]) for r in rows] == [
        (keep, label) for keep in ("T1w+FLAIR", "T1w", "FLAIR")
        for label in ("GM", "WM", "CSF")]
    assert all(r["all_modalities"] == "T1w+FLAIR" and 0 <= r["dice"] <= 1 for r in rows)
    assert len(score_subject(subject, {"axial": weights}, ("3label",),
                             subsets=False)["3label"]) == 3


def test_8label_networks_are_scored_in_3label_classes_by_summing_each_tissue(tmp_path):
    subject = synthetic_subject()
    weights = _train(tmp_path, 2, task="8label")
    model, _ = load_model(weights)
    head = np.any(subject.image != 0, axis=-1)
    p = predict_plane(model, subject.image, head, subject.zooms, "axial")
    expected = np.argmax(np.stack([p[..., [0, 7, 8]].sum(-1), p[..., 1] + p[..., 2],
                                   p[..., 3] + p[..., 4], p[..., 5] + p[..., 6]], -1), -1)
    fused, net_task = fused_probabilities(subject, {"axial": weights}, subject.modalities)
    assert net_task == "8label"
    got = labels_in(fused, net_task, "3label")
    np.testing.assert_array_equal(got, expected)
    assert got.max() <= 3 < labels_in(fused, net_task, "8label").max()
    rows = score_subject(subject, {"axial": weights}, ("8label", "3label"), subsets=False)
    assert [r["label"] for r in rows["3label"]] == ["GM", "WM", "CSF"]
    assert len(rows["8label"]) == 8
    with pytest.raises(ValueError, match="3label networks cannot give the 8label classes"):
        labels_in(*fused_probabilities(subject, {"axial": _train(tmp_path / "3", 1)}, ("T1w",)),
                  "8label")


def test_run_fold_trains_three_planes_with_the_fold_recipe_and_scores_the_held_out(tmp_path):
    subjects = [synthetic_subject("sub-1", seed=0), synthetic_subject("sub-2", seed=1)]
    subjects[1].modalities = ("T1w",)  # one subset to score: keeps the test short
    subjects[1].image[..., 1:] = 0
    recipe = TrainConfig(plane="axial", lr=1e-3, optimizer="adamw", threads=1,
                         precision="bfloat16-default",
                         p_t1w_only=0.25, class_weights=[1.0, 1.0, 1.0, 2.0])
    batch = {"axial": 2, "coronal": 3, "sagittal": 4}  # the recipe's, per plane
    rows = run_fold(subjects, subjects[1], recipe, {"axial": 1, "coronal": 1, "sagittal": 1},
                    out=tmp_path, command="test", batch=batch)["3label"]
    for plane in ("axial", "coronal", "sagittal"):
        meta = read_metadata(weight_path("3label", plane, "v3",
                                         tmp_path / "3label_v3" / "sub-2" / plane))
        settings = meta["settings"]
        assert meta["training_data"] == ["sub-1"] and settings["p_t1w_only"] == 0.25
        assert settings["optimizer"] == "adamw" and meta["iterations"] == 1
        assert settings["precision"] == "bfloat16-default"
        assert settings["class_weights"] == [1.0, 1.0, 1.0, 2.0]
        assert settings["batch_size"] == batch[plane]
    assert [(r["subject"], r["modalities"], r["label"]) for r in rows] == [
        ("sub-2", "T1w", label) for label in ("GM", "WM", "CSF")]
    # the finished planes are reused with the same recipe, and refused with another
    axial = weight_path("3label", "axial", "v3", tmp_path / "3label_v3" / "sub-2" / "axial")
    stamp = axial.stat().st_mtime_ns
    again = run_fold(subjects, subjects[1], recipe, {"axial": 1, "coronal": 1, "sagittal": 1},
                     out=tmp_path, command="test", batch=batch)["3label"]
    assert [r["dice"] for r in again] == [r["dice"] for r in rows]
    assert axial.stat().st_mtime_ns == stamp
    with pytest.raises(RecipeMismatch, match=r"iterations=1\b"):
        run_fold(subjects, subjects[1], recipe, {"axial": 2, "coronal": 1, "sagittal": 1},
                 out=tmp_path, command="test", batch=batch)


def test_a_lock_is_held_by_one_holder_at_a_time(tmp_path):
    lock = tmp_path / "run" / "x.training.lock"
    with hold(lock):
        with pytest.raises(Busy, match=r"x.training.lock: another process holds it"):
            with hold(lock):
                pass
    with hold(lock, wait=True):  # let go when the first block ended
        pass
    # a plane's lock lies beside its folder, which stays unwritten until the run starts
    with hold_run(tmp_path / "fold" / "axial"):
        with pytest.raises(Busy, match=r"axial: another process is training it"):
            with hold_run(tmp_path / "fold" / "axial"):
                pass
    assert not (tmp_path / "fold" / "axial").exists()


def test_without_file_locks_a_run_warns_and_goes_on(tmp_path, monkeypatch, caplog):
    import errno
    import fcntl

    def no_locks(handle, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    ran = []
    with hold(tmp_path / "x.training.lock"):
        ran.append(True)
    assert ran and "does not lock files" in caplog.text


def test_processes_share_a_cross_validation_and_the_last_one_scores_the_fold(tmp_path,
                                                                             monkeypatch):
    """A plane another process holds is left to it; the process that finds all three planes
    finished scores the fold, once."""
    import mixnet_bids.training.crossval as crossval

    subjects = [synthetic_subject("sub-1", seed=0), synthetic_subject("sub-2", seed=1)]
    subjects[1].modalities = ("T1w",)
    subjects[1].image[..., 1:] = 0
    recipe = TrainConfig(plane="axial", threads=1, precision="bfloat16-default")
    iterations = {"axial": 1, "coronal": 1, "sagittal": 1}
    fold = tmp_path / "3label_v3" / "sub-2"
    table = tmp_path / "cv_3label_v3.tsv"
    plans = fold_plans(subjects, subjects[1], recipe, iterations, tmp_path)
    assert list(plans) == ["sagittal", "coronal", "axial"]
    with hold_run(fold / "coronal"):  # another process trains the coronal plane ...
        cross_validate(subjects, subjects[1:], recipe, iterations, tmp_path, "test")
        assert not (fold / "coronal").exists()
        assert weight_path("3label", "axial", "v3", fold / "axial").is_file()
        assert not table.exists()  # ... so this one leaves the fold unscored

        # this time the other process finishes coronal while this one trains axial
        for plane in ("sagittal", "axial"):
            for path in (fold / plane).iterdir():
                path.unlink()
        trained = []

        def train_and_meanwhile(train, cfg, run_dir, **kw):
            if cfg.plane == "axial":
                train_plane(subjects[:1], plans["coronal"][1], fold / "coronal",
                            command="test")
            trained.append(cfg.plane)
            return train_plane(train, cfg, run_dir, **kw)

        monkeypatch.setattr(crossval, "train_plane", train_and_meanwhile)
        cross_validate(subjects, subjects[1:], recipe, iterations, tmp_path, "test")
    assert trained == ["sagittal", "axial"]
    scores = pd.read_csv(table, sep="\t")
    assert list(scores["label"]) == ["GM", "WM", "CSF"] and set(scores["subject"]) == {"sub-2"}
    # a fold already in the table is not scored again
    monkeypatch.setattr(crossval, "score_subject", None)
    cross_validate(subjects, subjects[1:], recipe, iterations, tmp_path, "test")
    assert pd.read_csv(table, sep="\t").equals(scores)


def test_cross_validation_folds_cool_down_where_the_shipped_networks_did(tmp_path):
    """A fold must not stop on its held-out subject's curve: it starts its cooldown at the
    iteration where the recipe's network of its plane started one (or trains the whole
    schedule where that network did)."""
    recipe = TrainConfig(plane="axial", recipe="r", iterations=8, batch_size=2,
                         crop=(32, 32), threads=1, checkpoint_every=2, cooldown=4)
    root = tmp_path / "checkpoints" / "r"
    budget = {p: 8 for p in ("axial", "coronal", "sagittal")}
    with pytest.raises(FileNotFoundError, match="make weights RECIPE=r"):
        trained_cooldowns(root, recipe, budget)
    starts = {"axial": 2, "coronal": None, "sagittal": 6}
    for plane, start in starts.items():
        cfg = replace(recipe, plane=plane, cooldown_from=start)
        path = train_plane([synthetic_subject()], cfg, root / f"3label_v3_{plane}",
                           command="test")
        meta = read_metadata(path)
        # the cooldown runs 4 iterations, or to the budget of 8 when it starts at 6
        assert meta["iterations"] == {2: 6, None: 8, 6: 8}[start]
        assert (meta["cooldown"] or {}).get("from") == start
    lrs = pd.read_csv(root / "3label_v3_axial" / "log.tsv", sep="\t")["lr"].tolist()
    assert lrs[1:] == pytest.approx([lrs[0] / 2, 0.0], rel=1e-2)
    assert trained_cooldowns(root, recipe, budget) == starts
    # folds at another budget would cool down on another schedule: refused
    with pytest.raises(ValueError, match=r"8-iteration schedule, the folds would train 4"):
        trained_cooldowns(root, recipe, {**budget, "axial": 4})
    subjects = [synthetic_subject("sub-1", seed=0), synthetic_subject("sub-2", seed=1)]
    plans = fold_plans(subjects, subjects[1], recipe, budget, tmp_path, cooldown_from=starts)
    assert {p: (c.cooldown, c.cooldown_from) for p, (_, c) in plans.items()} == {
        "axial": (4, 2), "coronal": (0, None), "sagittal": (4, 6)}


def test_an_8label_cross_validation_is_also_scored_in_the_3_tissues(tmp_path):
    subjects = [synthetic_subject("sub-1", seed=0), synthetic_subject("sub-2", seed=1)]
    subjects[1].modalities = ("T1w",)
    subjects[1].image[..., 1:] = 0
    recipe = TrainConfig(plane="axial", task="8label", threads=1)
    iterations = {"axial": 1, "coronal": 1, "sagittal": 1}
    cross_validate(subjects, subjects[1:], recipe, iterations, tmp_path, "test")
    tables = {task: tmp_path / f"cv_{task}_v3.tsv" for task in ("8label", "3label")}
    first = {task: pd.read_csv(t, sep="\t") for task, t in tables.items()}
    assert list(first["8label"]["label"]) == ["cGM", "BG-basal", "WM", "WMH", "eCSF", "VEN",
                                              "CB", "BS"]
    assert list(first["3label"]["label"]) == ["GM", "WM", "CSF"]
    assert set(first["3label"]["subject"]) == {"sub-2"}
    # a run from before the 3-label table existed: scored again from the finished planes
    axial = weight_path("8label", "axial", "v3", tmp_path / "8label_v3" / "sub-2" / "axial")
    stamp = axial.stat().st_mtime_ns
    tables["3label"].unlink()
    cross_validate(subjects, subjects[1:], recipe, iterations, tmp_path, "test")
    assert axial.stat().st_mtime_ns == stamp
    pd.testing.assert_frame_equal(pd.read_csv(tables["3label"], sep="\t"), first["3label"])
    pd.testing.assert_frame_equal(pd.read_csv(tables["8label"], sep="\t"), first["8label"])


def _rates(cfg, steps):
    model = torch.nn.Linear(2, 2)
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg)
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return optimizer, rates


def test_paper_schedule_halves_at_the_milestones_and_cosine_decays_to_zero():
    optimizer, rates = _rates(TrainConfig(plane="axial", iterations=100, lr=1.0), 100)
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["nesterov"]
    # halved at 20, 40, 60, 75, 80, 85, 90, 95 % of the iterations
    assert rates[19] == 1.0 and rates[20] == 0.5 and rates[40] == 0.25 and rates[99] == 2 ** -8
    optimizer, rates = _rates(TrainConfig(plane="axial", iterations=100, lr=1.0,
                                          optimizer="adamw", schedule="cosine"), 101)
    assert isinstance(optimizer, torch.optim.AdamW)
    assert rates[0] == 1.0 and abs(rates[50] - 0.5) < 1e-9 and abs(rates[100]) < 1e-12
    assert all(a >= b for a, b in zip(rates, rates[1:]))


def test_unknown_optimizer_or_schedule_is_named():
    model = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match="'adam'"):
        make_optimizer(model, TrainConfig(plane="axial", optimizer="adam"))
    with pytest.raises(ValueError, match="'step'"):
        make_scheduler(make_optimizer(model, TrainConfig(plane="axial")),
                       TrainConfig(plane="axial", schedule="step"))


def test_a_run_can_start_from_another_runs_network(tmp_path):
    first = _train(tmp_path / "first", 2)
    # at a learning rate of 0 the weights stay the starting network's
    still = _train(tmp_path / "still", 2, lr=0.0, init_weights=str(first))
    trained, meta = load_model(first)
    started, started_meta = load_model(still)
    for name, value in trained.state_dict().items():
        if "running" not in name and "num_batches" not in name:   # BatchNorm re-estimated
            assert torch.equal(value, started.state_dict()[name]), name
    assert started_meta["initialised_from"] == {"file": str(first), "sha256": meta["sha256"]}
    assert meta["initialised_from"] == "random"
    # a network of other classes cannot start the run; a missing one is named
    with pytest.raises(RecipeMismatch, match=r"a 3label v3 axial network .* cannot start a "
                                             r"8label v3 axial run"):
        _train(tmp_path / "other", 2, task="8label", init_weights=str(first))
    with pytest.raises(FileNotFoundError, match="not trained yet"):
        _train(tmp_path / "none", 2, init_weights=str(tmp_path / "missing.pt"))
    assert not (tmp_path / "none").exists() and not (tmp_path / "other").exists()


def test_a_recipe_whose_starting_networks_are_missing_is_refused_before_any_work(
        tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        train_main(["--recipe", "wholebrain-tune-v1", "--init-dir", str(tmp_path / "none"),
                    "--mrbrains", str(tmp_path), "--cache", str(tmp_path / "c"),
                    "--planes", "axial"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "wholebrain-tune-v1 starts from the networks of wholebrain-synth-v2, not trained " \
           f"yet: {tmp_path / 'none' / 'fine_v3_axial' / 'mixnet_v3_fine_axial.pt'}" in err
    assert not (tmp_path / "c").exists()


def test_init_dir_is_a_run_folder_or_a_cross_validation_fold(tmp_path):
    """A probe continues one fold's network (``--init-dir .../cv/fine_v3/sub-1``) as well
    as a finished run's (``--init-dir checkpoints/<recipe>``)."""
    fold = tmp_path / "cv" / "fine_v3" / "sub-1"
    trained = _train(fold / "axial", 2, task="fine")
    assert start_weights(fold, "fine", "v3", "axial") == trained
    run = _train(tmp_path / "run" / "fine_v3_axial", 2, task="fine")
    assert start_weights(tmp_path / "run", "fine", "v3", "axial") == run
    # neither: the run folder's path, which the refusal names
    assert start_weights(tmp_path / "none", "fine", "v3", "axial") == weight_path(
        "fine", "axial", "v3", tmp_path / "none" / "fine_v3_axial")
    # both: the run's network
    shutil.copytree(fold / "axial", tmp_path / "run" / "axial")
    assert start_weights(tmp_path / "run", "fine", "v3", "axial") == run


def test_a_fold_start_that_would_train_on_its_held_out_subject_is_refused(tmp_path, capsys):
    fold = tmp_path / "cv" / "fine_v3" / "sub-1"
    _train(fold / "axial", 2, task="fine")
    with pytest.raises(SystemExit) as exc:
        train_main(["--recipe", "wholebrain-tune-v1", "--init-dir", str(fold),
                    "--mrbrains", str(tmp_path), "--cache", str(tmp_path / "c"),
                    "--planes", "axial", "--exclude", "4"])
    assert exc.value.code == 2
    assert f"{fold} is the cross-validation fold that holds out sub-1: give --exclude " \
           "sub-1" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_folds_start_from_the_same_fold_of_the_init_recipe(tmp_path):
    subjects = [synthetic_subject("sub-1", seed=0), synthetic_subject("sub-2", seed=1)]
    recipe = TrainConfig(plane="axial", task="fine", threads=1)
    budget = {"axial": 1, "coronal": 1, "sagittal": 1}
    plans = fold_plans(subjects, subjects[1], recipe, budget, tmp_path / "new",
                       init_root=tmp_path / "old")
    assert {p: c.init_weights for p, (_, c) in plans.items()} == {
        p: str(tmp_path / "old" / "fine_v3" / "sub-2" / p / f"mixnet_v3_fine_{p}.pt")
        for p in ("axial", "coronal", "sagittal")}
    assert all(c.init_weights is None for _, c in fold_plans(
        subjects, subjects[1], recipe, budget, tmp_path / "new").values())
    with pytest.raises(FileNotFoundError, match="not trained yet"):
        run_fold(subjects, subjects[1], recipe, budget, tmp_path / "new", "test",
                 init_root=tmp_path / "old")


def test_a_recipes_synthesis_settings_reach_its_runs():
    probe = TrainConfig.from_recipe(get_recipe("wholebrain-majority-v1"), "axial")
    assert probe.synth == {"target": "majority"}
    assert SynthConfig(**probe.synth).target == "majority"
    # the shipped recipe synthesises with the defaults; its runs' configs say so
    assert TrainConfig.from_recipe(get_recipe(DEFAULT_RECIPE), "axial").synth == {}


def test_the_probe_recipes_loss_weights_reach_their_loss():
    probe = TrainConfig.from_recipe(get_recipe("wholebrain-tune-edge-v1"), "axial")
    loss = make_loss(probe)
    assert (loss.edge_weight, loss.edge_width) == (4.0, 3)
    # twice the weight on exactly the targets made of CSF classes
    csf = make_loss(TrainConfig.from_recipe(get_recipe("wholebrain-tune-csf2-v1"), "axial"))
    doubled = {TARGETS[t] for t in np.flatnonzero(csf.weight.numpy() == 2)}
    assert doubled == {t for t in TARGETS if set(t) <= {"eCSF", "VEN"}}
    assert set(csf.weight.tolist()) == {1.0, 2.0}
    # the outer-CSF probe: the edge weight on the CSF targets alone, background excluded
    outer = make_loss(TrainConfig.from_recipe(get_recipe("wholebrain-tune-outercsf-v1"),
                                              "axial"))
    assert (outer.edge_weight, outer.edge_width) == (4.0, 3)
    assert {TARGETS[t] for t in np.flatnonzero(outer.edge_of.numpy())} == \
        {t for t in TARGETS if set(t) <= {"eCSF", "VEN"}}
    assert not outer.edge_of[0] and set(outer.weight.tolist()) == {1.0}
    # the shipped recipe weights every pixel alike
    shipped = TrainConfig.from_recipe(get_recipe(DEFAULT_RECIPE), "axial")
    assert make_loss(shipped).edge_weight == 1 and make_loss(shipped).edge_of.all()


def test_recipes_are_chosen_by_name_and_unknown_ones_are_refused(tmp_path, capsys):
    for main in (train_main, cv_main):
        assert main(["--list-recipes"]) == 0
        listing = capsys.readouterr().out
        assert f"{DEFAULT_RECIPE} (default)" in listing and "\npaper\n" in f"\n{listing}"
        with pytest.raises(SystemExit) as exc:
            main(["--mrbrains", str(tmp_path), "--cache", str(tmp_path / "c"),
                  "--recipe", "nope"])
        assert exc.value.code == 2 and "--recipe: invalid choice: 'nope'" in \
            capsys.readouterr().err
    # options are never abbreviated: --recipe is not --rec
    with pytest.raises(SystemExit):
        train_main(["--rec", "paper"])
    assert not (tmp_path / "c").exists()


def test_the_training_cache_runs_the_apps_preprocessing_graph(tmp_path):
    """A labelled subject goes through the app's own N4 and z-scoring (real ANTs) into one
    cache file: the z-scored channels in RAS+, the labels on the same grid."""
    import nibabel as nib

    from mixnet_bids.preprocessing import PREPROCESSING_VERSION
    from mixnet_bids.training.cache import build_cache, cache_version, load_cached

    shape = (40, 48, 36)
    grid = np.indices(shape, dtype=np.float32)
    centre = (np.array(shape, dtype=np.float32) - 1) / 2
    r = np.sqrt((((grid - centre[:, None, None, None]) /
                  (0.4 * np.array(shape))[:, None, None, None]) ** 2).sum(0))
    labels = np.zeros(shape, np.uint8)
    labels[r < 0.8] = 3  # "CSF" shell, then "GM", then "WM" core
    labels[r < 0.65] = 1
    labels[r < 0.4] = 2
    intensity = np.array([0.0, 500.0, 700.0, 200.0], np.float32)[labels]
    image = intensity + np.random.default_rng(0).normal(0, 10, shape).astype(np.float32)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    bids = tmp_path / "bids"
    (bids / "sub-01" / "anat").mkdir(parents=True)
    (bids / "dataset_description.json").write_text(json.dumps(
        {"Name": "t", "BIDSVersion": "1.9.0"}))
    nib.save(nib.Nifti1Image(image, affine), bids / "sub-01" / "anat" / "sub-01_T1w.nii.gz")
    manual = bids / "derivatives" / "manual"
    (manual / "sub-01" / "anat").mkdir(parents=True)
    (manual / "dataset_description.json").write_text(json.dumps(
        {"Name": "labels", "BIDSVersion": "1.9.0", "DatasetType": "derivative",
         "GeneratedBy": [{"Name": "Manual"}]}))
    nib.save(nib.Nifti1Image(labels, affine), manual / "sub-01" / "anat" / "sub-01_dseg.nii.gz")

    files = build_cache(bids, manual, tmp_path / "cache", tmp_path / "work")
    assert [f.name for f in files] == ["sub-01.npz"]
    subject = load_cached(files[0])
    assert subject.modalities == ("T1w",) and subject.zooms == (2.0, 2.0, 2.0)
    assert subject.image.shape == (*shape, 3) and not subject.image[..., 1:].any()
    np.testing.assert_array_equal(subject.labels, labels)
    t1w = subject.image[..., 0]
    # z-scores inside the head (0 outside it): WM brighter than GM, as in the input
    assert t1w[labels == 1].mean() + 1.0 < t1w[labels == 2].mean()
    assert (t1w[(labels == 1) | (labels == 2)] != 0).mean() > 0.99
    assert (t1w[labels == 0] == 0).mean() > 0.9
    # a second call keeps the cache file
    stamp = files[0].stat().st_mtime_ns
    assert build_cache(bids, manual, tmp_path / "cache", tmp_path / "work") == files
    assert files[0].stat().st_mtime_ns == stamp
    assert cache_version(files[0]) == PREPROCESSING_VERSION
    # a file another preprocessing made (here one recording no version) is made again
    with np.load(files[0]) as npz:
        old = {k: npz[k] for k in npz.files if k != "preprocessing"}
    old["image"] = np.zeros_like(old["image"])
    np.savez(files[0], **old)
    assert cache_version(files[0]) == 0
    assert build_cache(bids, manual, tmp_path / "cache", tmp_path / "work") == files
    assert cache_version(files[0]) == PREPROCESSING_VERSION
    np.testing.assert_array_equal(load_cached(files[0]).image, subject.image)
