"""--annotate: each classified photo at its own size with its top-1 label drawn on it, and a
montage of them all."""

from __future__ import annotations

import os
from collections.abc import Sequence

from tqdm import tqdm

from ..data.images import load_rgb
from .drawing import MONTAGE_LIMIT, draw_lines, montage_tile, to_bgr, write_image, write_montage
from .output_folder import Written, annotated_names, check_targets, claim


def _label(row: dict) -> str:
    top = row["top"][0]
    return f"{top['class']}: {top['probability'] * 100:.1f}%"


def annotate_files(rows: Sequence[dict], folder: str, montage_name: str, progress: bool = True) -> Written:
    """Each classified photo at its own size with its top-1 label drawn on it, as
    ``<folder>/<name>_annotated.<ext>``, plus one montage of all of them.
    The folder's manifest lists them first, so even a killed run's files are known as ours."""
    names = [*annotated_names([row["path"] for row in rows]), montage_name]
    check_targets(folder, names)
    claim(folder, names)
    written, tiles = [], []
    for row, name in tqdm(list(zip(rows, names)), desc="annotating", unit="photo", disable=not progress, leave=False):
        frame = draw_lines(to_bgr(load_rgb(row["path"])), [_label(row)])
        path = os.path.join(folder, name)
        write_image(path, frame)
        written.append(path)
        if len(tiles) < MONTAGE_LIMIT:
            tiles.append(montage_tile(frame))
    return Written(written, write_montage(tiles, os.path.join(folder, montage_name)) if tiles else None)
