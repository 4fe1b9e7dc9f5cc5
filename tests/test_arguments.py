"""Flags and config.py values: every bad value or unusable path stops at once, naming the flag or
setting and the fix, before any image is read.
"""

from __future__ import annotations

import os

import pytest

import build_dataset
import fine_tune
import inference
import train_feature_extraction
from conftest import (
    error_text,
    make_image_folder,
    train_args,
)
from pyimagesearch import model as model_module
from pyimagesearch.utils.errors import run_cli


def test_training_without_dataset_names_the_fix(tmp_path, capsys):
    code = run_cli(fine_tune.main, ["--train", str(tmp_path / "nope" / "train"), "--val", str(tmp_path / "nope"),
                                    "--weights", "none", "--device", "cpu"])
    assert code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "nope" in err and "build_dataset.py" in err and "Traceback" not in err


@pytest.mark.parametrize("model,plot", [("m.png", "m.png"), ("out/m.pth", "out/../out/m.pth")])
def test_a_run_whose_outputs_coincide_is_refused_before_training(tmp_path, splits, capsys, model, plot):
    args = train_args(tmp_path, splits, "warmup")
    args[args.index("--model") + 1] = str(tmp_path / model)
    args[args.index("--plot") + 1] = str(tmp_path / plot)
    assert run_cli(train_feature_extraction.main, args) == 2
    err = error_text(capsys)
    assert "would both be written to" in err or "--plot" in err
    assert not os.path.exists(tmp_path / model)


def test_training_refuses_to_overwrite_a_file_it_did_not_write(tmp_path, splits, capsys):
    precious = tmp_path / "output" / "warmup_model.pth"
    precious.parent.mkdir()
    precious.write_bytes(b"three weeks of someone else's training")
    code = run_cli(train_feature_extraction.main, train_args(tmp_path, splits, "warmup"))
    assert code == 2 and "not a checkpoint this project wrote" in error_text(capsys)
    assert precious.read_bytes() == b"three weeks of someone else's training"


@pytest.mark.parametrize("flag,value", [("--lr", "-0.1"), ("--lr", "nan"), ("--lr", "inf"), ("--lr", "0"),
                                        ("--batch-size", "0"), ("--num-workers", "-1"), ("--epochs", "0"),
                                        ("--grad-accum-steps", "0"), ("--image-size", "abc"), ("--image-size", "8"),
                                        ("--seed", "-1"), ("--seed", "4294967296")])
def test_bad_numbers_stop_at_once_naming_the_flag(tmp_path, capsys, flag, value):
    # the dataset does not exist: had the value got through, the error would be about the folder
    args = ["--train", str(tmp_path / "none"), "--val", str(tmp_path / "none"), "--weights", "none", flag, value]
    with pytest.raises(SystemExit) as stopped:
        fine_tune.main(args)
    err = error_text(capsys)
    assert stopped.value.code == 2 and f"argument {flag}" in err and "none" not in err.split(flag)[-1]


@pytest.mark.parametrize("extra,message", [
    (["--plot", "{out}/p.txt"], ".txt"),
    (["--plot", "{file}/warmup.png"], "is a file"),
    (["--model", "{file}/warmup_model.pth"], "is a file"),
    (["--model", "{out}"], "is a folder"),
])
def test_unusable_outputs_are_refused_before_any_image_is_read(tmp_path, capsys, monkeypatch, extra, message):
    read = []
    monkeypatch.setattr(model_module, "build_model", lambda *a, **k: read.append("model"))
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    (tmp_path / "out").mkdir()
    extra = [e.format(out=tmp_path / "out", file=a_file) for e in extra]
    args = ["--train", str(tmp_path / "missing"), "--val", str(tmp_path / "missing"), "--weights", "none", *extra]
    code = run_cli(train_feature_extraction.main, args)
    err = error_text(capsys)
    assert code == 2 and message in err and "missing" not in err and "Traceback" not in err and not read


@pytest.mark.parametrize("args,message", [
    (["--eval-batch-size", "0"], "--eval-batch-size"),
    (["--batch-size", "0"], "--batch-size"),
    (["--num-workers", "-1"], "--num-workers"),
    (["--top-k", "0"], "--top-k"),
    (["--seed", "-1"], "--seed"),
    (["--seed", "4294967296"], "--seed"),
    (["--explain-layer", ""], "--explain-layer"),
])
def test_inference_numbers_are_checked_by_the_parser(trained, capsys, args, message):
    with pytest.raises(SystemExit) as stopped:
        inference.main(["--model", trained[1], *args])
    assert stopped.value.code == 2 and message in error_text(capsys)


