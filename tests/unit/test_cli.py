"""The BIDS-App command line: argument handling and checks before any work starts."""

import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from helpers import bids_skeleton, random_weights, tiny_image

from mixnet_bids.cli.demo import main as demo_main
from mixnet_bids.cli.parser import build_parser
from mixnet_bids.cli.run import main, work_folder_note
from mixnet_bids.cli.slurm import build_parser as build_slurm_parser
from mixnet_bids.cli.slurm import main as slurm_main

#: The console scripts (setup.py) and the functions they call.
COMMANDS = {"mixnet-bids": main, "mixnet-bids-demo": demo_main,
            "mixnet-bids-slurm-array": slurm_main}


def test_participant_labels_strip_sub_and_accept_both_spellings(tmp_path):
    args = build_parser().parse_args(
        [str(tmp_path), str(tmp_path / "o"), "participant", "--participant_label", "sub-01",
         "02", "--plane-weights", "1:1:4"])
    assert args.participant_label == ["01", "02"]
    assert args.plane_weights == [1.0, 1.0, 4.0]


@pytest.mark.parametrize("extra,plugin", [
    (["--nprocs", "1"], "Linear"), (["--nprocs", "2"], "MultiProc"),
    (["--nprocs", "1", "--plugin", "MultiProc"], "MultiProc")])
def test_one_process_runs_the_steps_in_the_apps_process(tmp_path, extra, plugin):
    from mixnet_bids.cli.run import _settings_from_args

    args = build_parser().parse_args([str(tmp_path), str(tmp_path / "o"), "participant", *extra])
    assert _settings_from_args(args).plugin == plugin


def test_mirroring_is_on_unless_no_mirror(tmp_path):
    from mixnet_bids.cli.run import _settings_from_args

    base = [str(tmp_path), str(tmp_path / "o"), "participant"]
    assert _settings_from_args(build_parser().parse_args(base)).mirror
    assert not _settings_from_args(build_parser().parse_args([*base, "--no-mirror"])).mirror


def test_path_characters_in_labels_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        main([str(tmp_path), str(tmp_path / "o"), "participant", "--participant-label", "../x"])
    assert err.value.code == 2
    assert "not a BIDS label" in capsys.readouterr().err


def test_version_lists_the_software_it_runs_with(capsys):
    with pytest.raises(SystemExit) as err:
        main(["--version"])
    assert err.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"mixnet-bids {metadata.version('mixnet-bids')}"
    for name in ("torch", "nipype", "pybids", "antspyx", "numpy"):
        assert f"  {name} {metadata.version(name)}" in lines
    assert f"  python {platform.python_version()}" in lines


@pytest.mark.parametrize("command, argv", [
    ("mixnet-bids", ["{bids}", "{out}", "participant", "--nproc", "1"]),
    ("mixnet-bids", ["{bids}", "{out}", "participant", "--participant", "01"]),
    ("mixnet-bids-demo", ["{out}", "--nproc", "1"]),
    ("mixnet-bids-slurm-array", ["{bids}", "{out}", "-w", "{out}", "--sub"]),
])
def test_abbreviated_options_are_refused(tmp_path, capsys, command, argv):
    bids = bids_skeleton(tmp_path / "bids", {"01": ["T1w"]})
    with pytest.raises(SystemExit) as err:
        COMMANDS[command]([a.format(bids=bids, out=tmp_path / "out") for a in argv])
    assert err.value.code == 2
    assert "unrecognized arguments: --" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value", ["0", "-2", "two"])
def test_resources_must_be_positive(tmp_path, capsys, value):
    for option in ("--nprocs", "--omp-nthreads", "--mem-gb"):
        with pytest.raises(SystemExit) as err:
            main([str(tmp_path), str(tmp_path / "o"), "participant", option, value])
        assert err.value.code == 2
        assert f"argument {option}" in capsys.readouterr().err


def test_every_option_has_help_and_help_shows_the_other_commands(capsys):
    for parser in (build_parser(), build_slurm_parser()):
        undocumented = [a.option_strings or a.dest for a in parser._actions if not a.help]
        assert not undocumented, (parser.prog, undocumented)
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "mixnet-bids-demo [OUTPUT_DIR]" in text
    assert "mixnet-bids-slurm-array BIDS_DIR OUTPUT_DIR" in text
    with pytest.raises(SystemExit):
        demo_main(["--help"])
    assert "--nprocs N  processes" in " ".join(capsys.readouterr().out.split("\n"))


