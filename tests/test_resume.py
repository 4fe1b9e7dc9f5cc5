"""--resume: a stopped run continues to the same weights; settings that cannot continue, and damaged
states, are named.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

import build_dataset
import fine_tune
import train_feature_extraction
from conftest import (
    error_text,
    make_image_folder,
    train_args,
)
from pyimagesearch.utils.errors import run_cli


def _outcome(out: str):
    state = torch.load(os.path.join(out, "finetune_model.pth"), weights_only=True)["model"]
    history = json.loads(open(os.path.join(out, "finetune_history.json")).read())
    return state, [{k: r[k] for k in METRICS} for r in history], history


METRICS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "train_count", "val_count", "lr")


def _resumable_copy(finetuned_once, tmp_path):
    base, output = finetuned_once
    shutil.copytree(output, tmp_path / "output")
    return base, tmp_path / "output" / "finetune_model_resume.pth"


@pytest.fixture(scope="module")
def finetuned_once(tmp_path_factory):
    """One 1-epoch fine-tuning run: (dataset folder, its output folder), copied by each test."""

    root = tmp_path_factory.mktemp("finetuned")
    data = make_image_folder(str(root / "photos"))
    base = str(root / "dataset")
    build_dataset.main(["--data", data, "--output", base, "--val-split", "0.34", "--no-progress"])
    fine_tune.main(train_args(root, base, "finetune", "--epochs", "1", "--no-report"))
    return base, root / "output"


def test_a_run_stopped_by_sigint_resumes_and_extends_to_the_same_weights(sigint_runs):
    """Fresh processes, as a user's runs are (floating-point kernels in a process that has run
    other tests need not repeat bit for bit): a 4-epoch reference and, side by side, a 3-epoch
    run that sends itself a real SIGINT as epoch 3 starts (after epoch 2 was logged and saved),
    so no timing decides where it stops; then the interrupted run resumed and extended to 4
    (tests/background.py)."""
    whole, cut = str(sigint_runs / "whole"), str(sigint_runs / "cut")

    def outcome(log: str) -> tuple[int, str]:
        return int((sigint_runs / f"{log}.code").read_text()), (sigint_runs / log).read_text()

    code, out = outcome("whole.log")
    assert code == 0, out[-2000:]
    code, out = outcome("cut.log")
    assert code == 130, out[-2000:]
    assert "[INFO] EPOCH: 2/3" in out and "EPOCH: 3/3" not in out and "--resume" in out
    assert "stopped after epoch 2;" in out  # what its resumable state held then (the resumed run replaced it)
    # resumed, and extended past the 3 epochs it was started with
    code, out = outcome("resumed.log")
    assert code == 0, out[-2000:]
    assert "resuming after epoch 2 of 4" in out

    reference_state, reference_history, _ = _outcome(whole)
    state, history, raw = _outcome(cut)
    assert history == reference_history
    assert all(torch.equal(state[k], reference_state[k]) for k in reference_state)  # bitwise
    assert [r.get("resumed", False) for r in raw] == [False, False, True, False]
    # the best model's calibration and novelty reference are its own after a resume too: the resumed
    # run knows which epoch its best model is from
    for name in ("finetune_model_best.pth", "finetune_model.pth"):
        resumed, reference = (torch.load(os.path.join(run, name), weights_only=True) for run in (cut, whole))
        assert resumed["epoch"] == reference["epoch"]
        assert torch.equal(resumed["novelty"]["reference"], reference["novelty"]["reference"]), name


@pytest.mark.parametrize("mode", [["--cache-views", "2"], ["--no-feature-cache", "--decode-once", "on"]])
def test_feature_extraction_resumes_exactly_with_its_features_from_the_cache(tmp_path, small_dataset, mode):
    """With the feature cache the views come back from it; without, every epoch's augmentation is
    drawn from the loader's generator, photos decoded once, which --resume restores."""
    def run(name, *extra):
        args = train_args(tmp_path, small_dataset, "warmup", "--no-report", *mode, *extra)
        args[args.index("--model") + 1] = str(tmp_path / name / "warmup_model.pth")
        args[args.index("--plot") + 1] = str(tmp_path / name / "warmup.png")
        train_feature_extraction.main(args)
        return torch.load(tmp_path / name / "warmup_model.pth", weights_only=True)["model"]

    whole = run("whole", "--epochs", "3")
    run("split", "--epochs", "1")
    split = run("split", "--epochs", "3", "--resume")  # its features come from the persistent cache
    assert all(torch.equal(whole[k], split[k]) for k in whole)


