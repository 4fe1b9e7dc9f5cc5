"""Calibrate the duplicate check on real photos: recall on copies, false pairs on different photos.

Usage:
    python benchmarks/calibrate_duplicates.py --photos ~/Pictures --output benchmarks/results/duplicates.json

From each photo under --photos (searched recursively) it makes the photo itself and its 3 x 3 tiles
(distinct pictures with a real photo's texture), each resized to a size drawn log-uniformly from 100
to 4,000 px (never enlarged), and of each of these 6 copies: re-encoded as JPEG at quality 40-90,
rescaled to 50-95 % (PNG), both, mirrored, turned by 90 degrees, and a thumbnail (20-35 %, JPEG at
quality 85). Everything then goes through
what build_dataset.py runs (check_image's decode, the fingerprint, find_duplicates):

- recall: the share of copies grouped with their original, by kind and by size;
- false pairs: pairs of different pictures grouped together, among the textured ones (flat tiles of
  one colour are the same picture to any eye, and left out);
- the same two over a grid of hash and thumbnail thresholds (a ROC of both distances).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import tempfile
import time

import numpy as np
from PIL import Image, ImageOps

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

KINDS = ("reencode", "rescale", "both", "mirror", "turn90", "thumbnail")
SIZE_BUCKETS = ((0, 200), (200, 400), (400, 1000), (1000, 100_000))
GRID = [(bits, levels) for bits in (4, 6, 8, 10, 12) for levels in (2.5, 4.0, 5.0, 8.0)]


def make_set(photos: list[str], folder: str, tiles: int, seed: int) -> list[dict]:
    """base/<n>.jpg and copy/<kind>_<n>.<ext>; returns each base's size and flatness."""
    rng = random.Random(seed)
    os.makedirs(os.path.join(folder, "base"))
    os.makedirs(os.path.join(folder, "copy"))
    bases = []
    for path in photos:
        with Image.open(path) as opened:
            photo = ImageOps.exif_transpose(opened).convert("RGB")
        width, height = photo.size
        pieces = [photo] + [photo.crop((i * width // tiles, j * height // tiles, (i + 1) * width // tiles,
                                        (j + 1) * height // tiles)) for i in range(tiles) for j in range(tiles)]
        for piece in pieces:
            side = round(10 ** rng.uniform(2, math.log10(4000)))
            scale = min(1.0, side / max(piece.size))
            base = piece.resize((max(16, round(piece.width * scale)), max(16, round(piece.height * scale))),
                                Image.Resampling.LANCZOS) if scale < 1 else piece
            name = f"{len(bases):05d}"
            base.save(os.path.join(folder, "base", f"{name}.jpg"), quality=92)

            def resized(image: Image.Image, factor: float) -> Image.Image:
                return image.resize((max(8, round(image.width * factor)), max(8, round(image.height * factor))),
                                    Image.Resampling.LANCZOS)

            base.save(os.path.join(folder, "copy", f"reencode_{name}.jpg"), quality=rng.randint(40, 90))
            resized(base, rng.uniform(0.5, 0.95)).save(os.path.join(folder, "copy", f"rescale_{name}.png"))
            resized(base, rng.uniform(0.5, 0.95)).save(os.path.join(folder, "copy", f"both_{name}.jpg"),
                                                       quality=rng.randint(40, 90))
            ImageOps.mirror(base).save(os.path.join(folder, "copy", f"mirror_{name}.jpg"), quality=90)
            base.rotate(90, expand=True).save(os.path.join(folder, "copy", f"turn90_{name}.jpg"), quality=90)
            resized(base, rng.uniform(0.2, 0.35)).save(os.path.join(folder, "copy", f"thumbnail_{name}.jpg"), quality=85)
            grey = np.asarray(base.convert("L").resize((64, 64)), dtype=np.float64)
            bases.append({"name": name, "side": max(base.size), "textured": bool(grey.std() >= 10)})
    return bases


def pair_distances(prints: dict, bases: list[dict]) -> tuple[dict, list]:
    """(bits, levels) of each copy to its original, and of every close pair of different bases."""
    from pyimagesearch.data.duplicates import ORIENTATIONS, _oriented

    def distance(a, b) -> tuple[int, float]:
        bits = [bin(a.phashes[0] ^ b.phashes[k]).count("1") for k in range(ORIENTATIONS)]
        k = int(np.argmin(bits))
        levels = float(np.abs(a.thumbnail.astype(np.int16) - _oriented(b.thumbnail, k).astype(np.int16)).mean())
        return bits[k], levels

    copies = {kind: [] for kind in KINDS}
    for base in bases:
        original = prints[os.path.join("base", f"{base['name']}.jpg")]
        for kind in KINDS:
            extension = "png" if kind == "rescale" else "jpg"
            copies[kind].append(distance(original, prints[os.path.join("copy", f"{kind}_{base['name']}.{extension}")]))
    textured = [b for b in bases if b["textured"]]
    fingerprints = [prints[os.path.join("base", f"{b['name']}.jpg")] for b in textured]
    hashes = np.array([p.phashes for p in fingerprints], dtype=np.uint64)
    closest = np.full((len(textured), len(textured)), 64, dtype=np.uint8)
    for k in range(ORIENTATIONS):
        closest = np.minimum(closest, np.bitwise_count(hashes[:, None, 0] ^ hashes[None, :, k]))
    close = [(int(i), int(j), *distance(fingerprints[i], fingerprints[j]))
             for i, j in zip(*np.nonzero(np.triu(closest <= max(b for b, _ in GRID), 1)))]
    return copies, close


def measure(args: argparse.Namespace) -> dict:
    from pyimagesearch import config
    from pyimagesearch.data.dataset import scan
    from pyimagesearch.data.duplicates import THUMBNAIL_TOLERANCE, find_duplicates

    photos = sorted(os.path.join(folder, name) for folder, _, names in os.walk(args.photos) for name in names
                    if name.lower().endswith((".jpg", ".jpeg", ".png", ".webp")))
    with tempfile.TemporaryDirectory(prefix="calibrate-") as work:
        started = time.perf_counter()
        bases = make_set(photos, work, args.tiles, args.seed)
        made = time.perf_counter() - started
        started = time.perf_counter()
        found = scan(work, progress=False, fingerprints=True)
        groups = find_duplicates(found.fingerprints, config.DUPLICATE_DISTANCE, progress=False)
        build_seconds = time.perf_counter() - started
        copies, close = pair_distances(found.fingerprints, bases)
    group_of = {path: n for n, group in enumerate(groups) for path in group.files}
    textured = [b for b in bases if b["textured"]]
    recall = {}
    for kind in KINDS:
        extension = "png" if kind == "rescale" else "jpg"
        grouped = [group_of.get(os.path.join("base", f"{b['name']}.jpg"), -1) ==
                   group_of.get(os.path.join("copy", f"{kind}_{b['name']}.{extension}"), -2) for b in textured]
        recall[kind] = {"all": round(float(np.mean(grouped)), 4),
                        "by_side_px": {f"{low}-{high}": round(float(np.mean([g for g, b in zip(grouped, textured)
                                                                             if low <= b["side"] < high])), 4)
                                       for low, high in SIZE_BUCKETS}}
    bases_per_group = [sum(path.startswith("base") and bases[int(os.path.basename(path)[:5])]["textured"]
                           for path in group.files) for group in groups]
    pairs = len(textured) * (len(textured) - 1) // 2
    roc = []
    keep = [i for i, b in enumerate(bases) if b["textured"]]
    for bits, levels in GRID:
        row = {"bits": bits, "levels": levels,
               "false_pairs": sum(1 for _, _, d, t in close if d <= bits and t <= levels)}
        for kind in KINDS:
            row[kind] = round(float(np.mean([copies[kind][i][0] <= bits and copies[kind][i][1] <= levels for i in keep])), 4)
        roc.append(row)
    return {"photos": len(photos), "bases": len(bases), "textured_bases": len(textured), "pairs_of_textured_bases": pairs,
            "settings": {"DUPLICATE_DISTANCE": config.DUPLICATE_DISTANCE, "THUMBNAIL_TOLERANCE": THUMBNAIL_TOLERANCE},
            "recall": recall, "false_pairs": sum(n * (n - 1) // 2 for n in bases_per_group),
            "seconds": {"making the set": round(made, 1), "scan and find_duplicates": round(build_seconds, 1),
                        "images": len(bases) * (1 + len(KINDS))},
            "roc": roc}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", required=True, help="a folder of real photos (searched recursively)")
    parser.add_argument("--tiles", type=int, default=3, help="tiles per side cut from each photo")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=os.path.join(ROOT, "benchmarks", "results", "duplicates_calibration.json"))
    args = parser.parse_args(argv)
    result = measure(args)
    print(json.dumps({k: v for k, v in result.items() if k != "roc"}, indent=1))
    for row in result["roc"]:
        print(row)
    with open(args.output, "w") as handle:
        json.dump(result, handle, indent=1)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
