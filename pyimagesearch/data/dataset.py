"""From flower_photos/<class>/*.jpg to dataset/{train,val}/<class>/*: checked, stratified, atomic."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from tqdm import tqdm

from ..utils.errors import UserError
from ..utils.fileio import exclusive, leftovers, new_temp_folder, remove_leftovers, walk_class_folders
from .duplicates import Fingerprint, fingerprint
from .images import check_image, is_image_file

SPLIT_MANIFEST = "split.json"  # marks a folder as one this project built, so a rebuild may replace it


@dataclass
class Scan:
    """What a source folder holds: usable images per class, and what was skipped and why."""

    images: dict[str, list[str]] = field(default_factory=dict)  # class -> paths relative to the root
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    fingerprints: dict[str, Fingerprint] = field(default_factory=dict)  # path -> what finds its duplicates


def scan(root: str, check: bool = True, progress: bool = True, fingerprints: bool = False,
         leave_out: Collection[str] = ()) -> Scan:
    """Find the images under ``root``; the class is the first folder below ``root``. The paths in
    ``leave_out`` (relative to ``root``: --exclude's) are not read.

    Unlike the tutorial's ``path.split(os.sep)[1]``, this holds for absolute and nested paths.
    With ``fingerprints`` (and ``check``), each usable image's fingerprint is taken from the
    pixels the check decoded.
    """
    result = Scan()
    candidates: list[tuple[str, str]] = []
    excluded: set[str] = set()  # classes with a photo --exclude leaves out
    for folder, files in walk_class_folders(root):
        for name in files:
            path = os.path.join(folder, name)
            relative = os.path.relpath(path, root)
            if relative in leave_out:
                excluded.add(relative.split(os.sep)[0])
                continue
            if name.startswith("."):
                continue
            if not is_image_file(name):
                if os.path.dirname(relative):  # a stray file beside the class folders (LICENSE.txt) is expected
                    result.skipped.append((relative, "not an image file (by its extension)"))
                continue
            if not os.path.dirname(relative):
                result.skipped.append((relative, "image outside any class folder"))
                continue
            candidates.append((relative.split(os.sep)[0], relative))
    for label, relative in tqdm(candidates, desc="checking images", unit="img", disable=not progress, leave=False):
        path, decoded = os.path.join(root, relative), []
        reason = check_image(path, decoded.append if fingerprints else None) if check else None
        if reason:
            result.skipped.append((relative, reason))
        else:
            result.images.setdefault(label, []).append(relative)
            if decoded:
                result.fingerprints[relative] = fingerprint(path, decoded[0])
    for folder in sorted(os.listdir(root)):
        if not folder.startswith(".") and os.path.isdir(os.path.join(root, folder)) and folder not in result.images:
            result.skipped.append((folder + os.sep, "class folder whose photos --exclude leaves out, every one (the "
                                   "class is left out)" if folder in excluded else
                                   "class folder with no usable images (left out)"))
    return result


def destination_name(relative: str) -> str:
    """class/sub/x.jpg -> sub__x.jpg: nested images keep distinct names in the flat class folder."""
    parts = relative.split(os.sep)
    return "__".join(parts[1:])


def check_target(source: str, base: str) -> None:
    """``base`` may be replaced: it does not overlap the source, and it is missing, empty, or a
    dataset this project built (its split.json says so). Anything else belongs to the user."""
    source_real, base_real = os.path.realpath(source), os.path.realpath(base)
    if base_real == source_real or base_real.startswith(source_real + os.sep) or source_real.startswith(base_real + os.sep):
        raise UserError(f"The dataset folder '{base}' and the source '{source}' overlap; "
                        "choose a BASE_PATH outside DATA_PATH.")
    if not os.path.lexists(base):
        return
    if not os.path.isdir(base) or os.path.islink(base):
        raise UserError(f"--output '{base}' exists and is not a folder; build_dataset.py writes a folder there. "
                        "Move it away or choose another --output.")
    entries = set(os.listdir(base))
    if not entries:
        return
    foreign = entries - {"train", "val", SPLIT_MANIFEST}
    if foreign:
        raise UserError(f"'{base}' exists and holds other things ({sorted(foreign)[:5]}); build_dataset.py "
                        "replaces the whole folder, so move them away or choose another --output.")
    if SPLIT_MANIFEST not in entries:
        raise UserError(f"'{base}' holds {sorted(entries)} but no {SPLIT_MANIFEST}, so build_dataset.py did not write it: "
                        "it may be your own split, and a rebuild would delete it. Move it away (or delete it "
                        "yourself) or choose another --output.")


def _recover(parent: str, name: str, base: str) -> None:
    """Tidy what a killed build left (called under the lock, so no build is running): a staging
    folder is removed, and a previous dataset that was moved aside but not yet replaced is put back."""
    remove_leftovers(parent, name, ("new",))
    old = leftovers(parent, name, ("old",))
    if old and not os.path.lexists(base):
        os.replace(old.pop(), base)
        print(f"[INFO] restored '{base}' from an interrupted rebuild")
    for path in old:
        shutil.rmtree(path, ignore_errors=True)


def write_splits(source: str, base: str, train: dict[str, list[str]], val: dict[str, list[str]],
                 info: dict, progress: bool = True, copy: Callable[[str, str], object] | None = None) -> None:
    """Copy the split into a new folder beside ``base`` and swap it in only when complete: an
    interrupted run leaves the old dataset (or none), never a mix, and no image lands in both.
    One build at a time per output folder (a lock beside it)."""
    copy = copy or shutil.copy2
    parent = os.path.dirname(os.path.abspath(base))
    name = os.path.basename(os.path.abspath(base))
    os.makedirs(parent, exist_ok=True)
    with exclusive(base, "build_dataset.py"):
        _recover(parent, name, base)
        check_target(source, base)
        staging = new_temp_folder(parent, name, "new")
        try:
            jobs = [(os.path.join(source, rel), os.path.join(staging, split_name, label, destination_name(rel)))
                    for split_name, part in (("train", train), ("val", val)) for label, rels in part.items()
                    for rel in rels]
            for label in train:
                for split_name in ("train", "val"):
                    os.makedirs(os.path.join(staging, split_name, label), exist_ok=True)
            for src, dst in tqdm(jobs, desc="copying images", unit="img", disable=not progress, leave=False):
                copy(src, dst)
            with open(os.path.join(staging, SPLIT_MANIFEST), "w", encoding="utf-8") as handle:
                json.dump({**info, "train": train, "val": val}, handle, indent=1)
            old = None
            if os.path.lexists(base):
                old = new_temp_folder(parent, name, "old")
                os.rmdir(old)
                os.replace(base, old)
            os.replace(staging, base)
            if old:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