def test_resuming_with_settings_that_cannot_continue_names_the_difference(tmp_path, small_dataset, capsys):
    fine_tune.main(train_args(tmp_path, small_dataset, "finetune", "--epochs", "1"))
    code = run_cli(fine_tune.main, train_args(tmp_path, small_dataset, "finetune", "--epochs", "2", "--resume",
                                               "--image-size", "48"))
    err = error_text(capsys)
    assert code == 2 and "image_size: 32 then, 48 now" in err
    code = run_cli(fine_tune.main, train_args(tmp_path, small_dataset, "finetune", "--epochs", "1", "--resume"))
    assert code == 2 and "already trained 1 epoch(s)" in error_text(capsys)
    code = run_cli(fine_tune.main, train_args(tmp_path / "elsewhere", small_dataset, "finetune", "--resume"))
    assert code == 2 and "no resumable state" in error_text(capsys)


def test_resume_with_another_seed_is_refused(tmp_path, finetuned_once, capsys):
    base, _ = _resumable_copy(finetuned_once, tmp_path)
    code = run_cli(fine_tune.main, train_args(tmp_path, base, "finetune", "--epochs", "2", "--resume", "--seed", "7"))
    assert code == 2 and "seed: 42 then, 7 now" in error_text(capsys)


@pytest.mark.parametrize("damage,message", [
    (lambda s: s["resume"]["rng"][0].pop("numpy"), "KeyError"),
    (lambda s: s["resume"].__setitem__("history", s["resume"]["history"][:0]), "history does not hold 1"),
    (lambda s: s["resume"]["optimizer"].pop("param_groups"), "damaged or incomplete"),
    (lambda s: s["resume"].__setitem__("epoch", "one"), "its epoch is 'one'"),
    (lambda s: s["resume"].pop("stopping"), "lacks ['stopping']"),
])
def test_a_damaged_resume_state_is_one_paragraph(tmp_path, finetuned_once, capsys, damage, message):
    base, path = _resumable_copy(finetuned_once, tmp_path)
    state = torch.load(path, weights_only=True)
    damage(state)
    torch.save(state, path)
    code = run_cli(fine_tune.main, train_args(tmp_path, base, "finetune", "--epochs", "2", "--resume"))
    err = error_text(capsys)
    assert code == 2 and message in err and "Traceback" not in err and str(path) in err


def test_schedules_longer_than_the_run_and_changed_images_on_resume_are_warned_about(tmp_path, splits, capsys):
    fine_tune.main(train_args(tmp_path, splits, "finetune", "--epochs", "1", "--warmup-epochs", "1",
                              "--freeze-epochs", "2", "--no-report"))
    out = capsys.readouterr().out
    assert "--warmup-epochs 1 is not shorter than the run" in out and "--freeze-epochs 2 is not shorter" in out
    extra = os.path.join(splits, "train", "red", "new.jpg")
    shutil.copy(os.path.join(splits, "train", "red", sorted(os.listdir(os.path.join(splits, "train", "red")))[0]), extra)
    fine_tune.main(train_args(tmp_path, splits, "finetune", "--epochs", "3", "--warmup-epochs", "1",
                              "--freeze-epochs", "2", "--resume", "--no-report"))
    out = capsys.readouterr().out
    assert "the training images in" in out and "is not shorter than the run" not in out


def test_a_state_from_before_the_balanced_loss_resumes_unweighted_only(tmp_path, finetuned_once, capsys):
    """Such a state has no "balanced" setting: its epochs were unweighted, so --balanced cannot continue it."""
    base, path = _resumable_copy(finetuned_once, tmp_path)
    state = torch.load(path, weights_only=True)
    del state["resume"]["settings"]["balanced"]
    torch.save(state, path)
    code = run_cli(fine_tune.main, train_args(tmp_path, base, "finetune", "--epochs", "2", "--resume", "--balanced"))
    assert code == 2 and "balanced: False then, True now" in error_text(capsys)
    assert run_cli(fine_tune.main, train_args(tmp_path, base, "finetune", "--epochs", "2", "--resume", "--no-report")) == 0
