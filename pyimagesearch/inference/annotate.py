"""--annotate: each classified photo at its own size with its top-1 label drawn on it (in red, with
a second line, when the photo is unlike every class), and a montage of them all."""

from __future__ import annotations

import os
from collections.abc import Sequence

from tqdm import tqdm

from ..data.images import load_rgb
from .drawing import GREEN, MONTAGE_LIMIT, RED, draw_lines, montage_tile, to_bgr, write_image, write_montage
from .output_folder import Written, annotated_names, check_targets, claim


def _label(row: dict) -> list[str]:
    """The top class and its probability; for a photo unlike every class, a second line that says
    so, since the class above it is then a guess."""
    top = row["top"][0]
    label = [f"{top['class']}: {top['probability'] * 100:.1f}%"]
    return [*label, "unlike every class"] if row.get("unlike_every_class") else label


def annotate_files(rows: Sequence[dict], folder: str, montage_name: str, progress: bool = True) -> Written:
    """Each classified photo at its own size with its top-1 label drawn on it, as
    ``<folder>/<name>_annotated.<ext>``, plus one montage of all of them.
    The folder's manifest lists them first, so even a killed run's files are known as ours."""
    names = [*annotated_names([row["path"] for row in rows]), montage_name]
    check_targets(folder, names)
    claim(folder, names)
    written, tiles = [], []
    for row, name in tqdm(list(zip(rows, names)), desc="annotating", unit="photo", disable=not progress, leave=False):
        frame = draw_lines(to_bgr(load_rgb(row["path"])), _label(row), RED if row.get("unlike_every_class") else GREEN)
        path = os.path.join(folder, name)
        write_image(path, frame)
        written.append(path)
        if len(tiles) < MONTAGE_LIMIT:
            tiles.append(montage_tile(frame))
    return Written(written, write_montage(tiles, os.path.join(folder, montage_name)) if tiles else None)
