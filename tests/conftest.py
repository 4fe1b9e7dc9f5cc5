"""Shared fixtures: tiny generated image folders, so every test runs offline in seconds."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

COLORS = {"blue": (30, 60, 220), "green": (40, 200, 60), "red": (220, 40, 40)}


def make_image_folder(root: str, per_class: int = 6, size: int = 40, classes=COLORS, seed: int = 0) -> str:
    """<root>/<class>/img_N.jpg: noisy images whose main colour is the class (easily separable)."""
    rng = np.random.default_rng(seed)
    for name, color in classes.items():
        folder = os.path.join(root, name)
        os.makedirs(folder, exist_ok=True)
        for i in range(per_class):
            pixels = np.clip(np.array(color) + rng.normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(os.path.join(folder, f"img_{i}.jpg"), quality=90)
    return root


@pytest.fixture
def flower_photos(tmp_path):
    """A stand-in for flower_photos/: three colour classes, plus the LICENSE.txt the real one has."""
    root = make_image_folder(str(tmp_path / "flower_photos"))
    with open(os.path.join(root, "LICENSE.txt"), "w") as handle:
        handle.write("licence text\n")
    return root


@pytest.fixture
def splits(tmp_path, flower_photos):
    """dataset/{train,val} built by the real build_dataset.py."""
    import build_dataset

    base = str(tmp_path / "dataset")
    build_dataset.main(["--data", flower_photos, "--output", base, "--val-split", "0.34", "--no-progress"])
    return base


def train_args(tmp_path, base: str, name: str, *extra: str) -> list[str]:
    """Flags for a quick, offline training run writing into tmp_path/output."""
    out = tmp_path / "output"
    return ["--train", os.path.join(base, "train"), "--val", os.path.join(base, "val"),
            "--weights", "none", "--image-size", "32", "--epochs", "2", "--batch-size", "4",
            "--num-workers", "0", "--device", "cpu", "--no-progress",
            "--plot", str(out / f"{name}.png"), "--model", str(out / f"{name}_model.pth"), *extra]
