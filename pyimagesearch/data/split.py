"""The split itself: each class's share of validation images, seeded, with groups of copies kept
whole on one side; and what the build says about the classes (counts, imbalance, shares)."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable

from ..utils.errors import UserError
from ..utils.text import printable
from .duplicates import DuplicateGroup


def check_val_split(val_split: float) -> None:
    if not 0 < val_split < 1:
        raise UserError(f"VAL_SPLIT must be between 0 and 1 (exclusive), not {val_split}; set it in "
                        "pyimagesearch/config.py or with --val-split.")


def split(images: dict[str, list[str]], val_split: float, seed: int,
          groups: Iterable[DuplicateGroup] = ()) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """A seeded split per class, so every class keeps its share in both splits.

    Each of ``groups`` (copies of one photo, possibly in several classes) goes to one side whole:
    it is dealt with its largest class's images. A unit (a photo, or a group) goes to validation
    only while every class it holds stays within its validation share and keeps an image in
    training, so one large group cannot take a class's validation share. A class still without a
    validation image then gets the smallest unit that gives it one. Without groups this is a plain
    per-class shuffle.
    """
    check_val_split(val_split)
    if len(images) < 2:
        found = f"only the class {next(iter(images))!r}" if images else "no class folders with usable images"
        raise UserError(f"The dataset has {found}; a classifier needs at least two classes. Put each class's "
                        "images in its own folder: <DATA_PATH>/<class>/<image>.jpg.")
    label_of = {path: label for label, paths in images.items() for path in paths}
    units = _units(images, label_of, groups)
    for label in sorted(images):
        if len(images[label]) < 2:
            raise UserError(f"Class {label!r} has {len(images[label])} usable image(s); it needs at least 2 to appear "
                            "in both the training and the validation split. Add images to it, or remove its folder.")
    target = {label: min(len(paths) - 1, max(1, round(len(paths) * val_split))) for label, paths in images.items()}
    in_val = dict.fromkeys(images, 0)
    val_paths: set[str] = set()

    def fits(unit: list[str], within_share: bool) -> bool:
        counts = Counter(label_of[path] for path in unit)
        return all(in_val[c] + n <= len(images[c]) - 1 and (not within_share or in_val[c] + n <= target[c])
                   for c, n in counts.items())

    def place(unit: list[str]) -> None:
        val_paths.update(unit)
        for path in unit:
            in_val[label_of[path]] += 1

    rng = random.Random(seed)
    order: list[list[str]] = []
    for label in sorted(images):
        mine = sorted(units[label])
        rng.shuffle(mine)
        order += mine
        for unit in mine:
            if in_val[label] >= target[label]:
                break
            if fits(unit, within_share=True):
                place(unit)
    for label in sorted(images, key=lambda c: (sum(c in {label_of[p] for p in u} for u in order), c)):
        if in_val[label] == 0:  # every unit it has would overshoot a share: the smallest that fits
            options = [u for u in order if not val_paths.intersection(u) and label in {label_of[p] for p in u}
                       and fits(u, within_share=False)]
            if options:
                place(min(options, key=len))
    train: dict[str, list[str]] = {}
    val: dict[str, list[str]] = {}
    for label in sorted(images):
        val[label] = sorted(path for path in images[label] if path in val_paths)
        train[label] = sorted(path for path in images[label] if path not in val_paths)
        if not val[label] or not train[label]:
            raise _unsplittable(label, images[label], units, label_of)
    return train, val


def _units(images: dict[str, list[str]], label_of: dict[str, str],
           groups: Iterable[DuplicateGroup]) -> dict[str, list[list[str]]]:
    """Each class's units: its photos without copies, and the groups of copies whose largest class it is."""
    units: dict[str, list[list[str]]] = {label: [] for label in images}
    grouped: set[str] = set()
    for group in groups:
        members = sorted(path for path in group.files if path in label_of)
        home = max(sorted({label_of[path] for path in members}), key=lambda c: sum(label_of[p] == c for p in members))
        units[home].append(members)
        grouped.update(members)
    for path, label in label_of.items():
        if path not in grouped:
            units[label].append([path])
    return units


def _unsplittable(label: str, paths: list[str], units: dict[str, list[list[str]]], label_of: dict[str, str]) -> UserError:
    """Why a class cannot be on both sides: all of it is one group of copies, or its copies in other
    classes tie it to them so that no split gives it both."""
    holding = [u for unit_list in units.values() for u in unit_list if any(label_of[p] == label for p in u)]
    if len(holding) == 1:
        elsewhere = " (with copies in other classes)" if any(label_of[p] != label for p in holding[0]) else ""
        why = f"its {len(paths)} images are copies of one photo{elsewhere}, and copies stay on one side"
    else:
        why = (f"its {len(paths)} images are in {len(holding)} groups of copies shared with other classes, and no "
               "split keeps every class on both sides")
    return UserError(f"Class {label!r} cannot appear in both splits: {why}. Add different photos to it, or pass "
                     "--no-find-duplicates to split copies like any other images.")


def share_warnings(train: dict[str, list[str]], val: dict[str, list[str]], val_split: float) -> list[str]:
    """A class whose validation share is far from VAL_SPLIT (a group of copies had to go whole to
    one side): its metrics then rest on other numbers than the user asked for."""
    lines = []
    for label in sorted(val):
        total = len(train[label]) + len(val[label])
        target = min(total - 1, max(1, round(total * val_split)))
        if abs(len(val[label]) - target) >= max(2, target):
            lines.append(f"[WARN] class {printable(label)!r} has {len(val[label])} of its {total} images in validation "
                         f"({len(val[label]) / total:.0%}, not {val_split:.0%}): groups of copies stay on one side")
    return lines


def count_table(train: dict[str, list[str]], val: dict[str, list[str]]) -> str:
    width = max([len("class")] + [len(printable(label)) for label in train])
    lines = [f"{'class':<{width}}  {'train':>6}  {'val':>5}  {'total':>6}"]
    for label in sorted(train):
        lines.append(f"{printable(label):<{width}}  {len(train[label]):>6}  {len(val[label]):>5}  "
                     f"{len(train[label]) + len(val[label]):>6}")
    total_train = sum(map(len, train.values()))
    total_val = sum(map(len, val.values()))
    lines.append(f"{'total':<{width}}  {total_train:>6}  {total_val:>5}  {total_train + total_val:>6}")
    return "\n".join(lines)


IMBALANCE = 5  # the largest class has at least this many times the images of the smallest


def imbalance_warning(counts: dict[str, int]) -> str | None:
    """A warning when the classes' sizes differ by IMBALANCE times or more, else None."""
    present = {name: count for name, count in counts.items() if count > 0}
    if len(present) < 2:
        return None
    largest, smallest = max(present, key=present.get), min(present, key=present.get)
    if present[largest] < IMBALANCE * present[smallest]:
        return None
    return (f"[WARN] the classes are imbalanced: '{largest}' has {present[largest]} images, "
            f"{present[largest] / present[smallest]:.0f} times '{smallest}' ({present[smallest]}); accuracy then favours "
            "the large classes, so judge the model by the report's balanced accuracy and per-class recall")
