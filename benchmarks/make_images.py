"""Generate a learnable stand-in for flower_photos/: five classes of synthetic "flowers".

Usage:
    python benchmarks/make_images.py demo/flower_photos --per-class 30 --size 160

Each class has its own petal colour and shape, drawn at a random place, scale and rotation on
a noisy green background, saved as JPEG; roses and tulips share a colour and differ only in
shape, so they are the pair a model confuses first.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

CLASSES = {  # petal colour, centre colour, number of petals (0 = a closed cup)
    "daisy": ((245, 245, 240), (240, 200, 30), 14),
    "dandelion": ((250, 215, 20), (230, 180, 10), 40),
    "roses": ((200, 30, 50), (150, 20, 30), 0),
    "sunflowers": ((250, 190, 20), (90, 50, 20), 18),
    "tulips": ((210, 40, 60), (210, 40, 60), 3),
}


# the demo's set: every class has a colour of its own as well as a shape, so that a model
# without ImageNet weights (the demo runs offline) can still tell them apart
DISTINCT_CLASSES = {
    "daisy": ((245, 245, 240), (240, 200, 30), 14),
    "dandelion": ((250, 225, 20), (230, 190, 10), 40),
    "roses": ((200, 25, 40), (140, 15, 25), 0),
    "sunflowers": ((240, 130, 15), (70, 40, 15), 18),
    "tulips": ((150, 50, 200), (150, 50, 200), 3),
}


def draw_flower(size: int, petal, centre, petals: int, rng: np.random.Generator) -> Image.Image:
    background = rng.normal((70, 130, 60), 30, (size, size, 3)).clip(0, 255).astype(np.uint8)
    image = Image.fromarray(background)
    draw = ImageDraw.Draw(image)
    cx, cy = rng.uniform(0.3, 0.7, 2) * size
    radius = rng.uniform(0.18, 0.32) * size
    jitter = lambda c: tuple(int(np.clip(v + rng.normal(0, 18), 0, 255)) for v in c)
    angle0 = rng.uniform(0, 2 * math.pi)
    if petals == 0:  # rose: concentric rings
        for k in range(5, 0, -1):
            r = radius * k / 5
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=jitter(petal if k % 2 else centre))
    elif petals <= 4:  # tulip: a tall cup
        draw.rectangle([cx - radius * 0.6, cy - radius, cx + radius * 0.6, cy + radius * 0.3], fill=jitter(petal))
        for k in range(petals):
            x = cx - radius * 0.6 + k * radius * 0.6
            draw.polygon([(x, cy - radius), (x + radius * 0.3, cy - radius * 1.5), (x + radius * 0.6, cy - radius)],
                         fill=jitter(petal))
        draw.line([cx, cy + radius * 0.3, cx, size], fill=(40, 110, 40), width=max(2, size // 40))
    else:
        for k in range(petals):
            a = angle0 + 2 * math.pi * k / petals
            px, py = cx + math.cos(a) * radius * 0.75, cy + math.sin(a) * radius * 0.75
            pr = radius * (0.35 if petals < 20 else 0.2)
            draw.ellipse([px - pr, py - pr, px + pr, py + pr], fill=jitter(petal))
        r = radius * (0.4 if petals != 40 else 0.6)
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=jitter(centre))
    return image.filter(ImageFilter.GaussianBlur(rng.uniform(0, 1.2)))


def make_flowers(root: str, per_class: int = 30, size: int = 160, seed: int = 0,
                 classes: dict = CLASSES) -> str:
    rng = np.random.default_rng(seed)
    for name, (petal, centre, petals) in classes.items():
        folder = os.path.join(root, name)
        os.makedirs(folder, exist_ok=True)
        for i in range(per_class):
            draw_flower(size, petal, centre, petals, rng).save(os.path.join(folder, f"{name}_{i:04d}.jpg"), quality=90)
    return root


DISC_COLOURS = {"blue": (40, 70, 230), "green": (40, 200, 60), "red": (225, 40, 40), "yellow": (235, 215, 30)}


def make_discs(root: str, per_class: int, size: int, seed: int = 0, colours: dict = DISC_COLOURS) -> dict[str, list]:
    """<root>/<class>/disc_N.png: one coloured disc (the class) at a random place on grey noise, for
    checking where a heatmap points. Returns {path: [centre x, centre y, radius]} in pixels."""
    rng = np.random.default_rng(seed)
    discs = {}
    for name, colour in colours.items():
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for i in range(per_class):
            pixels = rng.normal(128, 40, (size, size, 3)).clip(0, 255).astype(np.uint8)
            image = Image.fromarray(pixels)
            radius = rng.uniform(0.1, 0.16) * size
            cx, cy = rng.uniform(radius, size - radius, 2)
            ImageDraw.Draw(image).ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=colour)
            path = os.path.join(root, name, f"disc_{i:04d}.png")
            image.save(path)
            discs[path] = [float(cx), float(cy), float(radius)]
    return discs


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root")
    parser.add_argument("--per-class", type=int, default=30)
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--distinct", action="store_true",
                        help="a colour of its own for every class (the offline demo's set); by default roses and "
                             "tulips share a colour, as do dandelions and sunflowers")
    args = parser.parse_args(argv)
    make_flowers(args.root, args.per_class, args.size, args.seed, DISTINCT_CLASSES if args.distinct else CLASSES)
    print(f"[INFO] wrote {args.per_class} images x {len(CLASSES)} classes to {args.root}")


if __name__ == "__main__":
    sys.exit(main())
