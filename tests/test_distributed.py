"""torchrun: one set of outputs, each process's own randomness and resume state, and leaving the
process group.
"""

from __future__ import annotations

import json
import os

import pytest
import torch

from background import TORCHRUN_RUNS, counts
from conftest import fine_tune_parser, train_args
from pyimagesearch import checkpoint


@pytest.mark.parametrize("name", ["warmup", "warmup_nocache", "finetune"])
def test_torchrun_two_processes_write_one_set_of_outputs(torchrun_launch, name):
    result, root, logs = torchrun_launch
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out, val_count = root / name, counts(root / "dataset")["val"]

    assert sorted(f for f in os.listdir(out) if f.endswith(".pth")) == [f"{name}_model.pth", f"{name}_model_best.pth",
                                                                        f"{name}_model_resume.pth"]
    assert sorted(f for f in os.listdir(out) if f.endswith(".png") and "_model_" not in f) == [f"{name}.png"]
    assert logs[name].count("[INFO] EPOCH: 1/2") == 1  # logged by rank 0 only

    history = json.loads((out / f"{name}_history.json").read_text())
    assert len(history) == TORCHRUN_RUNS.get(f"{name}_resumed", TORCHRUN_RUNS[name])[2]  # fine-tuning's: resumed
    assert all(record["val_count"] == val_count for record in history)  # every image once, no padding

    model, meta = checkpoint.load(str(out / f"{name}_model.pth"))
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, len(meta["class_names"])) and torch.isfinite(logits).all()


def test_torchrun_resume_continues_each_process_from_its_own_random_state(torchrun_launch):
    result, root, logs = torchrun_launch
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    resumable = torch.load(root / "finetune" / "finetune_model_resume.pth", weights_only=True)["resume"]
    assert len(resumable["rng"]) == 2 and not torch.equal(resumable["rng"][0]["torch"], resumable["rng"][1]["torch"])
    assert "resuming after epoch 2 of 3" in logs["finetune_resumed"]
    history = json.loads((root / "finetune" / "finetune_history.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2, 3] and history[2].get("resumed") is True
    assert all(record["val_count"] == counts(root / "dataset")["val"] for record in history)


def test_each_process_draws_its_own_augmentation_from_identical_weights(torchrun_launch):
    result, _, _ = torchrun_launch
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    draws = {d["rank"]: d for d in map(json.loads, lines) if "rank" in d}
    assert sorted(draws) == [0, 1]
    assert draws[0]["weights"] == draws[1]["weights"]  # one model, initialised once
    assert draws[0]["augmentation"] != draws[1]["augmentation"]  # main-process transforms
    assert draws[0]["worker"] != draws[1]["worker"]  # DataLoader workers


def test_every_process_leaves_the_group_when_set_up_fails(tmp_path, splits, monkeypatch):
    import pyimagesearch.session
    from pyimagesearch.utils.errors import UserError

    calls = []
    monkeypatch.setattr(pyimagesearch.session, "init_distributed", lambda device: calls.append("join"))
    monkeypatch.setattr(pyimagesearch.session, "shutdown_distributed", lambda: calls.append("leave"))
    os.rename(os.path.join(splits, "val", "red"), os.path.join(splits, "val", "orange"))  # classes differ
    import fine_tune

    with pytest.raises(UserError, match="class folders differ"):
        fine_tune.main(train_args(tmp_path, splits, "finetune"))
    assert calls[0] == "join" and "leave" in calls


def test_the_other_processes_leave_before_the_main_one_writes_the_report(tmp_path, splits, monkeypatch):
    """No process may wait in a collective (a barrier) while rank 0 calibrates, evaluates and plots."""
    import pyimagesearch.session
    from pyimagesearch import model as model_module

    order = []
    monkeypatch.setattr(pyimagesearch.session, "is_distributed", lambda: "leave" not in order)
    monkeypatch.setattr(pyimagesearch.session, "shutdown_distributed", lambda: order.append("leave"))
    monkeypatch.setattr(pyimagesearch.session, "evaluate_and_report", lambda *a, **k: order.append("report"))
    args = fine_tune_parser().parse_args(train_args(tmp_path, splits, "finetune", "--epochs", "1"))
    from pyimagesearch.create_dataloaders import eval_image_folder

    with pyimagesearch.session.TrainingSession(args) as session:
        session.leave_group_calibrate_and_report(model_module.build_model(3, head="mlp"),
                                                 eval_image_folder(args.val, args.image_size),
                                                 calibrate=lambda: order.append("calibrate"))
    assert order[:3] == ["leave", "calibrate", "report"]


def test_torchrun_find_lr_is_written_and_said_once(torchrun_launch):
    result, root, logs = torchrun_launch
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert logs["warmup_find_lr"].count("[INFO] --find-lr:") == 1  # the first process only
    found = sorted(f for f in os.listdir(root / "warmup_find_lr") if "lr_find" in f)
    assert found == ["warmup_find_lr_model_lr_find.json", "warmup_find_lr_model_lr_find.png"]
    assert not [f for f in os.listdir(root / "warmup_find_lr") if f.endswith(".pth")]
