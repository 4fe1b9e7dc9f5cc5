"""How good is a model: per-class metrics, a confusion matrix, the most confident mistakes,
written from predictions already made (the engine makes them)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..utils.figures import denormalize, drawable_lines, image_grid, plt, save_figure
from ..utils.fileio import write_csv, write_text
from ..utils.text import drawable
from . import calibration as calibration_plot
from . import many_classes
from .metrics import classification_report, format_table

# the files write_report names after the model: <prefix>_report.json and so on
REPORT_SUFFIXES = ("_report.json", "_report.csv", "_confusion.png", "_mistakes.png", calibration_plot.SUFFIX,
                   *many_classes.SUFFIXES)


def write_report(probabilities: torch.Tensor, labels: torch.Tensor, class_names: Sequence[str], dataset,
                 prefix: str, mean: Sequence[float], std: Sequence[float], max_mistakes: int = 16,
                 paths: Sequence[str] | None = None, calibration: dict | None = None,
                 novelty: dict | None = None) -> dict[str, Any]:
    """Write <prefix>_report.json/.csv, <prefix>_confusion.png and <prefix>_mistakes.png, and with
    ``calibration`` (trust/temperature.py's judgement) <prefix>_calibration.png; ``novelty`` (how
    many photos were flagged as unlike every class) joins the JSON.

    ``dataset[i]`` must give the (normalised image, label) that produced ``probabilities[i]``.
    """
    predictions = probabilities.argmax(1)
    result = classification_report(labels.tolist(), predictions.tolist(), class_names)
    matrix = np.asarray(result["confusion_matrix"])
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
    if calibration is not None:
        result["calibration"] = calibration
    if calibration is not None and "bins_raw" in calibration:  # judged on enough photos to draw
        calibration_plot.plot_reliability(calibration, f"{prefix}{calibration_plot.SUFFIX}",
                                          f"{os.path.basename(prefix)}: {calibration_plot.judged_on(calibration)}")
    elif os.path.exists(f"{prefix}{calibration_plot.SUFFIX}"):
        os.remove(f"{prefix}{calibration_plot.SUFFIX}")  # an old picture would describe another model
    if novelty is not None:
        result["novelty"] = novelty
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
        plot_confusion(matrix, class_names, f"{prefix}_confusion.png", title=title)
        for suffix in many_classes.SUFFIXES:  # an earlier many-class report's, describing another model
            if os.path.isfile(f"{prefix}{suffix}"):
                os.remove(f"{prefix}{suffix}")
    shown = wrong[:max_mistakes]
    if shown:
        images = torch.stack([dataset[i][0] for i in shown])
        titles = [f"true: {class_names[int(labels[i])]}\npredicted: {class_names[int(predictions[i])]} "
                  f"({float(confidence[i]):.2f})" for i in shown]
        image_grid(denormalize(images, mean, std), titles, f"{prefix}_mistakes.png",
                         suptitle="Most confident mistakes")
    elif os.path.exists(f"{prefix}_mistakes.png"):
        os.remove(f"{prefix}_mistakes.png")  # an old picture would describe another model
    return result


def publish(probabilities: torch.Tensor, labels: torch.Tensor, class_names: Sequence[str], dataset, prefix: str,
            mean: Sequence[float], std: Sequence[float], seconds: float | None = None, calibration: dict | None = None,
            novelty: dict | None = None) -> dict[str, Any]:
    """Write the report files for predictions already made, and print the table."""
    paths = [path for path, _ in getattr(dataset, "samples", [])] or None
    result = write_report(probabilities, labels, class_names, dataset, prefix, mean, std, paths=paths,
                          calibration=calibration, novelty=novelty)
    many = "confused_pairs" in result  # write_report's many-class report
    print(many_classes.summary(result, prefix) if many else format_table(result))
    speed = (f" in {seconds:.1f}s ({len(labels) / max(seconds, 1e-9):.1f} images/s)" if seconds is not None
             else " (predictions from the run's cached features)")
    print(f"[INFO] evaluated {len(labels)} images{speed}; "
          f"wrote {prefix}_report.json, {prefix}_report.csv, {prefix}_confusion.png"
          + (f", {prefix}_mistakes.png" if result["mistakes"] else "")
          + (f", {prefix}{calibration_plot.SUFFIX}" if calibration and "bins_raw" in calibration else "")
          + (f", {prefix}_recall.png, {prefix}_confused_pairs.json/.csv" if many else ""))
    return result


def plot_confusion(matrix: np.ndarray, class_names: Sequence[str], path: str, title: str = "") -> None:
    """Counts on the left, row-normalised (recall per true class) on the right."""
    rows = matrix.sum(1, keepdims=True)
    normalised = np.divide(matrix, rows, out=np.zeros_like(matrix, dtype=float), where=rows > 0)
    size = max(5.0, 0.6 * len(class_names) + 3)
    names = [drawable(name) for name in class_names]
    fig, axes = plt.subplots(1, 2, figsize=(2 * size + 1, size))
    for ax, values, label, fmt in ((axes[0], matrix, "counts", "d"), (axes[1], normalised, "row-normalised", ".2f")):
        ax.imshow(values, cmap="Blues", vmin=0, vmax=values.max() if values.max() > 0 else 1)
        ax.set_xticks(range(len(class_names)), names, rotation=45, ha="right", parse_math=False)
        ax.set_yticks(range(len(class_names)), names, parse_math=False)
        ax.set_xlabel("Predicted")
        ax.set_ylabel("True")
        ax.set_title(label)
        threshold = values.max() / 2 if values.max() > 0 else 0.5
        for (i, j), value in np.ndenumerate(values):
            ax.text(j, i, format(value, fmt), ha="center", va="center", fontsize=8,
                    color="white" if value > threshold else "black")
    fig.suptitle(drawable_lines(title or "Confusion matrix"), parse_math=False)
    fig.tight_layout()
    save_figure(fig, path)
