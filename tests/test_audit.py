"""inference.py --audit (likely label errors and outliers) and build_dataset.py --exclude."""

from __future__ import annotations

import csv
import json
import os
import shutil
from math import comb

import pytest

import inference
from conftest import COLORS, PRECISIONS, build, error_text, file_contents, make_image_folder
from pyimagesearch.inference import audit_report
from pyimagesearch.utils.errors import run_cli

CLASSES = {**COLORS, "yellow": (230, 210, 40)}
PLANTED = [("blue", 0, "red"), ("green", 1, "yellow"), ("yellow", 2, "blue")]


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """4 colour classes of 12 photos, 3 of them moved into a wrong class folder: (folder, moved paths)."""
    root = make_image_folder(str(tmp_path_factory.mktemp("planted") / "photos"), per_class=12, classes=CLASSES)
    moved = []
    for source, index, target in PLANTED:
        destination = os.path.join(root, target, f"moved_{index}.jpg")
        shutil.move(os.path.join(root, source, f"img_{index}.jpg"), destination)
        moved.append(destination)
    return root, moved


def _audit(model: str, folder: str, out, *extra: str) -> list[str]:
    return ["--model", model, "--audit", folder, "--output", str(out), "--folds", "3", "--device", "cpu",
            "--num-workers", "0", "--no-progress", *extra]


@pytest.mark.parametrize("precision", PRECISIONS)
def test_the_audit_ranks_planted_mislabels_far_above_chance(trained, planted, tmp_path, capsys, precision):
    """The body's features computed in fp32 and in bf16."""
    _, model = trained
    folder, moved = planted
    before = file_contents(folder)
    inference.main(_audit(model, folder, tmp_path, "--amp", precision))
    report = json.load(open(tmp_path / "warmup_model_audit.json"))
    ranking = [row["path"] for row in report["photos"]]
    assert sorted(ranking) == sorted(os.path.join(folder, name) for name in before)  # every photo, once
    # all 3 planted photos among the first 6 of 48: a random ranking does that with probability 1/864
    assert set(moved) <= set(ranking[:2 * len(moved)])
    assert comb(45, 3) / comb(48, 6) < 0.002
    with open(tmp_path / "warmup_model_audit.csv", newline="") as handle:
        flagged = list(csv.DictReader(handle))
    assert flagged and all(row["kind"] for row in flagged)  # the CSV holds the flagged photos only
    assert {row["path"] for row in flagged} >= set(moved)
    first = next(row for row in flagged if row["path"] == moved[0])
    assert (first["given"], first["likely"]) == ("red", "blue")
    assert os.path.getsize(tmp_path / "warmup_model_audit.png") > 0
    assert file_contents(folder) == before  # nothing moved, renamed or rewritten
    out = capsys.readouterr().out
    assert "likely label error(s)" in out and "build_dataset.py --exclude" in out
    # a second audit of the same photos with the same model skips the body, and ranks the same
    inference.main(_audit(model, folder, tmp_path, "--amp", precision))
    assert "reusing the body's features" in capsys.readouterr().out
    assert [row["path"] for row in json.load(open(tmp_path / "warmup_model_audit.json"))["photos"]] == ranking


def test_the_audit_refuses_before_loading_the_model(planted, tmp_path, capsys):
    folder, _ = planted
    missing_model = str(tmp_path / "no_such_model.pth")  # the folder is checked first
    assert run_cli(inference.main, _audit(missing_model, folder, tmp_path, "--folds", "13")) == 2
    message = error_text(capsys)
    assert "fewer readable photos than the 13 folds" in message and "'green' (11)" in message and "--folds 11" in message
    assert run_cli(inference.main, _audit(str(tmp_path / "m.onnx"), folder, tmp_path)) == 2
    message = error_text(capsys)
    assert "exported ONNX model" in message and "a .pth file" in message
    assert not os.listdir(tmp_path)


