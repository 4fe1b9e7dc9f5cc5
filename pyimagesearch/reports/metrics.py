"""The numbers of a report: the confusion matrix, per-class precision, recall and F1, and the
table the terminal shows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..utils.text import printable


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> np.ndarray:
    """Rows are true classes, columns predicted ones; every class of the model has its row."""
    from sklearn import metrics  # here, not at the top: scikit-learn takes 1.5 s to import, and a run
    # that writes no report need not pay it

    return metrics.confusion_matrix(y_true, y_pred, labels=range(num_classes)).astype(np.int64)


def classification_report(y_true: Sequence[int], y_pred: Sequence[int], class_names: Sequence[str]) -> dict[str, Any]:
    """Accuracy plus precision, recall, F1 and support per class (0 where undefined), over every
    class of the model, whether the images hold it or not."""
    from sklearn import metrics

    labels = range(len(class_names))
    precision, recall, f1, support = metrics.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0)
    present = support > 0
    return {
        "accuracy": float(metrics.accuracy_score(y_true, y_pred)) if len(y_true) else 0.0,
        "count": len(y_true),
        "classes": [
            {"class": name, "precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(class_names, precision, recall, f1, support)
        ],
        # over every class of the model: a class absent from the folder and never predicted counts as F1 0
        "macro_f1": float(f1.mean()) if len(f1) else 0.0,
        # the mean recall over the classes present: what accuracy would be if every class had as many images
        # (balanced_accuracy_score's number, without its warning when a prediction names an absent class)
        "balanced_accuracy": float(recall[present].mean()) if present.any() else 0.0,
        "confusion_matrix": confusion_matrix(y_true, y_pred, len(class_names)).tolist(),
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
