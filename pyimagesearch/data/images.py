"""Opening image files the same way everywhere: checked, and always as 8-bit RGB."""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageOps

from ..utils.fileio import NOT_REGULAR, is_regular_file

# what build_dataset.py copies and ImageFolder reads; matched case-insensitively
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
ORIENTATION = 0x0112  # the EXIF tag


def is_image_file(path: str) -> bool:
    """An image by its extension, and not a hidden file (macOS ._ forks, editor leftovers)."""
    name = os.path.basename(path)
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


class ImageFileFilter:
    """ImageFolder's ``is_valid_file``: image files by extension that are regular files; the
    others named like images are remembered in ``skipped`` to be listed, never opened, and the
    files of other kinds (an animated .gif, notes.txt) in ``ignored``, hidden files aside."""

    def __init__(self) -> None:
        self.skipped: list[str] = []
        self.ignored: list[str] = []

    def __call__(self, path: str) -> bool:
        if not is_image_file(path):
            if not os.path.basename(path).startswith("."):
                self.ignored.append(path)
            return False
        if not is_regular_file(path):
            self.skipped.append(path)
            return False
        return True


def train_draft_size(image_size: int, min_scale: float = 0.08, min_ratio: float = 3 / 4) -> int:
    """How far training may let the JPEG decoder shrink a photo.

    RandomResizedCrop's smallest crop covers ``min_scale`` of the area at aspect ``min_ratio``,
    so its short side is sqrt(min_scale * min_ratio * area). Drafting keeps both sides at least
    the returned size, which keeps that smallest crop at ``image_size`` pixels or more: drafting
    never makes a crop coarser than the tutorial's full-size decode would have.
    """
    return math.ceil(image_size / math.sqrt(min_scale * min_ratio))


def upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation (phone photos are stored sideways with a rotation tag)."""
    try:
        if image.getexif().get(ORIENTATION, 1) in (0, 1):
            return image  # upright already: no copy (exif_transpose copies every image it is given)
        return ImageOps.exif_transpose(image)
    except Exception:  # a malformed EXIF block: the pixels are still good, as stored
        return image


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB.

    Transparent pixels are laid over white (``convert("RGB")`` would show whatever colour
    hides under the alpha, often black), and 16-bit images are scaled down rather than
    clipped (Pillow's own I;16 -> RGB conversion saturates everything above 255).
    """
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        values = np.asarray(image, dtype=np.int64)
        peak = 65535 if image.mode != "I" or values.max(initial=0) > 255 else 255
        scaled = np.clip(values * 255 // peak, 0, 255).astype(np.uint8)
        return Image.fromarray(scaled, mode="L").convert("RGB")
    if image.mode == "F":
        values = np.asarray(image, dtype=np.float32)
        low, high = float(values.min(initial=0.0)), float(values.max(initial=1.0))
        scaled = (values - low) / max(high - low, 1e-12) * 255
        return Image.fromarray(scaled.astype(np.uint8), mode="L").convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def load_rgb(path: str, draft_size: int | None = None) -> Image.Image:
    """Decode ``path`` fully into an RGB image.

    ``draft_size`` lets Pillow's JPEG decoder downscale by a power of two while decoding,
    never below ``draft_size`` on either side: a large photo decodes several times faster.
    """
    if not is_regular_file(path):
        raise OSError(f"not a regular file: {path}")
    with Image.open(path) as image:
        if draft_size and image.format == "JPEG":
            image.draft("RGB", (draft_size, draft_size))
        image.load()
        return to_rgb(upright(image))


class RGBLoader:
    """An ImageFolder ``loader``; a class (not a lambda) so DataLoader workers can pickle it."""

    def __init__(self, draft_size: int | None = None) -> None:
        self.draft_size = draft_size

    def __call__(self, path: str) -> Image.Image:
        return load_rgb(path, self.draft_size)


# what check_image decodes a JPEG at, at least: every byte is still read, and a large photo costs
# far less. CHECK_DRAFT when nobody needs the pixels; FINGERPRINT_DRAFT for the duplicate check,
# whose 32 px fingerprint is then taken at least 8 times smaller: drafted to 64 px, a 262 x 166
# photo and its 90 % copy were decoded at 131 x 83 and 118 x 75 by the JPEG decoder's own
# scaling, and their fingerprints differed by 9 bits; at 256 both decode whole
CHECK_DRAFT = 64
FINGERPRINT_DRAFT = 256


def check_image(path: str, on_decoded: Callable[[Image.Image], object] | None = None) -> str | None:
    """Decode ``path`` and return why it cannot be used, or None when it is fine.

    Pillow's decompression-bomb guard stays on, and its warning (over MAX_IMAGE_PIXELS,
    under twice that) counts as a refusal too, since training would decode it again.
    ``on_decoded`` is given the decoded picture of a usable image (upright RGB, JPEGs drafted to
    FINGERPRINT_DRAFT px or more a side), so that whoever needs its pixels does not decode it again.
    """
    if not is_regular_file(path):
        return NOT_REGULAR
    if os.path.getsize(path) == 0:
        return "empty file (0 bytes)"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                if image.format == "JPEG":
                    side = CHECK_DRAFT if on_decoded is None else FINGERPRINT_DRAFT
                    image.draft("RGB", (side, side))  # decodes every byte, for less
                image.load()
                picture = to_rgb(upright(image))
                if on_decoded is not None and picture is image:
                    picture = image.copy()  # closing the file closes an image that was not converted
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        return f"too many pixels (decompression-bomb guard): {error}"
    except Image.UnidentifiedImageError:
        return "not an image Pillow can read"
    except (OSError, SyntaxError, ValueError) as error:
        return f"cannot be decoded ({error})"
    if on_decoded is not None:
        on_decoded(picture)
    return None