def test_the_summary_stays_short_at_a_hundred_classes():
    names = [f"class_{i:03d}_with_a_rather_long_name" for i in range(100)]
    rows = [{"rank": i + 1, "path": f"photos/{names[i % 100]}/{i}.jpg", "given": names[i % 100],
             "likely": names[(i + 1) % 100], "label_quality": 0.01, "outlier_score": 0.5,
             "kind": "label" if i % 3 else "outlier"} for i in range(400)]
    lines = audit_report.summary_lines(rows, names, "[INFO] header")
    assert len(lines) <= 30
    assert any("and 88 more classes" in line for line in lines)
    assert sum(". photos/" in line for line in lines) == audit_report.TOP


def test_exclude_leaves_out_listed_photos_by_source_or_dataset_path(tmp_path, capsys):
    data = make_image_folder(str(tmp_path / "photos"), per_class=6)
    base = str(tmp_path / "dataset")
    build(data, base, "--val-split", "0.34")
    copy_in_dataset = os.path.join(base, "train", "green", sorted(os.listdir(os.path.join(base, "train", "green")))[0])
    listing = tmp_path / "leave_out.txt"
    listing.write_text(f"# flagged by hand\n{os.path.join(data, 'red', 'img_0.jpg')}\n\n{copy_in_dataset}\n"
                       f"{tmp_path / 'elsewhere.jpg'}\n")
    build(data, base, "--val-split", "0.34", "--exclude", str(listing))
    manifest = json.load(open(os.path.join(base, "split.json")))
    green = os.path.join("green", os.path.basename(copy_in_dataset))
    assert manifest["excluded"]["photos"] == [green, os.path.join("red", "img_0.jpg")]
    assert manifest["excluded"]["unmatched"] == [str(tmp_path / "elsewhere.jpg")]
    kept = {os.path.join(label, name) for part in ("train", "val") for label, names in manifest[part].items()
            for name in names}
    assert len(kept) == 16 and not kept & set(manifest["excluded"]["photos"])
    assert "match no photo" in capsys.readouterr().out
    # the same command again gives the same split, though the copy it names is no longer in the dataset
    before = json.load(open(os.path.join(base, "split.json")))
    build(data, base, "--val-split", "0.34", "--exclude", str(listing))
    again = json.load(open(os.path.join(base, "split.json")))
    assert again["excluded"]["photos"] == before["excluded"]["photos"]
    assert (again["train"], again["val"]) == (before["train"], before["val"])
    # an audit CSV, as inference.py --audit writes it, works as it is
    audit_csv = tmp_path / "audit.csv"
    audit_csv.write_text("rank,path,given,likely,label_quality,outlier_score,kind\n"
                         f"1,{os.path.join(data, 'blue', 'img_2.jpg')},blue,red,0.01,0.5,label\n")
    build(data, base, "--val-split", "0.34", "--exclude", str(audit_csv))
    assert json.load(open(os.path.join(base, "split.json")))["excluded"]["photos"] == [os.path.join("blue", "img_2.jpg")]


def test_a_missing_exclude_file_is_refused_before_any_image_is_read(tmp_path, capsys):
    import build_dataset

    data = make_image_folder(str(tmp_path / "photos"), per_class=3)
    code = run_cli(build_dataset.main, ["--data", data, "--output", str(tmp_path / "dataset"),
                                        "--exclude", str(tmp_path / "nope.csv"), "--no-progress"])
    assert code == 2 and "--exclude" in error_text(capsys) and not os.path.exists(tmp_path / "dataset")


def test_a_photo_that_cannot_be_read_is_named_and_left_out_of_the_audit(trained, planted, tmp_path, capsys):
    _, model = trained
    folder = tmp_path / "photos"
    shutil.copytree(planted[0], folder)
    broken = folder / "red" / "broken.jpg"
    broken.write_bytes((folder / "red" / "img_3.jpg").read_bytes()[:300])  # a download cut short
    inference.main(_audit(model, str(folder), tmp_path, "--feature-cache-dir", str(tmp_path / "cache")))
    out = capsys.readouterr().out
    assert f"skipped {broken}" in out and "could not be read" in out
    report = json.load(open(tmp_path / "warmup_model_audit.json"))
    assert report["photos"] and str(broken) not in {row["path"] for row in report["photos"]}
    assert report["skipped"][0]["path"] == str(broken) and len(report["photos"]) == report["audited"] == 48
    assert os.listdir(tmp_path / "cache") == []  # kept only once every photo reads


