"""The four scripts, run in-process in the tutorial's order on a tiny generated dataset."""

from __future__ import annotations

import json
import os

import pytest
import torch
from PIL import Image

import build_dataset
import fine_tune
import inference
import train_feature_extraction
from conftest import make_image_folder, train_args
from pyimagesearch import checkpoint
from pyimagesearch.errors import run_cli


def _decodes(path: str) -> tuple[int, int]:
    with Image.open(path) as image:
        image.load()
        return image.size


@pytest.mark.parametrize("script,name,head", [(train_feature_extraction, "warmup", "linear"),
                                              (fine_tune, "finetune", "mlp")])
def test_training_script_writes_checkpoint_history_and_plot(tmp_path, splits, script, name, head):
    script.main(train_args(tmp_path, splits, name))
    out = tmp_path / "output"

    _, meta = checkpoint.load(str(out / f"{name}_model.pth"))
    assert meta["head"] == head
    assert meta["class_names"] == ["blue", "green", "red"]
    assert meta["image_size"] == 32 and meta["epoch"] == 2
    assert len(meta["mean"]) == 3 and len(meta["std"]) == 3
    assert set(meta["metrics"]) >= {"train_loss", "val_acc"}

    raw = torch.load(out / f"{name}_model.pth", weights_only=True)  # plain types only
    assert raw["arch"] == "resnet50" and isinstance(raw["model"], dict)

    history = json.loads((out / f"{name}_history.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2]
    for record in history:
        assert record["train_loss"] > 0 and record["val_loss"] > 0
        assert 0 <= record["train_acc"] <= 1 and 0 <= record["val_acc"] <= 1
        assert record["train_count"] == 12 and record["val_count"] == 6
    _, best_meta = checkpoint.load(str(out / f"{name}_model_best.pth"))
    assert best_meta["metrics"]["val_acc"] == max(r["val_acc"] for r in history)
    assert _decodes(str(out / f"{name}.png"))[0] > 400
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]


def test_inference_rebuilds_model_from_checkpoint_alone(tmp_path, splits):
    fine_tune.main(train_args(tmp_path, splits, "finetune", "--epochs", "1"))
    out = tmp_path / "output"
    inference.main(["--model", str(out / "finetune_model.pth"), "--val", os.path.join(splits, "val"),
                    "--output", str(out), "--device", "cpu", "--seed", "0", "--num-workers", "0"])
    width, height = _decodes(str(out / "finetune_model_predictions.png"))
    assert width > 300 and height > 200


def test_feature_extraction_learns_a_separable_set(tmp_path):
    data = make_image_folder(str(tmp_path / "photos"), per_class=8)
    base = str(tmp_path / "dataset")
    build_dataset.main(["--data", data, "--output", base, "--val-split", "0.34", "--no-progress"])
    train_feature_extraction.main(train_args(tmp_path, base, "warmup", "--epochs", "15", "--batch-size", "8",
                                             "--no-report"))
    history = json.loads((tmp_path / "output" / "warmup_history.json").read_text())
    assert history[-1]["train_loss"] < history[0]["train_loss"] / 2
    assert history[-1]["val_acc"] > 1 / 3 + 0.2  # three classes: chance is 1/3


def test_fine_tuning_loss_falls(tmp_path):
    data = make_image_folder(str(tmp_path / "photos"), per_class=8)
    base = str(tmp_path / "dataset")
    build_dataset.main(["--data", data, "--output", base, "--val-split", "0.34", "--no-progress"])
    fine_tune.main(train_args(tmp_path, base, "finetune", "--epochs", "4", "--batch-size", "8", "--no-report"))
    history = json.loads((tmp_path / "output" / "finetune_history.json").read_text())
    assert history[-1]["train_loss"] < history[0]["train_loss"]


def test_training_without_dataset_names_the_fix(tmp_path, capsys):
    code = run_cli(fine_tune.main, ["--train", str(tmp_path / "nope" / "train"), "--val", str(tmp_path / "nope"),
                                    "--weights", "none", "--device", "cpu"])
    assert code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "nope" in err and "build_dataset.py" in err and "Traceback" not in err


def test_hidden_folders_in_the_split_are_not_classes(tmp_path, splits):
    from pyimagesearch.create_dataloaders import eval_transforms, get_dataloader

    checkpoints = os.path.join(splits, "train", ".ipynb_checkpoints")
    os.makedirs(checkpoints)
    Image.new("RGB", (8, 8)).save(os.path.join(checkpoints, "img-checkpoint.jpg"))
    ds, loader = get_dataloader(os.path.join(splits, "train"), eval_transforms(16), batchSize=5, shuffle=False,
                                num_workers=0)
    assert ds.classes == ["blue", "green", "red"] and len(ds) == 12
    images, labels = next(iter(loader))
    assert images.shape == (5, 3, 16, 16) and labels.tolist() == [0, 0, 0, 0, 1]