def test_library_chatter_only_with_verbose(tmp_path):
    """pybids' schema note is a library line: shown with -v, not by default."""
    bids = bids_skeleton(tmp_path / "bids", {"01": ["T1w"]})
    quiet, verbose = (subprocess.run(
        [sys.executable, "-m", "mixnet_bids.cli.run", str(bids), str(tmp_path / "out"),
         "participant", "--weights-dir", str(tmp_path / "none"), *extra],
        capture_output=True, text=True) for extra in ([], ["-v"]))
    for run in (quiet, verbose):
        assert run.returncode == 2 and "weight metadata missing" in run.stderr, run.stderr
    assert "No schema path specified" in verbose.stderr
    assert "No schema path specified" not in quiet.stderr


def test_work_folder_note_gives_place_size_and_what_to_do(tmp_path):
    (tmp_path / "work" / "node").mkdir(parents=True)
    with open(tmp_path / "work" / "node" / "big.nii.gz", "wb") as handle:
        handle.truncate(30_000_000)
    note = work_folder_note(tmp_path / "work")
    assert f"the work folder {tmp_path / 'work'} holds 0.03 GB" in note
    assert "resume" in note and f"rm -r {tmp_path / 'work'}" in note


def test_not_a_bids_dataset(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    assert main([str(tmp_path / "data"), str(tmp_path / "out"), "participant"]) == 2
    err = capsys.readouterr().err
    assert "not a BIDS dataset" in err and str(tmp_path / "data") in err


def test_all_problems_are_reported_at_once_and_nothing_is_written(tmp_path, capsys):
    bids = bids_skeleton(tmp_path / "bids", {"01": ["T1w"], "02": ["bold"], "03": ["T1w"]})
    # sub-03's T1w holds NaNs; sub-04 does not exist; sub-02 has no anatomical image
    img = nib.load(bids / "sub-03" / "anat" / "sub-03_T1w.nii.gz")
    data = img.get_fdata()
    data[5, 5, 5] = np.nan
    nib.save(nib.Nifti1Image(data, img.affine), str(bids / "sub-03" / "anat" / "sub-03_T1w.nii.gz"))
    code = main([str(bids), str(bids), "participant", "--participant-label", "01", "02", "03",
                 "04", "--skip-bids-validation", "--weights-dir", str(tmp_path / "none")])
    err = capsys.readouterr().err
    assert code == 2
    assert "must not be (inside) the BIDS folder" in err
    assert "weight file missing" in err or "metadata missing" in err
    assert "sub-04: no such participant" in err
    assert "sub-02: no T1w, T1-IR" in err
    assert "sub-03_T1w.nii.gz: contains NaN" in err
    assert not (bids / "dataset_description.json").read_text().count("derivative")


def test_4d_and_corrupt_images_are_refused_by_name(tmp_path, capsys):
    bids = bids_skeleton(tmp_path / "bids", {"01": [], "02": []})
    four_d = bids / "sub-01" / "anat" / "sub-01_T1w.nii.gz"
    four_d.parent.mkdir(parents=True)
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4, 3), np.float32), np.eye(4)), str(four_d))
    corrupt = tiny_image(bids / "sub-02" / "anat" / "sub-02_FLAIR.nii.gz")
    corrupt.write_bytes(corrupt.read_bytes()[:200])
    weights = random_weights(tmp_path / "w")
    code = main([str(bids), str(tmp_path / "out"), "participant", "--skip-bids-validation",
                 "--weights-dir", str(weights)])
    err = capsys.readouterr().err
    assert code == 2
    assert "sub-01_T1w.nii.gz: T1w must be a 3D image" in err
    assert "sub-02_FLAIR.nii.gz: cannot be read as NIfTI" in err
    assert not (tmp_path / "out").exists()


