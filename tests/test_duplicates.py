"""Exact and near-duplicate photos: found, named when filed under two classes, and kept on one side of
the split.
"""

from __future__ import annotations

import json
import os
import random
import shutil

import numpy as np
import pytest
from PIL import Image, ImageDraw

import build_dataset
from conftest import error_text, make_image_folder
from pyimagesearch.data.dataset import scan
from pyimagesearch.data.duplicates import DuplicateGroup, find_duplicates
from pyimagesearch.data.split import share_warnings, split
from pyimagesearch.utils.errors import UserError, run_cli


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """Photos with planted copies: a byte copy of red/img_0.jpg in blue (a conflicting label); a
    re-encoded and a half-size copy of green/img_1.jpg in green. Built once with the defaults."""
    root = tmp_path_factory.mktemp("planted")
    data = root / "photos"
    _photos(data)
    shutil.copy(data / "red" / "img_0.jpg", data / "blue" / "from_red.jpg")
    original = Image.open(data / "green" / "img_1.jpg")
    original.save(data / "green" / "reencoded.jpg", quality=40)
    original.resize((48, 48), Image.Resampling.LANCZOS).save(data / "green" / "small.png")
    return data, root


def _sides(base) -> dict[str, str]:
    manifest = json.loads((base / "split.json").read_text())
    return {path: side for side in ("train", "val") for paths in manifest[side].values() for path in paths}


