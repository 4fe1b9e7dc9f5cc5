"""The OpenCV drawing kit of inference's pictures: labels drawn on a photo, and a montage of
photos with imutils.

Pillow decodes the photo (EXIF orientation applied, as for the model); OpenCV only draws on the
pixels and encodes the result, so nothing here changes what the model sees.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import cv2
import imutils
import numpy as np
from PIL import Image

from ..utils import fileio

GREEN = (0, 255, 0)  # the label colour of PyImageSearch's OpenCV examples (BGR)
RED = (0, 0, 255)
BLACK = (0, 0, 0)
MONTAGE_TILE = (256, 256)
MONTAGE_LIMIT = 64  # photos in a montage (the first ones): 16 rows of 4 tiles; more photos are in their own files
WRITABLE = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


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


def montage_tile(frame: np.ndarray) -> np.ndarray:
    """A picture shrunk to a montage tile's width, so that a montage's tiles need little memory."""
    return imutils.resize(frame, width=MONTAGE_TILE[0]) if frame.shape[1] > MONTAGE_TILE[0] else frame


def write_montage(tiles: Sequence[np.ndarray], path: str) -> str:
    """The first MONTAGE_LIMIT tiles in rows of 4, with imutils, written with OpenCV."""
    tiles = list(tiles[:MONTAGE_LIMIT])
    columns = min(4, len(tiles))
    write_image(path, imutils.build_montages(tiles, MONTAGE_TILE, (columns, -(-len(tiles) // columns)))[0])
    return path
