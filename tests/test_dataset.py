"""build_dataset.py and the split: stratified, seeded, atomic, from any class-folder tree; images
decoded as upright RGB, drafted no further than training's crops allow.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os

import numpy as np
import pytest
from PIL import Image

import build_dataset
from conftest import build, error_text, file_contents, make_image_folder
from pyimagesearch.create_dataloaders import eval_transforms, get_dataloader, image_folder, train_transforms
from pyimagesearch.data.images import load_rgb, train_draft_size
from pyimagesearch.utils.errors import UserError, run_cli


def _files(root: str) -> dict[str, set[str]]:
    """split -> {class/name} of what build_dataset wrote."""
    return {split: {os.path.join(c, f) for c in os.listdir(os.path.join(root, split))
                    for f in os.listdir(os.path.join(root, split, c))} for split in ("train", "val")}


def _tree_digest(root: str) -> str:
    digest = hashlib.sha256()
    for folder, dirs, files in sorted(os.walk(root)):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(folder, name)
            digest.update(path.encode())
            if not os.path.islink(path):
                digest.update(open(path, "rb").read())
    return digest.hexdigest()


def _write_hostile(folder, kind: str) -> str:
    """Write one hostile file into ``folder`` and return its name."""
    if kind == "truncated_jpeg":
        pixels = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG")
        (folder / "truncated.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        return "truncated.jpg"
    if kind == "zero_bytes":
        (folder / "empty.jpg").write_bytes(b"")
        return "empty.jpg"
    if kind == "text_as_jpg":
        (folder / "readme.jpg").write_text("this is not a picture")
        return "readme.jpg"
    if kind == "bomb":
        Image.new("L", (200, 200)).save(folder / "bomb.png")
        return "bomb.png"
    raise ValueError(kind)


# name -> (how to write it, the RGB pixel it must read as, or None for "any")
def _save_16bit(path) -> None:
    Image.fromarray(np.full((20, 20), 40000, dtype=np.uint16)).save(path)


def _save_transparent_palette(path) -> None:
    image = Image.new("P", (20, 20), 0)
    image.putpalette([10, 20, 30] + [0, 0, 0] * 255)
    image.save(path, transparency=0)


ODD_BUT_VALID = {
    "alpha.png": (lambda p: Image.new("RGBA", (20, 20), (255, 0, 0, 0)).save(p), (255, 255, 255)),  # transparent: white
    "palette.png": (_save_transparent_palette, (255, 255, 255)),
    "gray.jpg": (lambda p: Image.new("L", (20, 20), 90).save(p), None),
    "cmyk.jpg": (lambda p: Image.new("CMYK", (20, 20), (0, 255, 255, 0)).save(p), None),
    "deep16.png": (_save_16bit, (155, 155, 155)),  # 40000/65535*255, not clipped to white
    "with space ü é.jpg": (lambda p: Image.new("RGB", (20, 20), (10, 200, 10)).save(p), None),
    "UPPER.JPG": (lambda p: Image.new("RGB", (20, 20)).save(p, format="JPEG"), None),
    "upper.JPEG": (lambda p: Image.new("RGB", (20, 20)).save(p, format="JPEG"), None),
    "upper.PNG": (lambda p: Image.new("RGB", (20, 20)).save(p, format="PNG"), None),
    "photo.webp": (lambda p: Image.new("RGB", (20, 20)).save(p, format="WEBP"), None),
    "photo.BMP": (lambda p: Image.new("RGB", (20, 20)).save(p, format="BMP"), None),
}


def test_split_is_stratified_seeded_and_disjoint(tmp_path, capsys):
    data = make_image_folder(str(tmp_path / "photos"), per_class=10)
    base = str(tmp_path / "dataset")
    build(data, base, "--val-split", "0.2")
    first = _files(base)
    assert not first["train"] & first["val"]
    for color in ("blue", "green", "red"):
        assert sum(f.startswith(color + os.sep) for f in first["val"]) == 2
        assert sum(f.startswith(color + os.sep) for f in first["train"]) == 8
    table = capsys.readouterr().out
    assert "blue" in table and "total" in table and " 24 " in table  # per-class and total counts

    build(data, base, "--val-split", "0.2")
    assert _files(base) == first  # same seed, same split


def test_rebuilding_replaces_the_previous_split(tmp_path):
    data = make_image_folder(str(tmp_path / "photos"), per_class=10)
    base = str(tmp_path / "dataset")
    build(data, base, "--seed", "1")
    build(data, base, "--seed", "2")  # the tutorial would now hold a second split on top of the first
    files = _files(base)
    assert not files["train"] & files["val"]
    assert len(files["train"]) + len(files["val"]) == 30
    assert not [e for e in os.listdir(tmp_path) if e.startswith(".dataset")]  # no staging leftovers


def test_labels_come_from_the_class_folder_for_absolute_and_nested_paths(tmp_path):
    data = tmp_path / "deep" / "down" / "photos"
    make_image_folder(str(data), per_class=4)
    nested = data / "red" / "2021" / "june"
    nested.mkdir(parents=True)
    Image.new("RGB", (20, 20), (200, 0, 0)).save(nested / "img_0.jpg")  # same name as red/img_0.jpg
    base = str(tmp_path / "dataset")
    build(str(data.resolve()), base)
    files = _files(base)
    everything = files["train"] | files["val"]
    assert {f.split(os.sep)[0] for f in everything} == {"blue", "green", "red"}
    assert sum(f.startswith("red" + os.sep) for f in everything) == 5
    assert os.path.join("red", "2021__june__img_0.jpg") in everything


def test_source_is_never_modified_and_hidden_or_non_image_files_are_ignored(tmp_path, capsys):
    data = make_image_folder(str(tmp_path / "photos"), per_class=4)
    (tmp_path / "photos" / "LICENSE.txt").write_text("licence")
    (tmp_path / "photos" / "red" / "notes.txt").write_text("not an image")
    hidden = tmp_path / "photos" / ".ipynb_checkpoints"
    hidden.mkdir()
    Image.new("RGB", (8, 8)).save(hidden / "img-checkpoint.jpg")
    (tmp_path / "photos" / "red" / ".DS_Store").write_bytes(b"\0\1")
    before = _tree_digest(data)
    build(data, str(tmp_path / "dataset"))
    assert _tree_digest(data) == before
    files = _files(str(tmp_path / "dataset"))
    assert len(files["train"] | files["val"]) == 12
    assert not any(".ipynb" in f or "notes" in f for f in files["train"] | files["val"])
    assert "notes.txt" in capsys.readouterr().out  # reported, not silently dropped


def test_missing_data_path_says_where_the_flowers_come_from(tmp_path, capsys):
    code = run_cli(build_dataset.main, ["--data", str(tmp_path / "flower_photos"), "--output", str(tmp_path / "d")])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and "Traceback" not in err
    assert "flower_photos.tgz" in err and "--download" in err and "daisy" in err
    assert not (tmp_path / "d").exists()


def test_refuses_to_replace_a_folder_it_did_not_build(tmp_path):
    data = make_image_folder(str(tmp_path / "photos"), per_class=4)
    precious = tmp_path / "dataset"
    precious.mkdir()
    (precious / "thesis.tex").write_text("do not delete")
    with pytest.raises(UserError, match="other things"):
        build(data, str(precious))
    assert (precious / "thesis.tex").exists()


@pytest.mark.parametrize("kind,reason", [("truncated_jpeg", "cannot be decoded"), ("zero_bytes", "empty file"),
                                         ("text_as_jpg", "not an image"), ("bomb", "decompression-bomb")])
def test_unreadable_images_are_skipped_with_the_reason(tmp_path, capsys, monkeypatch, kind, reason):
    data = make_image_folder(str(tmp_path / "photos"), per_class=4)
    if kind == "bomb":  # Pillow's guard, scaled down so a 200x200 file trips it like a 180-megapixel one
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 200 * 200 // 2 - 1)
    name = _write_hostile(tmp_path / "photos" / "red", kind)
    build(data, str(tmp_path / "dataset"))
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if name in line)
    assert "skipped" in line and reason in line
    files = _files(str(tmp_path / "dataset"))
    assert len(files["train"] | files["val"]) == 12


@pytest.mark.parametrize("name", sorted(ODD_BUT_VALID))
def test_odd_but_valid_images_are_kept_and_read_as_rgb(tmp_path, name):
    data = make_image_folder(str(tmp_path / "photos"), per_class=4)
    write, expected_pixel = ODD_BUT_VALID[name]
    write(os.path.join(data, "green", name))
    base = str(tmp_path / "dataset")
    build(data, base)
    files = _files(base)
    copied = [f for f in files["train"] | files["val"] if os.path.basename(f) == name]
    assert copied == [os.path.join("green", name)]
    split = "train" if copied[0] in files["train"] else "val"
    ds = image_folder(os.path.join(base, split), eval_transforms(16))
    index = next(i for i, (path, _) in enumerate(ds.samples) if path.endswith(name))
    image, label = ds[index]
    assert image.shape == (3, 16, 16) and ds.classes[label] == "green"

    pixel = load_rgb(os.path.join(data, "green", name)).getpixel((0, 0))
    assert len(pixel) == 3
    if expected_pixel:
        assert all(abs(a - b) <= 1 for a, b in zip(pixel, expected_pixel)), pixel


def test_empty_class_folder_is_left_out_with_a_note(tmp_path, capsys):
    data = make_image_folder(str(tmp_path / "photos"), per_class=4)
    (tmp_path / "photos" / "violets").mkdir()
    build(data, str(tmp_path / "dataset"))
    assert "violets" in capsys.readouterr().out
    assert sorted(os.listdir(tmp_path / "dataset" / "train")) == ["blue", "green", "red"]


@pytest.mark.parametrize("layout,expected", [({"daisy": 5}, "only the class 'daisy'"), ({}, "no class folders"),
                                             ({"daisy": 5, "roses": 1}, "'roses' has 1 usable image")])
def test_datasets_that_cannot_be_split_stop_with_the_class_named(tmp_path, capsys, layout, expected):
    data = tmp_path / "photos"
    data.mkdir()
    for name, count in layout.items():
        make_image_folder(str(data), per_class=count, classes={name: (100, 100, 100)})
    code = run_cli(build_dataset.main, ["--data", str(data), "--output", str(tmp_path / "dataset"), "--no-progress"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and expected in err and "Traceback" not in err
    assert not (tmp_path / "dataset").exists()


def test_a_symlink_loop_does_not_hang_the_scan(tmp_path):
    data = make_image_folder(str(tmp_path / "photos"), per_class=4)
    os.symlink(os.path.join(data, "red"), os.path.join(data, "red", "loop"))
    os.symlink(data, os.path.join(data, "blue", "up"))
    base = str(tmp_path / "dataset")
    build(data, base)
    files = _files(base)
    assert len(files["train"] | files["val"]) == 12
    manifest = json.loads(open(os.path.join(base, "split.json")).read())
    assert manifest["seed"] == 42


def test_links_inside_a_class_never_file_other_classes_photos_under_it(tmp_path):
    """A loop up to the root and a link to another class: the split, and every folder the scripts
    read (training, --evaluate, --audit), see each photo once, under its own class."""
    from pyimagesearch.data.dataset import scan

    data = make_image_folder(str(tmp_path / "photos"), per_class=4)
    os.symlink("..", os.path.join(data, "red", "loop"))
    os.symlink(os.path.join("..", "green"), os.path.join(data, "blue", "green_too"))
    expected = {(name, f"img_{i}.jpg") for name in ("blue", "green", "red") for i in range(4)}
    ds = image_folder(data)
    assert sorted((ds.classes[label], os.path.basename(path)) for path, label in ds.samples) == sorted(expected)
    found = scan(data, check=False, progress=False).images
    assert {(label, os.path.basename(path)) for label, paths in found.items() for path in paths} == expected


@pytest.mark.parametrize("flag, value, expected", [("--val-split", "1.5", "between 0 and 1"),
                                                   ("--duplicate-distance", "65", "from 0 to 64")])
def test_bad_settings_are_refused_before_any_image_is_read(tmp_path, capsys, monkeypatch, flag, value, expected):
    data = make_image_folder(str(tmp_path / "photos"), per_class=2)
    monkeypatch.setattr(build_dataset, "scan", lambda *a, **k: pytest.fail("scanned before checking the settings"))
    try:
        code = run_cli(build_dataset.main, ["--data", data, "--output", str(tmp_path / "dataset"), flag, value])
    except SystemExit as stopped:  # argparse's own refusal
        code = stopped.code
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and expected in err and "Traceback" not in err
    assert not (tmp_path / "dataset").exists()


def test_training_drafts_no_further_than_its_smallest_crop_allows():
    for image_size in (32, 224):
        draft = train_draft_size(image_size)
        # RandomResizedCrop's smallest crop: 8 % of the area at aspect 3:4
        assert math.sqrt(0.08 * 0.75) * draft >= image_size
        assert math.sqrt(0.08 * 0.75) * (draft - 1) < image_size  # and no larger than that needs


def test_a_phone_photo_keeps_enough_pixels_for_the_smallest_crop(tmp_path):
    # how far a JPEG is drafted depends on its size alone: a plain 12-megapixel photo is written
    # in milliseconds, a detailed one in seconds
    for name, size in (("a", (4032, 3024)), ("b", (1024, 768))):
        os.makedirs(tmp_path / "train" / name)
        Image.new("RGB", size, (90, 120, 30)).save(tmp_path / "train" / name / "phone.jpg", quality=92)
    ds = get_dataloader(str(tmp_path / "train"), train_transforms(224), 4)[0]  # as the training scripts load it
    decoded = ds.loader(str(tmp_path / "train" / "a" / "phone.jpg"))
    assert decoded.size == (2016, 1512)  # drafted by 2, not by 8 to 504 x 378
    width, height = decoded.size
    assert math.sqrt(0.08 * 0.75 * width * height) >= 224
    assert ds.loader(str(tmp_path / "train" / "b" / "phone.jpg")).size == (1024, 768)  # not drafted at all


def test_build_refuses_a_split_it_did_not_write(tmp_path, capsys):
    data = make_image_folder(str(tmp_path / "photos"))
    mine = tmp_path / "dataset"
    for split in ("train", "val"):
        (mine / split / "cats").mkdir(parents=True)
        (mine / split / "cats" / "tom.jpg").write_bytes(b"my own photo")
    before = file_contents(mine)
    code = run_cli(build_dataset.main, ["--data", data, "--output", str(mine), "--no-progress"])
    err = error_text(capsys)
    assert code == 2 and "split.json" in err and str(mine) in err and "Traceback" not in err
    assert file_contents(mine) == before
