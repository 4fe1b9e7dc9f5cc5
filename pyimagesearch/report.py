"""How good is a model: per-class metrics, a confusion matrix, the most confident mistakes."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from . import engine, many_classes, plots
from .fileio import write_csv, write_text
from .runtime import Compute

# the files write_report names after the model: <prefix>_report.json and so on
REPORT_SUFFIXES = ("_report.json", "_report.csv", "_confusion.png", "_mistakes.png", *many_classes.SUFFIXES)


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> np.ndarray:
    """Rows are true classes, columns predicted ones."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return matrix


def classification_report(matrix: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """Accuracy plus precision, recall, F1 and support per class (0 where undefined)."""
    true_positive = np.diag(matrix).astype(float)
    predicted = matrix.sum(0).astype(float)
    support = matrix.sum(1).astype(float)
    precision = np.divide(true_positive, predicted, out=np.zeros_like(true_positive), where=predicted > 0)
    recall = np.divide(true_positive, support, out=np.zeros_like(true_positive), where=support > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(true_positive), where=denominator > 0)
    total = int(matrix.sum())
    return {
        "accuracy": float(true_positive.sum() / total) if total else 0.0,
        "count": total,
        "classes": [
            {"class": name, "precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(class_names, precision, recall, f1, support)
        ],
        # over every class of the model, as scikit-learn's average="macro" with all labels: a class
        # absent from the folder and never predicted counts as F1 0
        "macro_f1": float(f1.mean()) if len(f1) else 0.0,
        # the mean recall over the classes present, as scikit-learn's balanced_accuracy_score: what
        # accuracy would be if every class had as many images
        "balanced_accuracy": float(recall[support > 0].mean()) if (support > 0).any() else 0.0,
        "confusion_matrix": matrix.tolist(),
        "class_names": list(class_names),
    }


def format_table(result: dict[str, Any]) -> str:
    width = max([len("class")] + [len(row["class"]) for row in result["classes"]])
    lines = [f"{'class':<{width}}  precision  recall     f1  support"]
    for row in result["classes"]:
        lines.append(f"{row['class']:<{width}}  {row['precision']:9.4f}  {row['recall']:6.4f}  {row['f1']:5.4f}"
                     f"  {row['support']:7d}")
    lines.append(f"{'accuracy':<{width}}  {result['accuracy']:.4f} of {result['count']} images, "
                 f"macro F1 {result['macro_f1']:.4f} (over all {len(result['classes'])} classes)")
    return "\n".join(lines)


def write_report(probabilities: torch.Tensor, labels: torch.Tensor, class_names: Sequence[str], dataset,
                 prefix: str, mean: Sequence[float], std: Sequence[float], max_mistakes: int = 16,
                 paths: Sequence[str] | None = None) -> dict[str, Any]:
    """Write <prefix>_report.json/.csv, <prefix>_confusion.png and <prefix>_mistakes.png.

    ``dataset[i]`` must give the (normalised image, label) that produced ``probabilities[i]``.
    """
    predictions = probabilities.argmax(1)
    matrix = confusion_matrix(labels.tolist(), predictions.tolist(), len(class_names))
    result = classification_report(matrix, class_names)
    confidence = probabilities.max(1).values
    wrong = (predictions != labels).nonzero().flatten().tolist()
    wrong.sort(key=lambda i: -float(confidence[i]))
    result["mistakes"] = [
        {"index": i, "path": paths[i] if paths else None, "true": class_names[int(labels[i])],
         "predicted": class_names[int(predictions[i])], "probability": float(confidence[i])}
        for i in wrong
    ]
    many = len(class_names) > many_classes.MANY_CLASSES
    if many:
        result["confused_pairs"] = many_classes.confused_pairs(matrix, class_names)
    write_text(f"{prefix}_report.json", json.dumps(result, indent=2))
    # the "row" column tells a class from the summary lines, whatever the classes are called (a
    # class folder may well be named "accuracy")
    rows = [["class", row["class"], f"{row['precision']:.6f}", f"{row['recall']:.6f}", f"{row['f1']:.6f}",
             row["support"]] for row in result["classes"]]
    rows.append(["summary", "accuracy", "", "", f"{result['accuracy']:.6f}", result["count"]])
    rows.append(["summary", "balanced accuracy", "", "", f"{result['balanced_accuracy']:.6f}", result["count"]])
    rows.append(["summary", "macro F1", "", "", f"{result['macro_f1']:.6f}", result["count"]])
    write_csv(f"{prefix}_report.csv", ["row", "class", "precision", "recall", "f1", "support"], rows)
    title = f"{os.path.basename(prefix)}: accuracy {result['accuracy']:.3f} on {result['count']} images"
    if many:
        many_classes.plot_large_confusion(matrix, class_names, f"{prefix}_confusion.png", title)
        many_classes.plot_recall(result, f"{prefix}_recall.png")
        many_classes.write_tables(result, prefix)
    else:
        plots.plot_confusion(matrix, class_names, f"{prefix}_confusion.png", title=title)
        for suffix in many_classes.SUFFIXES:  # an earlier many-class report's, describing another model
            if os.path.isfile(f"{prefix}{suffix}"):
                os.remove(f"{prefix}{suffix}")
    shown = wrong[:max_mistakes]
    if shown:
        images = torch.stack([dataset[i][0] for i in shown])
        titles = [f"true: {class_names[int(labels[i])]}\npredicted: {class_names[int(predictions[i])]} "
                  f"({float(confidence[i]):.2f})" for i in shown]
        plots.image_grid(plots.denormalize(images, mean, std), titles, f"{prefix}_mistakes.png",
                         suptitle="Most confident mistakes")
    elif os.path.exists(f"{prefix}_mistakes.png"):
        os.remove(f"{prefix}_mistakes.png")  # an old picture would describe another model
    return result


def publish(probabilities: torch.Tensor, labels: torch.Tensor, class_names: Sequence[str], dataset, prefix: str,
            mean: Sequence[float], std: Sequence[float], seconds: float | None = None) -> dict[str, Any]:
    """Write the report files for predictions already made, and print the table."""
    paths = [path for path, _ in getattr(dataset, "samples", [])] or None
    result = write_report(probabilities, labels, class_names, dataset, prefix, mean, std, paths=paths)
    many = "confused_pairs" in result  # write_report's many-class report
    print(many_classes.summary(result, prefix) if many else format_table(result))
    speed = (f" in {seconds:.1f}s ({len(labels) / max(seconds, 1e-9):.1f} images/s)" if seconds is not None
             else " (predictions from the run's cached features)")
    print(f"[INFO] evaluated {len(labels)} images{speed}; "
          f"wrote {prefix}_report.json, {prefix}_report.csv, {prefix}_confusion.png"
          + (f", {prefix}_mistakes.png" if result["mistakes"] else "")
          + (f", {prefix}_recall.png, {prefix}_confused_pairs.json/.csv" if many else ""))
    return result


def evaluate_and_report(model: nn.Module, loader: Iterable, class_names: Sequence[str], compute: Compute,
                        prefix: str, mean: Sequence[float], std: Sequence[float], progress: bool = True,
                        label_map: Sequence[int] | None = None) -> dict[str, Any]:
    """Predict every image of ``loader`` (shuffle off), print the table and write the report files.

    ``label_map[folder_label]`` translates the folder's class index into the model's.
    """
    started = time.perf_counter()
    probabilities, labels = engine.predict(model, loader, compute, progress=progress, desc="evaluate")
    seconds = time.perf_counter() - started
    if label_map is not None:
        labels = torch.tensor([label_map[int(label)] for label in labels], dtype=torch.long)
    return publish(probabilities, labels, class_names, loader.dataset, prefix, mean, std, seconds=seconds)