def _photos(root, per_class: int = 8, classes=("blue", "green", "red"), seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    for name in classes:
        os.makedirs(root / name, exist_ok=True)
        for i in range(per_class):
            _photo(rng).save(root / name / f"img_{i}.jpg", quality=92)
    return str(root)


def _photo(rng: np.random.Generator, size: int = 96) -> Image.Image:
    """A picture with structure (shapes on a gradient), unlike every other one drawn."""
    ramp = np.linspace(0, 1, size)[None, :, None] * rng.uniform(0, 255, 3) + rng.uniform(0, 120, 3)
    image = Image.fromarray(np.clip(np.broadcast_to(ramp, (size, size, 3)), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(4):
        x0, y0 = rng.uniform(0, size * 0.7, 2)
        x1, y1 = x0 + rng.uniform(size * 0.15, size * 0.5), y0 + rng.uniform(size * 0.15, size * 0.5)
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape([x0, y0, x1, y1], fill=tuple(int(c) for c in rng.uniform(0, 255, 3)))
    return image


def test_planted_copies_are_grouped_named_and_kept_on_one_side(planted, capsys):
    data, root = planted
    for seed in range(4):
        base = root / f"dataset{seed}"
        build_dataset.main(["--data", str(data), "--output", str(base), "--no-progress", "--seed", str(seed),
                            "--val-split", "0.4"])
        manifest = json.loads((base / "split.json").read_text())
        groups = {frozenset(g["files"]): g for g in manifest["duplicates"]["groups"]}
        cross = frozenset({os.path.join("blue", "from_red.jpg"), os.path.join("red", "img_0.jpg")})
        near = frozenset({os.path.join("green", n) for n in ("img_1.jpg", "reencoded.jpg", "small.png")})
        assert set(groups) == {cross, near}  # and no two different photos called copies
        assert groups[cross]["identical"] and groups[cross]["classes"] == ["blue", "red"]
        assert not groups[near]["identical"] and groups[near]["classes"] == ["green"]
        sides = _sides(base)
        for group in groups:
            assert len({sides[path] for path in group}) == 1, (seed, group)  # never split across train and val
        for split_name in ("train", "val"):  # every class still in both splits
            assert sorted(os.listdir(base / split_name)) == ["blue", "green", "red"]
            assert all(os.listdir(base / split_name / c) for c in ("blue", "green", "red"))
    out = capsys.readouterr().out
    assert "conflicting labels" in out and f"{os.path.join('blue', 'from_red.jpg')} = " in out
    assert "identical files" in out and "2 group(s) of duplicates" in out


def test_without_duplicates_or_with_the_check_off_the_split_is_the_plain_one(planted, tmp_path, capsys):
    data, _ = planted
    base = tmp_path / "off"
    build_dataset.main(["--data", str(data), "--output", str(base), "--no-progress", "--no-find-duplicates",
                        "--val-split", "0.4"])
    assert json.loads((base / "split.json").read_text())["duplicates"] is None
    assert "group(s) of duplicates" not in capsys.readouterr().out
    found = scan(str(data), progress=False)
    train, val = split(found.images, 0.4, 42)
    assert _sides(base) == {**{p: "train" for ps in train.values() for p in ps}, **{p: "val" for ps in val.values() for p in ps}}

    clean = make_image_folder(str(tmp_path / "clean"), per_class=10)  # noisy images: no two alike
    for flag in ("--find-duplicates", "--no-find-duplicates"):
        build_dataset.main(["--data", clean, "--output", str(tmp_path / flag), "--no-progress"])
    assert _sides(tmp_path / "--find-duplicates") == _sides(tmp_path / "--no-find-duplicates")
    assert json.loads((tmp_path / "--find-duplicates" / "split.json").read_text())["duplicates"]["groups"] == []


def test_a_class_of_copies_of_one_photo_is_refused_by_name(tmp_path, capsys):
    data = tmp_path / "photos"
    _photos(data, per_class=4, classes=("blue", "green"))
    os.makedirs(data / "gray")
    _photo(np.random.default_rng(7)).save(data / "gray" / "a.jpg")
    for name in ("b.jpg", "c.jpg"):
        shutil.copy(data / "gray" / "a.jpg", data / "gray" / name)
    code = run_cli(build_dataset.main, ["--data", str(data), "--output", str(tmp_path / "dataset"), "--no-progress"])
    err = error_text(capsys)
    assert code != 0 and "Traceback" not in err
    assert "'gray'" in err and "--no-find-duplicates" in err
    assert not (tmp_path / "dataset").exists()
    build_dataset.main(["--data", str(data), "--output", str(tmp_path / "dataset"), "--no-progress",
                        "--no-find-duplicates"])  # the way out the message names works
    assert os.listdir(tmp_path / "dataset" / "val" / "gray")


def test_grouped_split_keeps_groups_whole_and_classes_in_both_splits():
    rng = random.Random(0)
    for seed in range(30):
        images = {c: [f"{c}/{i}.jpg" for i in range(rng.randint(3, 40))] for c in "abcde"}
        everything = [p for paths in images.values() for p in paths]
        rng.shuffle(everything)
        groups, start = [], 0
        while start < len(everything) // 2:  # half the images in groups of 2 to 4, across classes too
            size = rng.randint(2, 4)
            groups.append(DuplicateGroup(everything[start:start + size], identical=True))
            start += size
        try:
            train, val = split(images, 0.25, seed, groups)
        except UserError as error:  # a class whose images all sit in groups homed elsewhere
            assert "cannot appear in both splits" in str(error)
            continue
        side = {p: "train" for ps in train.values() for p in ps} | {p: "val" for ps in val.values() for p in ps}
        assert sorted(side) == sorted(p for ps in images.values() for p in ps)
        assert all(len({side[p] for p in g.files}) == 1 for g in groups)
        assert all(train[c] and val[c] for c in images)


def test_finding_copies_in_many_photos_compares_every_pair_once(tmp_path):
    """With thousands of fingerprints the pairs are compared in blocks of rows: a copy that sorts
    far from its original, in another block, is still found, and nothing else is."""
    rng = np.random.default_rng(1)
    root = tmp_path / "many"
    _photos(root, per_class=3, classes=("a", "b"))
    found = scan(str(root), progress=False, fingerprints=True)
    prints = dict(found.fingerprints)
    first = prints[os.path.join("a", "img_0.jpg")]
    for i in range(5000):  # distinct hashes far from every photo's
        hashes = tuple(int(rng.integers(0, 2**63)) | (1 << 63) for _ in first.phashes)
        prints[f"z/{i:05d}.jpg"] = type(first)(f"{i}", hashes, np.zeros_like(first.thumbnail))
    copy = tuple(h ^ 0b101 for h in first.phashes)  # 2 bits from a/img_0.jpg in every orientation
    prints["z/zz_copy.jpg"] = type(first)("copy", copy, first.thumbnail)
    groups = find_duplicates(prints, max_distance=6, progress=False)
    assert [g.files for g in groups] == [[os.path.join("a", "img_0.jpg"), "z/zz_copy.jpg"]]


def _group(*files: str) -> DuplicateGroup:
    return DuplicateGroup(list(files), identical=True)


def test_a_large_group_of_copies_never_takes_a_class_validation_share():
    images = {"x": [f"x/copy{i}.jpg" for i in range(12)] + [f"x/other{i}.jpg" for i in range(8)],
              "y": [f"y/{i}.jpg" for i in range(20)]}
    groups = [_group(*[f"x/copy{i}.jpg" for i in range(12)])]
    for seed in range(40):
        train, val = split(images, 0.1, seed, groups)
        assert len(val["x"]) == 2 and len(val["y"]) == 2, seed  # 10 % of 20, whatever the seed
        assert not any(path.startswith("x/copy") for path in val["x"])
        assert share_warnings(train, val, 0.1) == []


def test_copies_shared_between_classes_split_at_every_seed_when_a_split_exists():
    """Class a's 3 photos are each also filed twice under b: a gets its validation image through
    one of b's groups, whatever the seed."""
    images = {"a": ["a/1.jpg", "a/2.jpg", "a/3.jpg"],
              "b": [f"b/{i}{k}.jpg" for i in (1, 2, 3) for k in "xy"] + [f"b/own{i}.jpg" for i in range(6)]}
    groups = [_group(f"a/{i}.jpg", f"b/{i}x.jpg", f"b/{i}y.jpg") for i in (1, 2, 3)]
    for seed in range(60):
        train, val = split(images, 0.1, seed, groups)
        assert all(train[c] and val[c] for c in images), seed
        for group in groups:  # each group on one side, whole
            assert len({path in val[path.split("/")[0]] for path in group.files}) == 1


def test_a_class_pushed_off_its_share_by_copies_is_warned_about():
    images = {"x": [f"x/a{i}.jpg" for i in range(5)] + [f"x/b{i}.jpg" for i in range(5)],
              "y": [f"y/{i}.jpg" for i in range(10)]}
    groups = [_group(*[f"x/a{i}.jpg" for i in range(5)]), _group(*[f"x/b{i}.jpg" for i in range(5)])]
    train, val = split(images, 0.1, 0, groups)
    assert len(val["x"]) == 5 and len(train["x"]) == 5  # one group whole: the only split there is
    assert [line for line in share_warnings(train, val, 0.1) if "'x'" in line and "5 of its 10" in line]


def _real_photo(size: tuple[int, int], box: tuple[int, int, int, int] = (0, 60, 512, 384)) -> Image.Image:
    """A real photo (matplotlib ships Grace Hopper's portrait), cropped and resized."""
    from matplotlib import cbook

    with Image.open(cbook.get_sample_data("grace_hopper.jpg")) as photo:
        return photo.convert("RGB").crop(box).resize(size, Image.Resampling.LANCZOS)


def test_small_photos_and_their_resized_mirrored_and_turned_copies_are_grouped(tmp_path):
    """A 262 x 166 photo and its copy at 90 % re-encoded at quality 70: a draft-mode decode small
    enough to pick different scales for the two would fingerprint them apart; training's flips and
    rotations make mirrored and turned copies leak as much as identical ones."""
    root = tmp_path / "photos"
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
    original = _real_photo((262, 166))
    original.save(root / "a" / "original.jpg", quality=90)
    original.resize((236, 149), Image.Resampling.LANCZOS).save(root / "b" / "smaller.jpg", quality=70)
    original.resize((131, 83), Image.Resampling.LANCZOS).save(root / "b" / "half.png")
    original.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(root / "b" / "mirrored.jpg", quality=85)
    original.transpose(Image.Transpose.ROTATE_90).save(root / "b" / "turned.jpg", quality=85)
    _real_photo((262, 166), box=(0, 300, 512, 600)).save(root / "a" / "another_part.jpg", quality=90)
    found = scan(str(root), progress=False, fingerprints=True)
    groups = find_duplicates(found.fingerprints, max_distance=8, progress=False)
    assert [sorted(g.files) for g in groups] == [sorted(os.path.join(*p) for p in (
        ("a", "original.jpg"), ("b", "smaller.jpg"), ("b", "half.png"), ("b", "mirrored.jpg"), ("b", "turned.jpg")))]