def test_a_weight_sidecar_that_is_not_json_is_one_line_naming_it(tmp_path, capsys):
    bids = bids_skeleton(tmp_path / "bids", {"01": ["T1w"]})
    weights = random_weights(tmp_path / "w", task="fine")
    sidecar = weights / "mixnet_v3_fine_axial.json"
    sidecar.write_text('{"task": "fine", ')
    code = main([str(bids), str(tmp_path / "out"), "participant", "--skip-bids-validation",
                 "--weights-dir", str(weights)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert f"{sidecar}: weight metadata is not valid JSON" in err
    assert not (tmp_path / "out").exists()


def test_group_level_without_participant_results(tmp_path, capsys):
    bids = bids_skeleton(tmp_path / "bids", {"01": ["T1w"]})
    assert main([str(bids), str(tmp_path / "out"), "group"]) == 2
    assert "run the participant level first" in capsys.readouterr().err


def test_group_level_gathers_the_conventions_the_participant_level_wrote(tmp_path, capsys):
    """Without --task, the group level gathers every convention the output folder holds
    (here participant runs with --task 8label, and one with --task wholebrain); with --task,
    that one alone."""
    bids = bids_skeleton(tmp_path / "bids", {"01": ["T1w"], "02": ["T1w"]})
    out = tmp_path / "out"
    for subject, task in (("01", "8label"), ("02", "8label"), ("02", "wholebrain")):
        anat = out / f"sub-{subject}" / "anat"
        anat.mkdir(parents=True, exist_ok=True)
        (anat / f"sub-{subject}_desc-{task}_volumes.tsv").write_text(
            "participant_id\tGM_ml\tWM_ml\tCSF_ml\tTIV_ml\n"
            f"sub-{subject}\t600.0\t450.0\t200.0\t1500.0\n")
    assert main([str(bids), str(out), "group"]) == 0
    printed = capsys.readouterr().out
    for task, subjects in (("8label", ["sub-01", "sub-02"]), ("wholebrain", ["sub-02"])):
        assert f"group_desc-{task}_volumes.tsv" in printed
        table = (out / f"group_desc-{task}_volumes.tsv").read_text().splitlines()
        assert [row.split("\t")[0] for row in table] == ["participant_id", *subjects]
    assert not (out / "group_desc-3label_volumes.tsv").exists()
    assert main([str(bids), str(out), "group", "--task", "3label"]) == 2
    assert "no participant results (*_desc-3label_volumes.tsv)" in capsys.readouterr().err


def test_plane_weights_must_match_planes(tmp_path, capsys):
    bids = bids_skeleton(tmp_path / "bids", {"01": ["T1w"]})
    code = main([str(bids), str(tmp_path / "out"), "participant", "--planes", "axial",
                 "--plane-weights", "1:4"])
    assert code == 2
    assert "--plane-weights has 2 values for 1 planes" in capsys.readouterr().err


def test_a_bids_folder_named_demo_is_a_bids_folder(tmp_path, monkeypatch, capsys):
    """The demo is a command of its own (mixnet-bids-demo): ``mixnet-bids demo ...`` reads
    a folder called demo like any other."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo").mkdir()
    assert main(["demo", "out", "participant"]) == 2
    assert "demo: not a BIDS dataset" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_console_script_runs(command):
    """The installed entry points (setup.py) start and show their usage."""
    script = Path(sys.executable).parent / command
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"usage: {command}" in result.stdout


def test_networks_of_another_preprocessing_version_warn_by_name(tmp_path):
    """A network trained on images another preprocessing made still runs, with a warning
    naming its file; a sidecar recording no version is not judged."""
    import json

    from mixnet_bids.cli.run import _settings_from_args
    from mixnet_bids.inference.weights import weight_path
    from mixnet_bids.inputs import collect_inputs
    from mixnet_bids.preprocessing import PREPROCESSING_VERSION

    bids = bids_skeleton(tmp_path / "bids", {"01": ["T1w"]})
    weights = random_weights(tmp_path / "w", task="fine")
    args = build_parser().parse_args([str(bids), str(tmp_path / "out"), "participant",
                                      "--skip-bids-validation", "--weights-dir", str(weights)])
    runs, problems = collect_inputs(_settings_from_args(args))
    assert not problems and runs[0].warnings == []
    sidecar = weight_path("fine", "coronal", "v3", weights).with_suffix(".json")
    meta = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({**meta, "preprocessing_version": PREPROCESSING_VERSION}))
    assert collect_inputs(_settings_from_args(args))[0][0].warnings == []
    sidecar.write_text(json.dumps({**meta, "preprocessing_version": PREPROCESSING_VERSION - 1}))
    runs, problems = collect_inputs(_settings_from_args(args))
    assert not problems
    assert runs[0].warnings == [
        f"mixnet_v3_fine_coronal.pt: trained on images of preprocessing version "
        f"{PREPROCESSING_VERSION - 1}, but this mixnet-bids makes version "
        f"{PREPROCESSING_VERSION}; its accuracy may be lower than measured (retrain it "
        "with mixnet-bids-train, or use the shipped networks)"]
