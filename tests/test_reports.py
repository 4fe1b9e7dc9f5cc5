"""The evaluation report: metrics by their definitions, pictures that stay legible, CSV cells a
spreadsheet cannot run.
"""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

import build_dataset
import inference
import train_feature_extraction
from conftest import (
    decoded_size,
    make_image_folder,
    train_args,
)
from pyimagesearch import checkpoint
from pyimagesearch.reports import report
from pyimagesearch.reports.metrics import classification_report, confusion_matrix
from pyimagesearch.utils import figures

# two reds that differ by a shade: the deliberately confusable pair
CONFUSABLE = {"blue": (30, 60, 220), "crimson": (200, 30, 40), "scarlet": (215, 45, 35)}


class _Images(torch.utils.data.Dataset):
    def __init__(self, labels):
        self.labels = labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return torch.zeros(3, 8, 8), int(self.labels[index])


def test_metrics_match_their_definitions_on_a_hand_example():
    y_true = [0, 0, 0, 1, 1, 2, 2, 2, 2]
    y_pred = [0, 1, 0, 1, 0, 2, 2, 1, 2]
    assert confusion_matrix(y_true, y_pred, 3).tolist() == [[2, 1, 0], [1, 1, 0], [0, 1, 3]]
    result = classification_report(y_true, y_pred, ["a", "b", "c"])
    b = result["classes"][1]
    assert b["precision"] == pytest.approx(1 / 3) and b["recall"] == pytest.approx(1 / 2)
    assert b["f1"] == pytest.approx(2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2)) and b["support"] == 2
    assert result["accuracy"] == pytest.approx(6 / 9)
    empty = classification_report([0, 0], [0, 0], ["x", "y"])
    assert empty["classes"][1] == {"class": "y", "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


def test_macro_f1_averages_over_every_class_of_the_model():
    # class "c" is absent from the folder and never predicted: it counts as F1 0
    result = classification_report([0, 0, 1, 1], [0, 1, 1, 1], ["a", "b", "c"])
    f1_a = 2 * 1.0 * 0.5 / 1.5
    f1_b = 2 * (2 / 3) * 1.0 / (2 / 3 + 1.0)
    assert result["macro_f1"] == pytest.approx((f1_a + f1_b + 0.0) / 3)


def _hand_written_report(y_true, y_pred, num_classes):
    """The report's numbers as the project computed them by hand before scikit-learn did: the
    reference the scikit-learn calls must equal."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true), np.asarray(y_pred)), 1)
    tp, predicted, support = np.diag(matrix).astype(float), matrix.sum(0).astype(float), matrix.sum(1).astype(float)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(tp), where=precision + recall > 0)
    return {"matrix": matrix.tolist(), "precision": precision, "recall": recall, "f1": f1, "support": support,
            "accuracy": tp.sum() / matrix.sum(), "macro_f1": f1.mean(), "balanced": recall[support > 0].mean()}


@pytest.mark.parametrize("seed", range(5))
def test_the_scikit_learn_metrics_equal_the_hand_written_ones_on_fixed_predictions(seed):
    # 7 classes; class 5 never appears among the truths and class 6 is never predicted
    rng = np.random.default_rng(seed)
    y_true = rng.choice([0, 1, 2, 3, 4, 6], size=200, p=[0.4, 0.2, 0.15, 0.1, 0.1, 0.05])
    y_pred = np.where(rng.random(200) < 0.6, y_true, rng.integers(0, 6, 200))
    y_pred[y_pred == 6] = 5
    reference = _hand_written_report(y_true, y_pred, 7)
    result = classification_report(y_true.tolist(), y_pred.tolist(), [f"c{i}" for i in range(7)])
    assert result["confusion_matrix"] == reference["matrix"]
    for key in ("precision", "recall", "f1", "support"):
        assert [row[key] for row in result["classes"]] == pytest.approx(reference[key].tolist(), abs=1e-12)
    for key, theirs in (("accuracy", "accuracy"), ("macro_f1", "macro_f1"), ("balanced_accuracy", "balanced")):
        assert result[key] == pytest.approx(float(reference[theirs]), abs=1e-12)


def test_evaluate_report_agrees_with_a_hand_count(tmp_path, capsys):
    data = make_image_folder(str(tmp_path / "photos"), per_class=9, classes=CONFUSABLE)
    base = str(tmp_path / "dataset")
    build_dataset.main(["--data", data, "--output", base, "--val-split", "0.34", "--no-progress"])
    train_feature_extraction.main(train_args(tmp_path, base, "warmup", "--epochs", "6", "--batch-size", "8"))
    assert "predictions from the run's cached features" in capsys.readouterr().out  # the body did not run again
    out = tmp_path / "output"
    after_training = json.loads((out / "warmup_model_report.json").read_text())
    assert after_training["count"] == 9 and after_training["class_names"] == sorted(CONFUSABLE)

    inference.main(["--model", str(out / "warmup_model.pth"), "--evaluate", os.path.join(base, "val"),
                    "--output", str(tmp_path / "eval"), "--device", "cpu", "--num-workers", "0", "--no-progress"])
    report = json.loads((tmp_path / "eval" / "warmup_model_report.json").read_text())
    # the report from cached features says what a fresh evaluation of the saved model says
    for key in ("confusion_matrix", "count"):
        assert after_training[key] == report[key]
    for key in ("accuracy", "macro_f1"):
        assert after_training[key] == pytest.approx(report[key])
    assert [m["path"] for m in after_training["mistakes"]] == [m["path"] for m in report["mistakes"]]

    # hand count: predict each validation image on its own and tally
    from pyimagesearch import config
    from pyimagesearch.create_dataloaders import eval_transforms, image_folder
    from pyimagesearch.freezing import fold_frozen_batchnorm
    from pyimagesearch.utils.runtime import Compute, resolve_amp

    model, meta = checkpoint.load(str(out / "warmup_model.pth"))
    fold_frozen_batchnorm(model.requires_grad_(False))
    cpu = torch.device("cpu")
    compute = Compute(cpu, resolve_amp(config.AMP, cpu), channels_last=True)  # the arithmetic inference uses
    model = compute.prepare(model)
    ds = image_folder(os.path.join(base, "val"), eval_transforms(meta["image_size"]))
    counts = np.zeros((3, 3), dtype=int)
    with torch.no_grad(), compute.autocast():
        for image, label in ds:
            counts[label, int(model(compute.to_device(image[None])).argmax())] += 1
    assert report["confusion_matrix"] == counts.tolist()
    for k, row in enumerate(report["classes"]):
        predicted, support = counts[:, k].sum(), counts[k].sum()
        assert row["support"] == support
        assert row["recall"] == pytest.approx(counts[k, k] / support)
        assert row["precision"] == pytest.approx(counts[k, k] / predicted if predicted else 0.0)
    assert report["accuracy"] == pytest.approx(np.trace(counts) / counts.sum())
    assert len(report["mistakes"]) == counts.sum() - np.trace(counts)
    confidences = [m["probability"] for m in report["mistakes"]]
    assert confidences == sorted(confidences, reverse=True)
    with open(tmp_path / "eval" / "warmup_model_report.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["class"] for r in rows if r["row"] == "class"] == sorted(CONFUSABLE)
    assert [r["class"] for r in rows if r["row"] == "summary"] == ["accuracy", "balanced accuracy", "macro F1"]
    assert decoded_size(tmp_path / "eval" / "warmup_model_confusion.png")[0] > 100
    if report["mistakes"]:
        assert decoded_size(tmp_path / "eval" / "warmup_model_mistakes.png")[0] > 100


def test_a_report_over_a_hundred_classes_stays_legible(tmp_path, capsys, monkeypatch):
    """The numbers and files of a many-class report; its pictures are drawn, and measured, by the
    300-class report below (drawing a hundred classes' labels takes seconds)."""
    from pyimagesearch.reports import many_classes, report

    def stand_in(path: str) -> None:  # an empty file where the picture goes
        open(path, "wb").close()

    monkeypatch.setattr(many_classes, "plot_large_confusion", lambda matrix, names, path, title: stand_in(path))
    monkeypatch.setattr(many_classes, "plot_recall", lambda result, path: stand_in(path))
    names = [f"c{k:03d}" for k in range(101)]
    labels = torch.arange(101).repeat_interleave(10)
    predicted = labels.clone()
    predicted[30:36] = 17  # c003 -> c017, 6 of its 10 images
    predicted[170:172] = 3  # c017 -> c003, 2 of 10
    predicted[50:54] = 9  # c005 -> c009, 4 of 10
    probabilities = torch.nn.functional.one_hot(predicted, 101).float() * 0.9 + 0.1 / 101
    prefix = str(tmp_path / "m")
    report.publish(probabilities, labels, names, _Images(labels), prefix, [0.5] * 3, [0.5] * 3)
    out = capsys.readouterr().out

    matrix = np.zeros((101, 101), dtype=int)
    np.add.at(matrix, (labels.numpy(), predicted.numpy()), 1)
    pairs = json.loads(open(f"{prefix}_confused_pairs.json").read())
    assert pairs[:3] == [{"true": "c003", "predicted": "c017", "count": 6, "share": 0.6},
                         {"true": "c005", "predicted": "c009", "count": 4, "share": 0.4},
                         {"true": "c017", "predicted": "c003", "count": 2, "share": 0.2}]
    assert sum(p["count"] for p in pairs) == matrix.sum() - np.trace(matrix)
    with open(f"{prefix}_confused_pairs.csv") as handle:
        assert len(list(csv.DictReader(handle))) == len(pairs)
    order = many_classes.cluster_order(matrix)
    assert abs(order.index(3) - order.index(17)) == 1 and abs(order.index(5) - order.index(9)) == 1

    assert all(os.path.exists(f"{prefix}{picture}") for picture in ("_confusion.png", "_recall.png"))
    recall = json.loads(open(f"{prefix}_report.json").read())
    assert recall["balanced_accuracy"] == pytest.approx(np.mean(np.diag(matrix) / matrix.sum(1)))

    # the terminal: a summary, worst classes and pairs first, not 101 rows
    assert "balanced accuracy" in out and "the 10 classes with the lowest recall" in out
    assert out.index("c003  recall 0.4000") < out.index("c005  recall 0.6000") < out.index("c017  recall 0.8000")
    assert "c003 -> c017: 6 (60.0 % of c003)" in out and f"{prefix}_confused_pairs.csv" in out
    assert "precision  recall" not in out

    # with the tutorial's few classes the report is as it was, and stale many-class files go
    few = torch.arange(5).repeat_interleave(4)
    report.publish(torch.nn.functional.one_hot(few, 5).float(), few, names[:5], _Images(few), prefix, [0.5] * 3,
                   [0.5] * 3)
    assert "precision  recall" in capsys.readouterr().out
    assert not any(os.path.exists(f"{prefix}{suffix}") for suffix in many_classes.SUFFIXES)


def test_imbalanced_classes_are_warned_about_when_built_and_when_trained(tmp_path, capsys):
    data = str(tmp_path / "photos")
    make_image_folder(data, per_class=25, classes={"big": (220, 40, 40)})
    make_image_folder(data, per_class=5, classes={"small": (40, 200, 60), "green": (30, 60, 220)}, seed=1)
    base = str(tmp_path / "dataset")
    build_dataset.main(["--data", data, "--output", base, "--val-split", "0.2", "--no-progress"])
    out = capsys.readouterr().out
    assert "[WARN] the classes are imbalanced: 'big' has 25 images, 5 times 'green' (5)" in out
    train_feature_extraction.main(train_args(tmp_path, base, "warmup", "--epochs", "1", "--no-report"))
    assert "[WARN] the training classes are imbalanced: 'big' has 20 images" in capsys.readouterr().out

    even = str(tmp_path / "even")
    make_image_folder(even, per_class=6)
    build_dataset.main(["--data", even, "--output", str(tmp_path / "even_dataset"), "--no-progress"])
    assert "[WARN]" not in capsys.readouterr().out


def test_csv_cells_that_a_spreadsheet_would_run_are_neutralised(tmp_path, capsys):
    import build_dataset

    classes = {"=cmd": (220, 40, 40), "+plus": (40, 200, 60), "accuracy": (30, 60, 220), "'=cmd": (200, 200, 40)}
    data = make_image_folder(str(tmp_path / "photos"), per_class=6, classes=classes)
    base = str(tmp_path / "dataset")
    build_dataset.main(["--data", data, "--output", base, "--val-split", "0.34", "--no-progress"])
    train_feature_extraction.main(train_args(tmp_path, base, "warmup", "--epochs", "1"))
    with open(tmp_path / "output" / "warmup_model_report.csv") as handle:
        rows = list(csv.DictReader(handle))
    # sorted folders; "'=cmd" is kept apart from "=cmd": a spreadsheet shows one apostrophe less
    assert [r["class"] for r in rows if r["row"] == "class"] == ["''=cmd", "'+plus", "'=cmd", "accuracy"]
    assert [r["class"] for r in rows if r["row"] == "summary"] == ["accuracy", "balanced accuracy", "macro F1"]
    images = os.path.join(base, "val", "=cmd")
    inference.main(["--model", str(tmp_path / "output" / "warmup_model.pth"), "--images", images, "--output",
                    str(tmp_path / "o"), "--top-k", "3"])
    with open(tmp_path / "o" / "warmup_model_images.csv") as handle:
        cells = [cell for row in csv.reader(handle) for cell in row]
    assert not any(cell.startswith(("=", "+")) for cell in cells) and "'=cmd" in cells
    assert json.loads((tmp_path / "o" / "warmup_model_images.json").read_text())["predictions"][0]["top"][0]["class"] \
        in classes  # the JSON keeps the names as they are


def test_dollar_signs_in_names_are_drawn_as_text(tmp_path, trained):
    _, model = trained
    photo = tmp_path / "price_$5_$.jpg"
    Image.fromarray(np.full((40, 40, 3), 200, np.uint8)).save(photo)
    out = tmp_path / "out"
    inference.main(["--model", model, "--images", str(photo), "--output", str(out), "--num-workers", "0"])
    assert (out / "warmup_model_images.png").stat().st_size > 0
    report.plot_confusion(np.eye(2, dtype=np.int64), ["a$b$", "c$d"], str(tmp_path / "c.png"), title="$x$ report")
    figures.image_grid(np.zeros((1, 8, 8, 3), np.uint8), ["$\\frac{1}{$"], str(tmp_path / "g.png"), suptitle="$$")


def test_three_hundred_long_class_names_keep_the_pictures_small(many_classes_report):
    from background import long_class_names
    from pyimagesearch.reports import many_classes
    from pyimagesearch.utils.text import shortened

    prefix = many_classes_report / "m"
    assert "Warning" not in (many_classes_report / "stderr.txt").read_text()  # matplotlib's tight layout fits
    for picture in ("_confusion.png", "_recall.png"):
        assert os.path.getsize(f"{prefix}{picture}") <= 2.5 * 2**20, picture
        with Image.open(f"{prefix}{picture}") as image:
            assert max(image.size) <= 4096 and min(image.size) > 300
    names = long_class_names()
    assert len(shortened(names[0], many_classes.LABEL_WIDTH)) == many_classes.LABEL_WIDTH < len(names[0])
    with open(f"{prefix}_report.csv") as handle:  # the tables keep every name whole
        assert {row["class"] for row in csv.DictReader(handle) if row["row"] == "class"} == set(names)
