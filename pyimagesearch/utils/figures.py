"""Figures written to files: saved atomically, and grids of pictures with a title each.

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

from .fileio import atomic_write
from .text import drawable

__all__ = ["denormalize", "drawable_lines", "image_grid", "plt", "save_figure"]


def save_figure(fig, path: str) -> None:
    atomic_write(path, lambda temp: fig.savefig(temp, format=os.path.splitext(path)[1][1:] or "png", dpi=100))
    plt.close(fig)


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
            ax.set_title(drawable_lines(titles[i]), fontsize=9, color=(colors[i] if colors else "black"),
                         parse_math=False)
    if suptitle:
        fig.suptitle(drawable_lines(suptitle), parse_math=False)
    save_figure(fig, path)


def drawable_lines(text: str) -> str:
    """A title of several lines, each line drawable (utils/text.py): the breaks are the caller's."""
    return "\n".join(drawable(line) for line in str(text).split("\n"))