def test_a_fine_tuned_checkpoint_is_audited_too(disc_model, tmp_path):
    """Fine-tuning's head is an MLP: the body's width is read from its first Linear."""
    model, val, _ = disc_model
    inference.main(_audit(model, val, tmp_path))
    report = json.load(open(tmp_path / "finetune_model_best_audit.json"))
    assert len(report["photos"]) == 20


@pytest.mark.parametrize("contents, message", [
    ("rank;path;given;likely\n1;{photo};blue;red\n", None),  # re-saved by a spreadsheet: ';' between cells
    ("rank,file,given,likely\n1,{photo},blue,red\n", "no 'path' column"),
    ("{elsewhere}\n", "none of its 1 path(s)"),
])
def test_exclude_reads_a_spreadsheets_csv_and_refuses_one_it_cannot_use(tmp_path, capsys, contents, message):
    data = make_image_folder(str(tmp_path / "photos"), per_class=4)
    base = tmp_path / "dataset"
    listing = tmp_path / "audit.csv"
    listing.write_text(contents.format(photo=os.path.join(data, "blue", "img_1.jpg"), elsewhere=tmp_path / "x.jpg"))
    import build_dataset

    code = run_cli(build_dataset.main, ["--data", data, "--output", str(base), "--no-progress", "--exclude", str(listing)])
    if message is None:
        assert code == 0 and json.load(open(base / "split.json"))["excluded"]["photos"] == [os.path.join("blue", "img_1.jpg")]
    else:
        assert code == 2 and message in error_text(capsys) and not base.exists()


def test_excluding_a_whole_class_says_so(tmp_path, capsys):
    data = make_image_folder(str(tmp_path / "photos"), per_class=3, classes={**COLORS, "yellow": (230, 210, 40)})
    listing = tmp_path / "leave_out.txt"
    listing.write_text("".join(f"{os.path.join(data, 'yellow', f'img_{i}.jpg')}\n" for i in range(3)))
    build(data, tmp_path / "dataset", "--exclude", str(listing))
    assert "--exclude leaves out, every one" in " ".join(capsys.readouterr().out.split())
    assert "yellow" not in json.load(open(tmp_path / "dataset" / "split.json"))["train"]


@pytest.mark.parametrize("case, message", [
    ("a photo", "is a file, not a folder"),
    ("a folder as model", "is a folder; pass a model file"),
    ("output inside", "is inside the audited folder"),
    ("seed", "SEED = -1 in pyimagesearch/config.py"),
])
def test_audit_paths_and_seed_are_refused_before_anything_is_written(trained, planted, tmp_path, capsys, monkeypatch,
                                                                    case, message):
    from pyimagesearch import config

    _, model = trained
    folder, _ = planted
    before = file_contents(folder)
    audited, out = folder, tmp_path / "out"
    if case == "a photo":
        audited = os.path.join(folder, "red", "img_3.jpg")
    elif case == "a folder as model":
        model = os.path.dirname(model)
    elif case == "output inside":
        out = os.path.join(folder, "audit_output")
    else:
        monkeypatch.setattr(config, "SEED", -1)
    assert run_cli(inference.main, _audit(model, audited, out)) == 2
    assert message in error_text(capsys)
    assert file_contents(folder) == before and not os.path.exists(os.path.join(folder, "audit_output"))
    assert not (tmp_path / "out").exists()


def test_the_audit_names_a_file_that_is_not_an_image(trained, planted, tmp_path, capsys):
    _, model = trained
    folder, _ = planted
    copy = tmp_path / "photos"
    shutil.copytree(folder, copy)
    from PIL import Image

    frames = [Image.new("RGB", (40, 40), (60 * i, 0, 0)) for i in range(3)]
    frames[0].save(copy / "red" / "moving.gif", save_all=True, append_images=frames[1:])
    inference.main(_audit(model, str(copy), tmp_path / "out"))
    out = " ".join(capsys.readouterr().out.split())
    assert "moving.gif: not an image file by its extension" in out
