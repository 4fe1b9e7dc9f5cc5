"""What --audit needs, checked with the command line, before any model or library loads: a
checkpoint (not an ONNX export), and at least two class folders with as many photos as folds."""

from __future__ import annotations

import os
from collections.abc import Sequence

from ..arguments import is_onnx
from ..data.dataset import scan
from ..utils.errors import UserError
from ..utils.text import printable
from .label_issues import too_small


def check_audit(model_path: str, folder: str, folds: int) -> None:
    if is_onnx(model_path):
        raise UserError(f"--audit needs the body's features, and '{model_path}' is an exported ONNX model, which "
                        "gives only class scores. Pass the checkpoint it was exported from (a .pth file, such as "
                        "output/finetune_model.pth).")
    classes = sorted(entry.name for entry in os.scandir(folder) if entry.is_dir() and not entry.name.startswith("."))
    if not classes:
        raise UserError(f"--audit '{folder}' holds no class folders. Point --audit at the folder of class folders, "
                        "such as dataset/train.")
    if len(classes) < 2:
        raise UserError(f"--audit '{folder}' holds one class folder ({classes[0]}); an audit compares classes, "
                        "so it needs at least two. Point --audit at the folder of class folders (dataset/train).")
    photos = scan(folder, check=False, progress=False).images  # listed by name, none decoded yet
    check_counts([index for index, name in enumerate(classes) for _ in photos.get(name, [])], classes, folder, folds)


def check_counts(labels: Sequence[int], classes: Sequence[str], folder: str, folds: int) -> None:
    """Every class has at least ``folds`` photos: each fold's head must see every class."""
    small = too_small(labels, classes, folds)
    if small:
        listed = ", ".join(f"'{printable(name)}' ({count})" for name, count in small[:5])
        fewest = min(count for _, count in small)
        fewer_folds = f"pass --folds {fewest}, " if fewest >= 2 else ""
        raise UserError(f"--audit: {len(small)} class(es) of '{folder}' have fewer readable photos than the {folds} "
                        f"folds of the cross-validation: {listed}{' ...' if len(small) > 5 else ''}. Every fold's head "
                        f"must see every class: {fewer_folds}add photos to those classes, or audit a folder without "
                        "them.")
