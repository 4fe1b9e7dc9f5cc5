"""Pictures: training history, prediction grids, confusion matrices.

Text that comes from users (file names, class names, model names) is drawn with
``parse_math=False``: a name like ``price_$5_$.jpg`` is text, not matplotlib math.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # figures go to files; a window is opened only on request (inference --show)
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.ticker import MaxNLocator

from .fileio import atomic_write


def _save(fig, path: str) -> None:
    atomic_write(path, lambda temp: fig.savefig(temp, format=os.path.splitext(path)[1][1:] or "png", dpi=100))
    plt.close(fig)


def plot_history(history: Sequence[dict], path: str, title: str = "Training Loss and Accuracy on Dataset") -> None:
    """The tutorial's ggplot curves, on two panels (loss and accuracy live on different scales),
    with the best validation epoch marked, and where a run was resumed or stopped early."""
    epochs = [r["epoch"] for r in history]
    best = max(history, key=lambda r: r["val_acc"])
    with plt.style.context("ggplot"):
        fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 4.5))
        loss_ax.plot(epochs, [r["train_loss"] for r in history], "o-", label="train_loss")
        loss_ax.plot(epochs, [r["val_loss"] for r in history], "o-", label="val_loss")
        acc_ax.plot(epochs, [r["train_acc"] for r in history], "o-", label="train_acc")
        acc_ax.plot(epochs, [r["val_acc"] for r in history], "o-", label="val_acc")
        resumed = [r["epoch"] for r in history if r.get("resumed")]
        stopped = [r["epoch"] for r in history if r.get("stopped_early")]
        for ax, ylabel in ((loss_ax, "Loss"), (acc_ax, "Accuracy")):
            ax.axvline(best["epoch"], color="gray", linestyle="--", linewidth=1,
                       label=f"best val_acc {best['val_acc']:.3f} (epoch {best['epoch']})")
            for k, epoch in enumerate(resumed):  # between the last saved epoch and the first resumed one
                ax.axvline(epoch - 0.5, color="tab:purple", linestyle=":", linewidth=1.5,
                           label="resumed" if k == 0 else None)
            for epoch in stopped:
                ax.axvline(epoch, color="black", linestyle="-.", linewidth=1.5, label=f"early stop (epoch {epoch})")
            ax.set_xlabel("Epoch #")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylabel(ylabel)
            ax.legend(loc="best", fontsize=8)
        acc_ax.set_ylim(0, 1.02)
        fig.suptitle(title, parse_math=False)
        fig.tight_layout()
        _save(fig, path)


def denormalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """(N, 3, H, W) normalised tensors -> (N, H, W, 3) uint8 pixels."""
    mean_t = torch.tensor(mean).view(1, 3, 1, 1)
    std_t = torch.tensor(std).view(1, 3, 1, 1)
    pixels = (images.float().cpu() * std_t + mean_t).clamp(0, 1) * 255
    return pixels.round().byte().permute(0, 2, 3, 1).numpy()


def image_grid(pixels: np.ndarray, titles: Sequence[str], path: str, colors: Sequence[str] | None = None,
               suptitle: str | None = None) -> None:
    """Images with a title each, in a near-square grid."""
    count = max(len(titles), 1)
    cols = min(4, count)
    rows = math.ceil(count / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 3.9 * rows), squeeze=False, layout="constrained")
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(titles):
            ax.imshow(pixels[i])
            ax.set_title(titles[i], fontsize=9, color=(colors[i] if colors else "black"), parse_math=False)
    if suptitle:
        fig.suptitle(suptitle, parse_math=False)
    _save(fig, path)


def plot_confusion(matrix: np.ndarray, class_names: Sequence[str], path: str, title: str = "") -> None:
    """Counts on the left, row-normalised (recall per true class) on the right."""
    rows = matrix.sum(1, keepdims=True)
    normalised = np.divide(matrix, rows, out=np.zeros_like(matrix, dtype=float), where=rows > 0)
    size = max(5.0, 0.6 * len(class_names) + 3)
    fig, axes = plt.subplots(1, 2, figsize=(2 * size + 1, size))
    for ax, values, label, fmt in ((axes[0], matrix, "counts", "d"), (axes[1], normalised, "row-normalised", ".2f")):
        ax.imshow(values, cmap="Blues", vmin=0, vmax=values.max() if values.max() > 0 else 1)
        ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right", parse_math=False)
        ax.set_yticks(range(len(class_names)), class_names, parse_math=False)
        ax.set_xlabel("Predicted")
        ax.set_ylabel("True")
        ax.set_title(label)
        threshold = values.max() / 2 if values.max() > 0 else 0.5
        for (i, j), value in np.ndenumerate(values):
            ax.text(j, i, format(value, fmt), ha="center", va="center", fontsize=8,
                    color="white" if value > threshold else "black")
    fig.suptitle(title or "Confusion matrix", parse_math=False)
    fig.tight_layout()
    _save(fig, path)
