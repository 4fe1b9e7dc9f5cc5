"""inference.py's modes: the random batch, your own photos, --evaluate, --annotate, video, and the ONNX
export run by OpenCV.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import warnings

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

import fine_tune
import inference
from conftest import (
    ROOT,
    decoded_size,
    error_text,
    fine_tune_parser,
    make_image_folder,
    read_frames,
    train_args,
    write_video,
)
from pyimagesearch import checkpoint
from pyimagesearch.create_dataloaders import eval_image_folder, eval_transforms, get_dataloader, train_transforms
from pyimagesearch.data.images import check_image, load_rgb
from pyimagesearch.inference import deploy, predict
from pyimagesearch.inference.predict import ImageFiles
from pyimagesearch.utils.errors import UserError, run_cli


def _names(path: str) -> set[str]:
    with open(path) as handle:
        return {re.split(r"[<>=\[ ;]", line.strip())[0].lower() for line in handle if line.strip()[:1].isalpha()}


def _photo(path, width: int, height: int) -> None:
    """A large JPEG with detail at every scale (a draft decode visibly differs from a full one)."""
    rng = np.random.default_rng(0)
    small = rng.integers(0, 255, (height // 16, width // 16, 3), dtype=np.uint8)
    pixels = np.asarray(Image.fromarray(small).resize((width, height), Image.Resampling.BILINEAR), dtype=np.int16)
    pixels = np.clip(pixels + rng.integers(-40, 40, pixels.shape), 0, 255).astype(np.uint8)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(pixels).save(path, quality=92)


def _video_run(model, clip, out, *extra) -> list[str]:
    return ["--model", model, "--video", str(clip), "--output", str(out), "--no-progress", *extra]


def _clip(tmp_path, frames: int = 6):
    return write_video(tmp_path / "clip.avi", [np.full((32, 32, 3), 80 + 20 * i, np.uint8) for i in range(frames)])


def test_inference_rebuilds_model_from_checkpoint_alone(tmp_path, splits):
    fine_tune.main(train_args(tmp_path, splits, "finetune", "--epochs", "1"))
    out = tmp_path / "output"
    inference.main(["--model", str(out / "finetune_model.pth"), "--val", os.path.join(splits, "val"),
                    "--output", str(out), "--device", "cpu", "--seed", "0", "--num-workers", "0"])
    width, height = decoded_size(str(out / "finetune_model_predictions.png"))
    assert width > 300 and height > 200


def test_the_design_packages_are_required_and_import():
    names = _names(os.path.join(ROOT, "requirements.txt"))
    assert {"torch", "torchvision", "imutils", "matplotlib", "tqdm", "numpy", "opencv-contrib-python"} <= names
    assert {"cleanlab", "scikit-learn", "torchcam"} <= names  # the audit's and the heatmaps' libraries
    from importlib import metadata

    for clashing in ("opencv-python", "opencv-python-headless"):  # their cv2 would replace contrib's
        assert clashing not in names
        with pytest.raises(metadata.PackageNotFoundError):
            metadata.version(clashing)
    import imutils

    assert imutils.build_montages and hasattr(cv2, "ximgproc")  # the contrib build, as the design names it


def test_onnx_export_agrees_with_the_checkpoint(exported):
    base, model_path, onnx_path = exported
    meta = json.loads(open(deploy.metadata_path(onnx_path)).read())
    model, checkpoint_meta = checkpoint.load(model_path)
    assert {k: meta[k] for k in ("class_names", "image_size", "mean", "std")} == \
        {k: checkpoint_meta[k] for k in ("class_names", "image_size", "mean", "std")}
    opencv_model, _ = deploy.load_onnx(onnx_path)
    ds = eval_image_folder(os.path.join(base, "val"), meta["image_size"])
    images = torch.stack([ds[i][0] for i in range(len(ds))])
    with torch.no_grad():
        expected = model(images).softmax(1)
    got = opencv_model(images).softmax(1)
    assert (got - expected).abs().max() < 1e-4
    assert torch.equal(got.argmax(1), expected.argmax(1))  # top-1 agrees on every validation image


def test_export_replaces_its_own_files_only(exported, tmp_path, capsys):
    _, model_path, onnx_path = exported
    inference.main(["--model", model_path, "--export", onnx_path])  # an earlier export: replaced
    mine = tmp_path / "mine.onnx"
    mine.write_bytes(b"someone else's network")
    code = run_cli(inference.main, ["--model", model_path, "--export", str(mine)])
    assert code == 2 and "was not written by --export" in error_text(capsys)
    assert mine.read_bytes() == b"someone else's network" and not (tmp_path / "mine.json").exists()


def test_every_mode_runs_the_onnx_model(exported, tmp_path, capsys):
    base, model_path, onnx_path = exported
    out = tmp_path / "out"
    common = ["--model", onnx_path, "--output", str(out), "--num-workers", "0", "--no-progress"]
    inference.main([*common, "--val", os.path.join(base, "val"), "--seed", "1"])
    inference.main([*common, "--images", os.path.join(base, "val")])
    inference.main([*common, "--evaluate", os.path.join(base, "val")])
    clip = write_video(tmp_path / "clip.avi", [np.full((40, 40, 3), c, np.uint8) for c in ((220, 40, 40), (30, 60, 220))])
    inference.main([*common, "--video", str(clip)])
    assert "OpenCV's DNN module" in capsys.readouterr().out
    for name in ("warmup_model_predictions.png", "warmup_model_images.json", "warmup_model_report.json",
                 "warmup_model_video.csv"):
        assert (out / name).stat().st_size > 0, name
    onnx_report = json.loads((out / "warmup_model_report.json").read_text())
    inference.main(["--model", model_path, "--output", str(tmp_path / "torch"), "--evaluate", os.path.join(base, "val"),
                    "--num-workers", "0", "--no-progress"])
    torch_report = json.loads((tmp_path / "torch" / "warmup_model_report.json").read_text())
    assert onnx_report["confusion_matrix"] == torch_report["confusion_matrix"]


def test_annotate_draws_on_each_photo_at_its_own_size(trained, tmp_path, capsys):
    _, model = trained
    photos = tmp_path / "my photos"
    photos.mkdir()
    Image.fromarray(np.full((90, 120, 3), (220, 40, 40), np.uint8)).save(photos / "rosé in the garden.jpg")
    Image.fromarray(np.full((50, 70, 3), (40, 200, 60), np.uint8)).save(photos / "leaf.png")
    (photos / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    out = tmp_path / "annotated"
    inference.main(["--model", model, "--images", str(photos), "--annotate", str(out), "--output", str(tmp_path / "o"),
                    "--num-workers", "0"])
    printed = capsys.readouterr().out
    assert "skipped" in printed and "broken.jpg" in printed
    drawn = ["leaf_annotated.png", "rosé in the garden_annotated.jpg", "warmup_model_montage.jpg"]
    assert sorted(os.listdir(out)) == [".annotated.json", *drawn]  # the manifest: what --annotate wrote there
    assert json.loads((out / ".annotated.json").read_text())["written"] == drawn
    for name, size, original in (("rosé in the garden_annotated.jpg", (120, 90), (220, 40, 40)),
                                 ("leaf_annotated.png", (70, 50), (40, 200, 60))):
        with Image.open(out / name) as image:
            pixels = np.asarray(image.convert("RGB"))
        assert image.size == size
        assert (np.abs(pixels[:12, :40].astype(int) - original).sum(2) > 100).any()  # the label band
        assert np.abs(pixels[-10:, -10:].astype(int) - original).max() < 20  # the photo elsewhere
    with Image.open(out / "warmup_model_montage.jpg") as montage:
        assert montage.size == (512, 256)  # two tiles side by side


def test_a_video_is_classified_frame_by_frame_as_images_would_be(trained, tmp_path):
    _, model = trained
    rng = np.random.default_rng(0)
    colors = [(30, 60, 220), (40, 200, 60), (220, 40, 40)] * 3
    frames = [np.clip(np.array(c) + rng.normal(0, 20, (48, 64, 3)), 0, 255).astype(np.uint8) for c in colors]
    clip = write_video(tmp_path / "clip.avi", frames)
    out = tmp_path / "out"
    inference.main(["--model", model, "--video", str(clip), "--output", str(out), "--top-k", "2", "--no-progress"])
    with open(out / "warmup_model_video.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["frame"]) for r in rows] == list(range(9))
    assert float(rows[5]["time_s"]) == pytest.approx(1.0)  # frame 5 at 5 frames/s
    written = read_frames(next(out.glob("warmup_model_video.*[!v]")))
    assert len(written) == 9 and written[0].shape == (48, 64, 3)

    # the exact pixels OpenCV decoded, given to --images as a lossless PNG: the same probabilities
    decoded = read_frames(clip)[4]
    Image.fromarray(cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)).save(tmp_path / "frame4.png")
    inference.main(["--model", model, "--images", str(tmp_path / "frame4.png"), "--output", str(out), "--top-k", "2",
                    "--num-workers", "0"])
    top = json.loads((out / "warmup_model_images.json").read_text())["predictions"][0]["top"]
    assert rows[4]["class_1"] == top[0]["class"]
    assert float(rows[4]["probability_1"]) == pytest.approx(top[0]["probability"], abs=1e-6)


def test_ctrl_c_leaves_a_playable_video_and_its_table(trained, tmp_path, monkeypatch):
    _, model = trained
    clip = write_video(tmp_path / "clip.avi", [np.full((32, 32, 3), 100 + 10 * i, np.uint8) for i in range(8)])
    real, calls = predict.Predictor.forward, []

    def interrupted_at_the_fourth_frame(*args):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(predict.Predictor, "forward", interrupted_at_the_fourth_frame)
    out = tmp_path / "out"
    assert run_cli(inference.main, ["--model", model, "--video", str(clip), "--output", str(out), "--no-progress"]) == 0
    with open(out / "warmup_model_video.csv") as handle:
        assert len(list(csv.DictReader(handle))) == 3
    assert len(read_frames(next(out.glob("warmup_model_video.*[!v]")))) == 3


@pytest.mark.parametrize("args,message", [(["--camera", "7"], "no camera could be opened at index 7"),
                                          (["--video", "missing.mp4"], "no such file"),
                                          (["--video", "{notvideo}"], "cannot read it as a video")])
def test_missing_sources_are_one_clear_error(trained, tmp_path, capsys, args, message):
    not_video = tmp_path / "notes.mp4"
    not_video.write_text("this is text")
    args = [a.format(notvideo=not_video) for a in args]
    code = run_cli(inference.main, ["--model", trained[1], "--output", str(tmp_path / "o"), *args])
    err = error_text(capsys)
    assert code == 2 and message in err and "Traceback" not in err


def test_the_docs_snippet_classifies_with_only_cv2_and_numpy(exported, tmp_path):
    base, model_path, onnx_path = exported
    page = open(os.path.join(ROOT, "docs", "onnx.md"), encoding="utf-8").read()
    snippet = re.search(r"<!-- opencv-snippet -->\s*```python\n(.*?)```", page, re.S).group(1)
    assert len(snippet.strip().splitlines()) <= 12
    photo = os.path.join(base, "val", "red", sorted(os.listdir(os.path.join(base, "val", "red")))[0])
    code = (snippet.replace("output/finetune_model", os.path.splitext(onnx_path)[0]).replace("my_rose.jpg", photo)
            + "\nimport sys\nassert 'torch' not in sys.modules and 'PIL' not in sys.modules\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    label, probability = result.stdout.split()
    model, meta = checkpoint.load(model_path)
    ds = eval_image_folder(os.path.join(base, "val"), meta["image_size"])
    index = [p for p, _ in ds.samples].index(photo)
    with torch.no_grad():
        expected = model(ds[index][0][None]).softmax(1)[0]
    assert label == meta["class_names"][int(expected.argmax())]
    assert float(probability) == pytest.approx(float(expected.max()), abs=0.05)  # OpenCV's resize, not Pillow's


def test_evaluate_refuses_a_folder_with_unknown_classes(tmp_path, splits):
    fine_tune.main(train_args(tmp_path, splits, "finetune", "--epochs", "1", "--no-report"))
    other = make_image_folder(str(tmp_path / "other"), per_class=2, classes={"purple": (120, 0, 120)})

    with pytest.raises(UserError, match="purple"):
        inference.main(["--model", str(tmp_path / "output" / "finetune_model.pth"), "--evaluate", other,
                        "--output", str(tmp_path / "eval"), "--device", "cpu", "--num-workers", "0"])


def test_images_mode_predicts_good_files_and_names_broken_ones(tmp_path, splits, capsys):
    fine_tune.main(train_args(tmp_path, splits, "finetune", "--epochs", "1", "--no-report"))
    mine = tmp_path / "my photos"
    mine.mkdir()
    Image.new("RGB", (50, 40), (200, 30, 30)).save(mine / "rose.jpg")
    Image.new("RGBA", (30, 30), (0, 0, 200, 128)).save(mine / "sky.PNG")
    (mine / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (mine / "empty.png").write_bytes(b"")
    single = tmp_path / "single.jpg"
    Image.new("L", (20, 20), 128).save(single)
    capsys.readouterr()

    inference.main(["--model", str(tmp_path / "output" / "finetune_model.pth"), "--images", str(mine), str(single),
                    str(tmp_path / "missing.jpg"), "--top-k", "2", "--output", str(tmp_path / "pred"),
                    "--device", "cpu", "--num-workers", "0"])
    out = capsys.readouterr().out
    result = json.loads((tmp_path / "pred" / "finetune_model_images.json").read_text())
    predicted = sorted(os.path.basename(p["path"]) for p in result["predictions"])
    assert predicted == ["rose.jpg", "single.jpg", "sky.PNG"]
    skipped = sorted(os.path.basename(s["path"]) for s in result["skipped"])
    assert skipped == ["broken.jpg", "empty.png", "missing.jpg"]
    for entry in result["skipped"]:
        assert f"skipped {entry['path']}" in out
    for prediction in result["predictions"]:
        probabilities = [t["probability"] for t in prediction["top"]]
        assert len(probabilities) == 2 and probabilities == sorted(probabilities, reverse=True)
        assert 0 < sum(probabilities) <= 1 + 1e-6
    assert "images/s" in out
    with open(tmp_path / "pred" / "finetune_model_images.csv") as handle:
        assert len(list(csv.reader(handle))) == 4  # header + three images
    assert decoded_size(tmp_path / "pred" / "finetune_model_images.png")[0] > 100


def test_every_mode_feeds_the_model_the_same_tensor(tmp_path, trained, monkeypatch):
    base, model_path = trained
    val = tmp_path / "val"
    for name in ("blue", "green", "red"):
        _photo(str(val / name / "big.jpg"), 1600, 1200)
    args = train_args(tmp_path, base, "warmup")
    args[args.index("--val") + 1] = str(val)
    parsed = fine_tune_parser().parse_args(args)
    # what validation during training sees: the scripts' own call of the dataloader helper
    training_val = get_dataloader(parsed.val, eval_transforms(parsed.image_size), parsed.batch_size, shuffle=False)[0][0][0]

    seen = {}
    real = predict.Predictor.forward

    def spy(self, x):  # what each mode feeds the model
        seen.setdefault(mode, []).extend(x.clone())
        return real(self, x)

    monkeypatch.setattr(predict.Predictor, "forward", spy)
    common = ["--model", model_path, "--output", str(tmp_path / "out"), "--num-workers", "0", "--no-progress"]
    mode = "images"
    inference.main([*common, "--images", str(val / "blue" / "big.jpg")])
    mode = "random"
    inference.main([*common, "--val", str(val), "--batch-size", "3", "--seed", "0"])  # the tutorial's random batch
    mode = "evaluate"
    inference.main([*common, "--evaluate", str(val)])
    assert training_val.shape == (3, 32, 32)
    for mode in ("images", "random", "evaluate"):
        assert any(torch.equal(row, training_val) for row in seen[mode]), mode


def test_a_failed_or_killed_video_run_keeps_the_previous_video_and_table(trained, tmp_path, monkeypatch, capsys):
    _, model = trained
    out, clip = tmp_path / "out", _clip(tmp_path)
    assert run_cli(inference.main, _video_run(model, clip, out)) == 0
    before = {name: (out / name).read_bytes() for name in os.listdir(out)}
    assert sorted(before) == ["warmup_model_video.avi", "warmup_model_video.csv"] or \
        sorted(before) == ["warmup_model_video.csv", "warmup_model_video.mp4"]

    # a source with no readable frame, then a run that dies in its third frame (as a kill would end it)
    empty = tmp_path / "empty.avi"
    empty.write_bytes(b"")
    assert run_cli(inference.main, _video_run(model, empty, out)) == 2
    real, calls = predict.Predictor.forward, []

    def crashing(*args):
        calls.append(1)
        if len(calls) == 3:
            raise MemoryError("killed")
        return real(*args)

    monkeypatch.setattr(predict.Predictor, "forward", crashing)
    with pytest.raises(MemoryError):
        inference.main(_video_run(model, clip, out))
    assert {name: (out / name).read_bytes() for name in os.listdir(out)} == before  # nothing else, nothing changed


def test_sigterm_during_a_video_finishes_its_files_and_exits_143(trained, tmp_path, monkeypatch):
    _, model = trained
    out, clip = tmp_path / "out", _clip(tmp_path, frames=8)
    real, calls = predict.Predictor.forward, []

    def terminated_at_the_fourth_frame(*args):
        calls.append(1)
        if len(calls) == 4:
            signal.raise_signal(signal.SIGTERM)  # run_cli's handler: the same path as `kill PID`
        return real(*args)

    monkeypatch.setattr(predict.Predictor, "forward", terminated_at_the_fourth_frame)
    assert run_cli(inference.main, _video_run(model, clip, out)) == 143
    with open(out / "warmup_model_video.csv") as handle:
        assert len(list(csv.DictReader(handle))) == 3
    video = next(p for p in out.iterdir() if p.suffix in (".mp4", ".avi"))
    assert len(read_frames(video)) == 3 and not [p for p in out.iterdir() if p.name.startswith(".")]


def test_a_video_at_the_output_path_is_refused_before_any_frame(trained, tmp_path, capsys):
    _, model = trained
    out = tmp_path / "out"
    out.mkdir()
    clip = write_video(out / "warmup_model_video.avi", [np.full((32, 32, 3), 90, np.uint8)] * 4)
    original = clip.read_bytes()
    assert run_cli(inference.main, _video_run(model, clip, out)) == 2
    assert "is where this run would write" in error_text(capsys)
    assert clip.read_bytes() == original and sorted(os.listdir(out)) == ["warmup_model_video.avi"]


def test_annotate_never_overwrites_the_users_own_file_and_never_reads_its_output_back(trained, tmp_path, capsys):
    base, model = trained
    photos = tmp_path / "photos"
    shutil.copytree(os.path.join(base, "val", "red"), photos)
    first = sorted(os.listdir(photos))[0]
    annotated = photos / "annotated"  # inside the folder being classified
    run = ["--model", model, "--images", str(photos), "--annotate", str(annotated), "--output", str(tmp_path / "o"),
           "--no-progress"]
    assert run_cli(inference.main, run) == 0
    written = sorted(os.listdir(annotated))
    assert f"{os.path.splitext(first)[0]}_annotated.jpg" in written
    capsys.readouterr()
    assert run_cli(inference.main, run) == 0  # the same command again: its own files are replaced, not classified
    out = capsys.readouterr().out
    assert "_annotated" not in out.split("[INFO] not classifying")[0] and "it is the --annotate or --explain folder" in out
    assert sorted(os.listdir(annotated)) == written
    rows = json.loads((tmp_path / "o" / "warmup_model_images.json").read_text())["predictions"]
    assert len(rows) == len(os.listdir(photos)) - 1  # the photos, not the annotated folder

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / f"{os.path.splitext(first)[0]}_annotated.jpg").write_bytes(b"my own picture")
    code = run_cli(inference.main, [*run[:5], str(mine), *run[6:]])
    assert code == 2 and "were not written by --annotate" in error_text(capsys)
    assert os.listdir(mine) == [f"{os.path.splitext(first)[0]}_annotated.jpg"]
    assert (mine / f"{os.path.splitext(first)[0]}_annotated.jpg").read_bytes() == b"my own picture"


@pytest.mark.parametrize("names,message", [(["blue", "green", "red", "violet"], "names 4 classes"),
                                           (["blue", "green"], "names 2 classes")])
def test_an_onnx_model_whose_metadata_names_another_class_count_is_refused(exported, tmp_path, capsys, names, message):
    onnx = tmp_path / "m.onnx"
    shutil.copy(exported[2], onnx)
    shutil.copy(deploy.metadata_path(exported[2]), deploy.metadata_path(str(onnx)))
    meta_path = deploy.metadata_path(str(onnx))
    meta = json.loads(open(meta_path).read())
    meta["class_names"] = names
    open(meta_path, "w").write(json.dumps(meta))
    code = run_cli(inference.main, ["--model", str(onnx), "--images", str(tmp_path), "--output", str(tmp_path / "o")])
    err = error_text(capsys)
    assert code == 2 and "gives 3 outputs per image" in err and message in err


def test_an_onnx_run_shows_no_opencv_warning(trained, exported, tmp_path, capfd):
    base, _ = trained
    capfd.readouterr()
    inference.main(["--model", exported[2], "--images", os.path.join(base, "val"), "--output", str(tmp_path / "o")])
    captured = capfd.readouterr()
    assert "WARN" not in captured.err and "[ WARN" not in captured.out


def test_images_exits_non_zero_when_nothing_was_classified(tmp_path, trained, capsys):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    code = run_cli(inference.main, ["--model", trained[1], "--images", str(broken), str(tmp_path / "nope.jpg"),
                                    "--output", str(tmp_path / "out"), "--num-workers", "0"])
    captured = capsys.readouterr()
    err = " ".join(captured.err.split())
    assert code == 2 and "No image could be classified: 2 path(s) skipped" in err
    assert "broken.jpg" in captured.out and "nope.jpg" in captured.out
    assert not (tmp_path / "out" / "warmup_model_images.json").exists()


def test_exif_orientation_is_applied_in_every_path(tmp_path):
    rng = np.random.default_rng(0)
    stored = Image.fromarray(rng.integers(0, 255, (20, 40, 3), dtype=np.uint8))  # 40 wide, 20 high, as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display": a phone held upright
    sideways, upright = tmp_path / "tagged" / "a" / "p.png", tmp_path / "plain" / "a" / "p.png"
    for path in (sideways, upright):
        path.parent.mkdir(parents=True)
        (path.parent.parent / "b").mkdir()
        stored.save(path.parent.parent / "b" / "q.png")
    stored.save(sideways, exif=exif)
    stored.transpose(Image.Transpose.ROTATE_270).save(upright)

    assert load_rgb(str(sideways)).size == (20, 40) and check_image(str(sideways)) is None
    for make in (lambda root: eval_image_folder(root, 16),
                 lambda root: get_dataloader(root, train_transforms(16), 1)[0],
                 lambda root: ImageFiles([os.path.join(root, "a", "p.png")], eval_image_folder(root, 16).transform, 16)):
        torch.manual_seed(0)
        tagged = make(str(tmp_path / "tagged"))[0][0]
        torch.manual_seed(0)
        plain = make(str(tmp_path / "plain"))[0][0]
        assert torch.equal(tagged, plain)


def test_a_folder_that_is_also_the_annotate_output_is_named_as_the_reason(trained, tmp_path, capsys):
    base, model = trained
    photos = tmp_path / "photos"
    photos.mkdir()
    first = sorted(os.listdir(os.path.join(base, "val", "red")))[0]
    shutil.copy(os.path.join(base, "val", "red", first), photos / "p.jpg")
    (photos / "p_annotated.jpg").write_bytes(b"the user's own picture")
    code = run_cli(inference.main, ["--model", model, "--images", str(photos), "--annotate", str(photos),
                                    "--output", str(tmp_path / "o"), "--no-progress"])
    err = error_text(capsys)
    assert code == 2 and "--annotate" in err and "a folder of its own" in err and str(photos / "annotated") in err
    assert "Pass .jpg" not in err
    assert sorted(os.listdir(photos)) == ["p.jpg", "p_annotated.jpg"]
    assert (photos / "p_annotated.jpg").read_bytes() == b"the user's own picture"


def test_names_with_control_characters_or_glyphs_the_font_lacks_print_and_draw_cleanly(trained, tmp_path, capsys):
    base, model = trained
    photos = tmp_path / "photos"
    photos.mkdir()
    first = os.path.join(base, "val", "red", sorted(os.listdir(os.path.join(base, "val", "red")))[0])
    for name in ("two\nlines.jpg", "玫瑰.jpg", "tab\there.jpg"):
        shutil.copy(first, photos / name)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert run_cli(inference.main, ["--model", model, "--images", str(photos), "--output", str(tmp_path / "o"),
                                        "--no-progress"]) == 0
    assert not [w for w in caught if "Glyph" in str(w.message)], [str(w.message) for w in caught]
    out = capsys.readouterr().out
    assert "two\\nlines.jpg: " in out and "tab\\there.jpg: " in out and "玫瑰.jpg: " in out
    assert not [line for line in out.splitlines() if line.startswith("lines.jpg")]  # no name split across lines
    assert decoded_size(tmp_path / "o" / "warmup_model_images.png")[0] > 100


def test_a_photo_folder_that_also_received_explain_output_stays_a_photo_folder(trained, tmp_path, capsys):
    """--explain D with --images D is refused naming --explain; after --images D/p.jpg --explain D,
    --images D still classifies the user's photo, and only the pictures --explain wrote are left out."""
    base, model = trained
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(os.path.join(base, "val", "red", sorted(os.listdir(os.path.join(base, "val", "red")))[0]),
                photos / "p.jpg")
    common = ["--model", model, "--output", str(tmp_path / "o"), "--no-progress"]
    assert run_cli(inference.main, [*common, "--images", str(photos), "--explain", str(photos)]) == 2
    err = error_text(capsys)
    assert "--explain" in err and "--annotate" not in err and str(photos / "explained") in err
    assert os.listdir(photos) == ["p.jpg"]
    assert run_cli(inference.main, [*common, "--images", str(photos / "p.jpg"), "--explain", str(photos)]) == 0
    assert "p_explained.jpg" in os.listdir(photos)
    assert run_cli(inference.main, [*common, "--images", str(photos)]) == 0
    rows = json.loads((tmp_path / "o" / "warmup_model_images.json").read_text())["predictions"]
    assert [os.path.basename(row["path"]) for row in rows] == ["p.jpg"]


def test_the_modes_combine_on_one_model_as_help_says(trained, tmp_path, capsys, monkeypatch):
    from pyimagesearch.inference import predict

    base, model = trained
    loads = []
    real = predict.load_predictor
    monkeypatch.setattr(predict, "load_predictor", lambda *a, **k: loads.append(1) or real(*a, **k))
    assert "The modes combine" in inference.build_parser().format_help()
    inference.main(["--model", model, "--images", os.path.join(base, "val", "red"), "--evaluate",
                    os.path.join(base, "val"), "--output", str(tmp_path), "--no-progress"])
    assert loads == [1]
    assert (tmp_path / "warmup_model_images.json").exists() and (tmp_path / "warmup_model_report.json").exists()
    assert not (tmp_path / "warmup_model_predictions.png").exists()  # the random batch only without a mode
