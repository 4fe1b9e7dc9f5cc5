"""The numbers of a report: the confusion matrix, per-class precision, recall and F1, and the
table the terminal shows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..utils.text import printable


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
    width = max([len("class")] + [len(printable(row["class"])) for row in result["classes"]])
    lines = [f"{'class':<{width}}  precision  recall     f1  support"]
    for row in result["classes"]:
        lines.append(f"{printable(row['class']):<{width}}  {row['precision']:9.4f}  {row['recall']:6.4f}  {row['f1']:5.4f}"
                     f"  {row['support']:7d}")
    lines.append(f"{'accuracy':<{width}}  {result['accuracy']:.4f} of {result['count']} images, "
                 f"macro F1 {result['macro_f1']:.4f} (over all {len(result['classes'])} classes)")
    return "\n".join(lines)
