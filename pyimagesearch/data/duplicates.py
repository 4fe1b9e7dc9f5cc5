"""Exact and near-duplicate photos: found with a perceptual hash, grouped, kept on one side of the split.

A copy of a photo in both the training and the validation split is validated against itself, which
inflates validation accuracy; a photo filed under two classes teaches both labels at once. The
fingerprint is taken from the pixels ``check_image`` has decoded already, so finding duplicates
costs no second decode.

Two files are duplicates when their bytes are identical (SHA-256), or when they are *near*
duplicates: OpenCV contrib's perceptual hash (``cv2.img_hash.PHash``, 64 bits of the image's
low-frequency structure in grey) differs in at most ``max_distance`` bits **and** their 16 x 16
colour thumbnails differ by at most ``THUMBNAIL_TOLERANCE`` levels (of 255) on average. The hash
alone calls every flat image, and photos of one composition, the same; the thumbnail keeps them
apart. A mirrored copy, or one turned by 90 degrees, counts as well: training's own flips and
rotations would make such a pair leak across the split as an identical copy does, so each photo
is hashed in its 8 mirrored and quarter-turned orientations and matched in the closest one.

Calibrated with ``benchmarks/calibrate_duplicates.py`` on 820 real, textured images from 100 to
4,000 px (docs/your-own-photos.md has the figures): re-encoded, mirrored and turned copies are
found at 1.0 recall, rescaled ones at 0.98 and rescaled re-encoded ones at 0.96 (0.79 under
200 px), and 2 of 335,790 pairs of different images passed both tests (tiles of one wallpaper
design).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..utils.digest import file_sha256
from ..utils.errors import UserError
from ..utils.text import printable

HASH_SIDE = 32  # what PHash reads (it would resize to this itself, without filtering)
THUMBNAIL_SIDE = 16
THUMBNAIL_TOLERANCE = 2.5  # mean absolute difference, in 8-bit levels, of two near duplicates' thumbnails
ORIENTATIONS = 8  # the 4 quarter turns, each also mirrored


@functools.cache
def _phash():
    """OpenCV contrib's perceptual hash, made once: opencv-contrib-python has it, a plain
    opencv-python does not (and then only the duplicate check needs the contrib package). OpenCV
    loads here, on the first fingerprint, not when a script starts."""
    import cv2

    if not hasattr(cv2, "img_hash"):
        raise UserError("Finding duplicates needs OpenCV's contrib module (cv2.img_hash), and this OpenCV has none: "
                        "pip install opencv-contrib-python (without opencv-python beside it), or pass "
                        "--no-find-duplicates.")
    return cv2.img_hash.PHash_create()


@dataclass(frozen=True)
class Fingerprint:
    """What duplicate finding keeps of one image: its bytes' digest, the perceptual hash of each of
    its ORIENTATIONS (the first as it is) and its thumbnail as it is."""

    sha256: str
    phashes: tuple[int, ...]  # 64 bits each, in the order of _oriented
    thumbnail: np.ndarray  # THUMBNAIL_SIDE x THUMBNAIL_SIDE x 3, uint8


def _oriented(pixels: np.ndarray, k: int, axes: tuple[int, int] = (0, 1)) -> np.ndarray:
    """Orientation ``k`` of an image (its rows and columns on ``axes``): ``k % 4`` quarter turns,
    then a mirror image for k >= 4."""
    turned = np.rot90(pixels, k % 4, axes=axes)
    return np.flip(turned, axis=axes[1]) if k >= 4 else turned


def fingerprint(path: str, image: Image.Image) -> Fingerprint:
    """The fingerprint of the file at ``path``, decoded (upright, RGB, any size) as ``image``
    (check_image's picture: already RGB, so it is not converted, which would copy it).

    Both the hashes and the thumbnail start from one 32 x 32 box-filtered copy: PHash's own resize
    does not filter, so a texture hashed from 256 px and from 64 px would alias differently, and a
    copy would hash unlike its original only because it was decoded at another size.
    """
    small = image.resize((HASH_SIDE, HASH_SIDE), Image.Resampling.BOX)  # exact area weights: mirror-symmetric
    bgr = np.ascontiguousarray(np.asarray(small)[:, :, ::-1])  # as OpenCV reads
    phashes = tuple(int.from_bytes(_phash().compute(np.ascontiguousarray(_oriented(bgr, k))).tobytes(), "big")
                    for k in range(ORIENTATIONS))
    thumbnail = np.asarray(small.resize((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.BOX))
    return Fingerprint(file_sha256(path), phashes, thumbnail)


@dataclass
class DuplicateGroup:
    """Files (paths relative to the source folder, class folder first) that show one photo."""

    files: list[str]
    identical: bool  # every file has the same bytes

    @property
    def classes(self) -> list[str]:
        return sorted({path.replace("\\", "/").split("/")[0] for path in self.files})

    @property
    def conflicting(self) -> bool:
        """The copies are filed under more than one class: their labels disagree."""
        return len(self.classes) > 1

    def as_json(self) -> dict:
        return {"files": self.files, "classes": self.classes, "identical": self.identical}


def _near_pairs(prints: list[Fingerprint], max_distance: int, progress: bool) -> Iterable[tuple[int, int]]:
    """Index pairs whose hashes, in the closest of the second's orientations, are within
    ``max_distance`` bits, and whose thumbnails in that orientation are close.

    Every pair is compared, in blocks of rows of about 32 MB: 8,677 photos are 38 million pairs,
    a few seconds of vectorised XOR and popcount over the 8 orientations.
    """
    hashes = np.array([p.phashes for p in prints], dtype=np.uint64).reshape(len(prints), ORIENTATIONS)
    thumbnails = np.stack([p.thumbnail for p in prints]).astype(np.int16) if prints else None
    block = max(64, (1 << 22) // max(1, len(prints)))
    starts = range(0, len(prints), block)
    for start in tqdm(starts, desc="comparing hashes", unit="block", disable=not progress or len(starts) < 8, leave=False):
        rows = hashes[start:start + block, 0, None]
        closest = np.bitwise_count(rows ^ hashes[None, start:, 0])
        orientation = np.zeros(closest.shape, dtype=np.uint8)
        for k in range(1, ORIENTATIONS):
            distances = np.bitwise_count(rows ^ hashes[None, start:, k])
            better = distances < closest
            closest = np.where(better, distances, closest)
            orientation[better] = k
        rows_i, columns_j = np.nonzero(closest <= max_distance)
        first, second = start + rows_i, start + columns_j
        keep = first < second
        first, second, turns = first[keep], second[keep], orientation[rows_i[keep], columns_j[keep]]
        for k in np.unique(turns):  # the candidates' thumbnails, turned as their hashes matched, in one go each
            mine = turns == k
            a, b = first[mine], second[mine]
            differences = np.abs(thumbnails[a] - _oriented(thumbnails[b], int(k), axes=(1, 2))).mean(axis=(1, 2, 3))
            yield from zip(a[differences <= THUMBNAIL_TOLERANCE].tolist(), b[differences <= THUMBNAIL_TOLERANCE].tolist())


def find_duplicates(prints: dict[str, Fingerprint], max_distance: int, progress: bool = True) -> list[DuplicateGroup]:
    """Groups of two or more files that are copies of each other, directly or through a chain of
    copies (a union-find over identical and near pairs); sorted by their first file."""
    paths = sorted(prints)
    parent = list(range(len(paths)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def join(a: int, b: int) -> None:
        first, second = sorted((root(a), root(b)))
        parent[second] = first

    first_with_digest: dict[str, int] = {}
    for index, path in enumerate(paths):
        join(first_with_digest.setdefault(prints[path].sha256, index), index)
    for a, b in _near_pairs([prints[path] for path in paths], max_distance, progress):
        join(a, b)
    members: dict[int, list[str]] = {}
    for index, path in enumerate(paths):
        members.setdefault(root(index), []).append(path)
    return [DuplicateGroup(files, identical=len({prints[f].sha256 for f in files}) == 1)
            for files in members.values() if len(files) > 1]


def describe(groups: list[DuplicateGroup], manifest: str, limit: int = 20) -> list[str]:
    """The build's lines about duplicates: conflicting labels by file (they need the user's
    decision), then a one-line count of the rest."""
    if not groups:
        return []
    lines = []
    conflicting = [group for group in groups if group.conflicting]
    if conflicting:
        lines.append(f"[WARN] {len(conflicting)} photo(s) are filed under more than one class (conflicting labels); "
                     "each is kept on one side of the split, but it teaches both labels: keep one copy, in the "
                     "right class folder")
        for group in conflicting[:limit]:
            kind = "identical files" if group.identical else "near duplicates"
            more = f" = ... ({len(group.files) - 6} more)" if len(group.files) > 6 else ""
            lines.append(f"  {' = '.join(map(printable, group.files[:6]))}{more}  ({kind})")
        if len(conflicting) > limit:
            lines.append(f"  ... and {len(conflicting) - limit} more, listed in {manifest}")
    copies = sum(len(group.files) for group in groups)
    identical = sum(group.identical for group in groups)
    lines.append(f"[INFO] {len(groups)} group(s) of duplicates ({copies} images; {identical} group(s) of identical "
                 f"files, {len(groups) - identical} with near duplicates): each group is kept on one side of the "
                 f"split, so no photo is validated against its own copy; listed in {manifest}")
    return lines
