"""build_dataset.py: labels, a stratified seeded split, atomic rebuilds, and images that fight back."""

from __future__ import annotations

import hashlib
import io
import json
import os

import numpy as np
import pytest
from PIL import Image

import build_dataset
from conftest import make_image_folder
from pyimagesearch.create_dataloaders import eval_transforms, image_folder
from pyimagesearch.errors import UserError, run_cli


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


def _build(data: str, base: str, *extra: str) -> None:
    build_dataset.main(["--data", data, "--output", base, "--no-progress", *extra])


def test_split_is_stratified_seeded_and_disjoint(tmp_path, capsys):
    data = make_image_folder(str(tmp_path / "photos"), per_class=10)
    base = str(tmp_path / "dataset")
    _build(data, base, "--val-split", "0.2")
    first = _files(base)
    assert not first["train"] & first["val"]
    for color in ("blue", "green", "red"):
        assert sum(f.startswith(color + os.sep) for f in first["val"]) == 2
        assert sum(f.startswith(color + os.sep) for f in first["train"]) == 8
    table = capsys.readouterr().out
    assert "blue" in table and "total" in table and " 24 " in table  # per-class and total counts

    _build(data, base, "--val-split", "0.2")
    assert _files(base) == first  # same seed, same split


def test_rebuilding_replaces_the_previous_split(tmp_path):
    data = make_image_folder(str(tmp_path / "photos"), per_class=10)
    base = str(tmp_path / "dataset")
    _build(data, base, "--seed", "1")
    _build(data, base, "--seed", "2")  # the tutorial would now hold a second split on top of the first
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
    _build(str(data.resolve()), base)
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
    _build(data, str(tmp_path / "dataset"))
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
        _build(data, str(precious))
    assert (precious / "thesis.tex").exists()


# --- images that fight back ------------------------------------------------------------------

def _jpeg_bytes(mode: str = "RGB", size=(24, 24)) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, 120).save(buffer, format="JPEG")
    return buffer.getvalue()


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


@pytest.mark.parametrize("kind,reason", [("truncated_jpeg", "cannot be decoded"), ("zero_bytes", "empty file"),
                                         ("text_as_jpg", "not an image"), ("bomb", "decompression-bomb")])
def test_unreadable_images_are_skipped_with_the_reason(tmp_path, capsys, monkeypatch, kind, reason):
    data = make_image_folder(str(tmp_path / "photos"), per_class=4)
    if kind == "bomb":  # Pillow's guard, scaled down so a 200x200 file trips it like a 180-megapixel one
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 200 * 200 // 2 - 1)
    name = _write_hostile(tmp_path / "photos" / "red", kind)
    _build(data, str(tmp_path / "dataset"))
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if name in line)
    assert "skipped" in line and reason in line
    files = _files(str(tmp_path / "dataset"))
    assert len(files["train"] | files["val"]) == 12


def _save_transparent_palette(path) -> None:
    image = Image.new("P", (20, 20), 0)
    image.putpalette([10, 20, 30] + [0, 0, 0] * 255)
    image.save(path, transparency=0)


def _save_16bit(path) -> None:
    Image.fromarray(np.full((20, 20), 40000, dtype=np.uint16)).save(path)


# name -> (how to write it, the RGB pixel it must read as, or None for "any")
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


@pytest.mark.parametrize("name", sorted(ODD_BUT_VALID))
def test_odd_but_valid_images_are_kept_and_read_as_rgb(tmp_path, name):
    data = make_image_folder(str(tmp_path / "photos"), per_class=4)
    write, expected_pixel = ODD_BUT_VALID[name]
    write(os.path.join(data, "green", name))
    base = str(tmp_path / "dataset")
    _build(data, base)
    files = _files(base)
    copied = [f for f in files["train"] | files["val"] if os.path.basename(f) == name]
    assert copied == [os.path.join("green", name)]
    split = "train" if copied[0] in files["train"] else "val"
    ds = image_folder(os.path.join(base, split), eval_transforms(16))
    index = next(i for i, (path, _) in enumerate(ds.samples) if path.endswith(name))
    image, label = ds[index]
    assert image.shape == (3, 16, 16) and ds.classes[label] == "green"
    from pyimagesearch.images import load_rgb

    pixel = load_rgb(os.path.join(data, "green", name)).getpixel((0, 0))
    assert len(pixel) == 3
    if expected_pixel:
        assert all(abs(a - b) <= 1 for a, b in zip(pixel, expected_pixel)), pixel


def test_empty_class_folder_is_left_out_with_a_note(tmp_path, capsys):
    data = make_image_folder(str(tmp_path / "photos"), per_class=4)
    (tmp_path / "photos" / "violets").mkdir()
    _build(data, str(tmp_path / "dataset"))
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
    _build(data, base)
    files = _files(base)
    assert len(files["train"] | files["val"]) == 12
    manifest = json.loads(open(os.path.join(base, "split.json")).read())
    assert manifest["seed"] == 42


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