def test_file_paths_where_folders_belong_are_one_clear_message(tmp_path, trained, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    data = make_image_folder(str(tmp_path / "photos"), per_class=2)
    for script, args in ((inference, ["--model", trained[1], "--output", str(a_file)]),
                         (build_dataset, ["--data", data, "--output", str(a_file)]),
                         (build_dataset, ["--data", str(a_file), "--output", str(tmp_path / "ds"), "--download"])):
        code = run_cli(script.main, args)
        err = error_text(capsys)
        assert code == 2 and str(a_file) in err and "Traceback" not in err, (script, err)
    assert a_file.read_text() == "x"


@pytest.mark.parametrize("script,name,value,flag", [
    (fine_tune, "NUM_WORKERS", -1, "--num-workers"),
    (fine_tune, "EPOCHS", 0, "--epochs"),
    (fine_tune, "LR_FINETUNE", -0.5, "--lr"),
    (fine_tune, "LR_SCHEDULER", "cosinus", "--lr-scheduler"),
    (train_feature_extraction, "FEATURE_CACHE", "false", "--feature-cache"),
    (train_feature_extraction, "FEATURE_CACHE_VIEWS", 1.5, "--cache-views"),
    (inference, "TOP_K", 0, "--top-k"),
    (build_dataset, "SEED", 4.5, "--seed"),
    (fine_tune, "SEED", -1, "--seed"),
    (fine_tune, "IMAGE_SIZE", 8, "--image-size"),
    (inference, "EXPLAIN_LAYER", None, "--explain-layer"),
    (inference, "EXPLAIN_LAYER", 4, "--explain-layer"),
    (inference, "EXPLAIN_LAYER", "", "--explain-layer"),
    (inference, "FEATURE_CACHE_DIR", 5, "--feature-cache-dir"),
    (inference, "CALIBRATION", "yes", "--calibration"),
    (inference, "UNLIKE_PERCENTILE", 30, "--unlike-percentile"),
    (inference, "UNLIKE_PERCENTILE", "high", "--unlike-percentile"),
    (train_feature_extraction, "FEATURE_CACHE_DIR", None, "--feature-cache-dir"),
])
def test_config_values_are_checked_as_their_flags_are(tmp_path, capsys, monkeypatch, script, name, value, flag):
    from pyimagesearch import config

    monkeypatch.setattr(config, name, value)
    none = str(tmp_path / "none")  # refused before any folder is looked at
    argv = {fine_tune: train_args(tmp_path, none, "finetune"), inference: ["--model", str(tmp_path / "m.pth")],
            train_feature_extraction: train_args(tmp_path, none, "warmup"),
            build_dataset: ["--data", str(tmp_path / "photos"), "--output", str(tmp_path / "d")]}[script]
    with pytest.raises(SystemExit) as stopped:
        script.main(argv)
    err = error_text(capsys)
    assert stopped.value.code == 2 and flag in err and repr(value) in err
    assert "pyimagesearch/config.py" in err and "Traceback" not in err
    assert not (tmp_path / "output").exists() and not (tmp_path / "d").exists()  # refused before any work


@pytest.mark.parametrize("value", ["false", "off", "no", -1, 0])
def test_a_keep_allocator_memory_that_is_not_a_switch_is_refused(tmp_path, capsys, monkeypatch, value):
    from pyimagesearch.utils import settings

    monkeypatch.setattr(settings, "KEEP_ALLOCATOR_MEMORY", value)  # refused before any folder is looked at
    assert run_cli(fine_tune.main, train_args(tmp_path, str(tmp_path / "none"), "finetune")) == 2
    err = error_text(capsys)
    assert f"KEEP_ALLOCATOR_MEMORY {value!r}" in err and "pyimagesearch/utils/settings.py" in err




def test_help_and_bad_flags_answer_before_the_slow_imports(startup_answers):
    """python -X importtime shows where the seconds of a start go; here only what is loaded counts.
    The scripts run in a process of their own (tests/background.py), as a user's start would."""
    assert startup_answers.returncode == 0, startup_answers.stderr[-3000:]
    lines = startup_answers.stdout.strip().splitlines()
    assert len(lines) == 12
    for line in lines:
        assert " 0 [] " in line or " 2 [] " in line, line  # exit 0 for --help, 2 for the errors; nothing heavy
    assert sum(" 2 [] " in line for line in lines) == 8
