"""Labels drawn on pictures with OpenCV, and a montage of them with imutils.

Pillow decodes the photo (EXIF orientation applied, as for the model); OpenCV only draws on the
pixels and encodes the result, so nothing here changes what the model sees.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import cv2
import imutils
import numpy as np
from PIL import Image
from tqdm import tqdm

from ..data.images import load_rgb
from ..utils import fileio
from ..utils.errors import UserError

GREEN = (0, 255, 0)  # the label colour of PyImageSearch's OpenCV examples (BGR)
BLACK = (0, 0, 0)
MONTAGE_TILE = (256, 256)
MONTAGE_LIMIT = 64  # photos in a montage (the first ones): 16 rows of 4 tiles; more photos are in their own files
WRITABLE = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


MANIFEST = ".annotated.json"  # in an --annotate or --explain folder: the files they wrote there


def to_bgr(image: Image.Image) -> np.ndarray:
    return cv2.cvtColor(np.asarray(image.convert("RGB")), cv2.COLOR_RGB2BGR)


def hershey(text: str) -> str:
    """``text`` as OpenCV's Hershey fonts can draw it: ASCII, anything else as '?'."""
    return text.encode("ascii", "replace").decode()


def draw_lines(frame: np.ndarray, lines: Sequence[str], color: tuple[int, int, int] = GREEN) -> np.ndarray:
    """Text lines in the top-left corner, sized to the picture, on a dark band so they read on any
    background. Draws on ``frame`` in place and returns it."""
    height, width = frame.shape[:2]
    scale = max(0.4, min(width, height) / 500)
    thickness = max(1, round(scale * 2))
    font = cv2.FONT_HERSHEY_SIMPLEX
    y = 0
    for line in lines:
        (text_width, text_height), baseline = cv2.getTextSize(line, font, scale, thickness)
        band = text_height + baseline + 2 * thickness + 6
        cv2.rectangle(frame, (0, y), (min(width, text_width + 12), y + band), BLACK, -1)
        cv2.putText(frame, line, (6, y + text_height + 3 + thickness), font, scale, color, thickness, cv2.LINE_AA)
        y += band
    return frame


def write_image(path: str, frame: np.ndarray) -> None:
    """Encode with OpenCV and write atomically (cv2.imwrite cannot write every file name everywhere)."""
    ok, encoded = cv2.imencode(os.path.splitext(path)[1].lower() or ".jpg", frame)
    if not ok:  # pragma: no cover - the extensions above always encode
        raise OSError(f"OpenCV could not encode {path}")

    def write(temp: str) -> None:
        with open(temp, "wb") as handle:
            handle.write(encoded.tobytes())

    fileio.atomic_write(path, write)


def _label(row: dict) -> str:
    top = row["top"][0]
    return f"{top['class']}: {top['probability'] * 100:.1f}%"


def montage_tile(frame: np.ndarray) -> np.ndarray:
    """A picture shrunk to a montage tile's width, so that a montage's tiles need little memory."""
    return imutils.resize(frame, width=MONTAGE_TILE[0]) if frame.shape[1] > MONTAGE_TILE[0] else frame


def write_montage(tiles: Sequence[np.ndarray], path: str) -> str:
    """The first MONTAGE_LIMIT tiles in rows of 4, with imutils, written with OpenCV."""
    tiles = list(tiles[:MONTAGE_LIMIT])
    columns = min(4, len(tiles))
    write_image(path, imutils.build_montages(tiles, MONTAGE_TILE, (columns, -(-len(tiles) // columns)))[0])
    return path


def annotated_names(paths: Sequence[str], suffix: str = "_annotated") -> list[str]:
    """``<name><suffix>.<ext>`` for each photo (``_annotated``, or ``_explained`` for --explain),
    numbered where two folders hold the same name."""
    names, used = [], set()
    for path in paths:
        stem, extension = os.path.splitext(os.path.basename(path))
        extension = extension.lower() if extension.lower() in WRITABLE else ".jpg"
        name, n = f"{stem}{suffix}{extension}", 1
        while name in used:
            n += 1
            name = f"{stem}{suffix}_{n}{extension}"
        used.add(name)
        names.append(name)
    return names


def explained_names(paths: Sequence[str], stem: str) -> list[str]:
    """What --explain writes into its folder: one picture per photo, the montage, the maps."""
    return [*annotated_names(paths, "_explained"), f"{stem}_explained_montage.jpg", f"{stem}_explained.npz"]


def written_here(folder: str) -> set[str]:
    """The files --annotate or --explain wrote in ``folder`` (its manifest): outputs, never inputs."""
    try:
        with open(os.path.join(folder, MANIFEST), encoding="utf-8") as handle:
            return set(json.load(handle)["written"])
    except (OSError, ValueError, KeyError, TypeError):
        return set()


def check_targets(folder: str, names: Sequence[str], flag: str = "--annotate") -> None:
    """No file --annotate (or --explain) would write replaces one it did not write itself (the
    user's own ``p_annotated.jpg``): checked before any photo is classified."""
    fileio.check_writable_folder(folder, flag)
    ours = written_here(folder)
    theirs = [name for name in names if os.path.lexists(os.path.join(folder, name)) and name not in ours]
    if theirs:
        listed = ", ".join(f"'{os.path.join(folder, name)}'" for name in theirs[:3])
        raise UserError(f"{flag}: {listed}{f' and {len(theirs) - 3} more' if len(theirs) > 3 else ''} already "
                        f"exist and were not written by --annotate or --explain; they would be overwritten. Choose "
                        f"another {flag} folder, or move them away.")


def claim(folder: str, names: Sequence[str]) -> None:
    """List ``names`` in the folder's manifest before writing them, so that even a killed run's
    files are known as ours."""
    fileio.write_text(os.path.join(folder, MANIFEST),
                      json.dumps({"written": sorted(written_here(folder) | set(names))}, indent=1))


def annotate_files(rows: Sequence[dict], folder: str, montage_name: str, progress: bool = True) -> list[str]:
    """Each classified photo at its own size with its top-1 label drawn on it, as
    ``<folder>/<name>_annotated.<ext>``, plus one montage of all of them; returns the paths.
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
    if tiles:
        written.append(write_montage(tiles, os.path.join(folder, montage_name)))
    return written
