"""What a report shows when there are more classes than a table or a numbered matrix can hold.

Above ``MANY_CLASSES`` classes (the tutorial has 5), the confusion matrix is drawn as one
row-normalised heat map without per-cell numbers, its classes ordered so that classes confused
with each other sit next to each other; the most confused pairs go to a JSON and a CSV table; a
bar chart shows each class's recall, worst first; and the terminal gets a summary instead of a
row per class.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..utils.figures import drawable_lines, plt, save_figure
from ..utils.fileio import write_csv, write_text
from ..utils.text import drawable, printable, shortened

MANY_CLASSES = 20
MAX_SIDE_PX, DPI = 4096, 100
# class names longer than this are cut in the middle on the pictures (the CSV tables keep them whole):
# a 145-character name took a quarter of a 4096 px picture's width and grew its file past 4 MB
LABEL_WIDTH = 32
SUFFIXES = ("_confused_pairs.json", "_confused_pairs.csv", "_recall.png")


def confused_pairs(matrix: np.ndarray, class_names: Sequence[str]) -> list[dict[str, Any]]:
    """Every (true, predicted) pair of different classes that happened, most frequent first;
    ``share`` is the part of the true class's images that went to the predicted one."""
    support = matrix.sum(1)
    pairs = [{"true": class_names[i], "predicted": class_names[j], "count": int(matrix[i, j]),
              "share": float(matrix[i, j] / support[i])}
             for i, j in zip(*np.nonzero(matrix)) if i != j]
    return sorted(pairs, key=lambda p: (-p["count"], -p["share"], p["true"], p["predicted"]))


def cluster_order(matrix: np.ndarray) -> list[int]:
    """Classes in an order that puts confused classes side by side: greedily, each next class is
    the unplaced one most confused (both ways) with the last one placed; a new run starts from
    the most confused class left."""
    confusion = (matrix + matrix.T).astype(float)
    np.fill_diagonal(confusion, 0)
    totals = confusion.sum(1)
    left, order = set(range(len(matrix))), []
    while left:
        current = max(left, key=lambda k: (totals[k], -k))
        while True:
            order.append(current)
            left.discard(current)
            links = [(confusion[current, k], -k) for k in left if confusion[current, k] > 0]
            if not links:
                break
            current = -max(links)[1]
    return order


def plot_large_confusion(matrix: np.ndarray, class_names: Sequence[str], path: str, title: str) -> None:
    """One row-normalised panel, clustered, no numbers in the cells, at most MAX_SIDE_PX a side."""
    order = cluster_order(matrix)
    rows = matrix.sum(1, keepdims=True)
    normalised = np.divide(matrix, rows, out=np.zeros_like(matrix, dtype=float), where=rows > 0)[np.ix_(order, order)]
    names = [shortened(drawable(class_names[k]), LABEL_WIDTH) for k in order]
    side = min(MAX_SIDE_PX / DPI, max(8.0, 0.14 * len(names) + 3))
    font = max(3.0, min(8.0, 0.7 * 72 * (side - 3) / len(names)))  # 70 % of each class's pitch, in points
    fig, ax = plt.subplots(figsize=(side, side))
    image = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=font, parse_math=False)
    ax.set_yticks(range(len(names)), names, fontsize=font, parse_math=False)
    ax.set_xlabel("Predicted")
    ax.set_ylabel("True")
    fig.colorbar(image, ax=ax, fraction=0.03, label="share of the true class (recall on the diagonal)")
    ax.set_title(drawable_lines(title) + "\nrow-normalised; classes ordered so that confusions cluster", parse_math=False)
    fig.tight_layout()
    save_figure(fig, path)


def plot_recall(result: dict[str, Any], path: str) -> None:
    """Each class's recall as a bar, worst first, with its support."""
    rows = sorted(result["classes"], key=lambda r: (r["recall"], r["class"]))
    height = min(MAX_SIDE_PX / DPI, max(4.0, 0.16 * len(rows) + 1.5))
    fig, ax = plt.subplots(figsize=(8, height))
    ax.barh(range(len(rows)), [r["recall"] for r in rows], color="tab:blue")
    ax.set_yticks(range(len(rows)), [f"{shortened(drawable(r['class']), LABEL_WIDTH)} ({r['support']})" for r in rows],
                  fontsize=7, parse_math=False)
    ax.invert_yaxis()  # the worst class on top
    ax.set_xlim(0, 1)
    ax.set_xlabel("recall (images of the class predicted as it); support in parentheses")
    ax.set_title(f"Recall per class, worst first (balanced accuracy {result['balanced_accuracy']:.3f})")
    fig.tight_layout()
    save_figure(fig, path)


def write_tables(result: dict[str, Any], prefix: str) -> None:
    pairs = result["confused_pairs"]
    write_text(f"{prefix}_confused_pairs.json", json.dumps(pairs, indent=2))
    write_csv(f"{prefix}_confused_pairs.csv", ["true", "predicted", "count", "share"],
              ([p["true"], p["predicted"], p["count"], f"{p['share']:.6f}"] for p in pairs))


def summary(result: dict[str, Any], prefix: str, shown: int = 10) -> str:
    """What to look at first: the overall numbers, the worst classes, the most confused pairs."""
    worst = sorted(result["classes"], key=lambda r: (r["recall"], r["class"]))[:shown]
    width = max(len(printable(r["class"])) for r in worst)
    lines = [f"accuracy {result['accuracy']:.4f} of {result['count']} images, balanced accuracy "
             f"{result['balanced_accuracy']:.4f}, macro F1 {result['macro_f1']:.4f} over {len(result['classes'])} "
             "classes", f"the {len(worst)} classes with the lowest recall:"]
    lines += [f"  {printable(r['class']):<{width}}  recall {r['recall']:.4f}  f1 {r['f1']:.4f}  support {r['support']}"
              for r in worst]
    pairs = result["confused_pairs"][:shown]
    lines.append(f"the {len(pairs)} most confused pairs (true -> predicted):")
    lines += [f"  {printable(p['true'])} -> {printable(p['predicted'])}: {p['count']} ({p['share'] * 100:.1f} % of "
              f"{printable(p['true'])})"
              for p in pairs]
    lines.append(f"every class: {prefix}_report.csv; every confused pair: {prefix}_confused_pairs.csv")
    return "\n".join(lines)
