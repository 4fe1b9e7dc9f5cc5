"""OpenCV and imutils at work: annotated photos, video and camera, and an ONNX model run by OpenCV."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

import inference
from conftest import ROOT, error_text, read_frames, write_video
from pyimagesearch import checkpoint, deploy, paths, predict
from pyimagesearch.create_dataloaders import eval_image_folder
from pyimagesearch.errors import run_cli


def _names(path: str) -> set[str]:
    with open(path) as handle:
        return {re.split(r"[<>=\[ ;]", line.strip())[0].lower() for line in handle if line.strip()[:1].isalpha()}


def test_the_design_packages_are_required_and_import():
    names = _names(os.path.join(ROOT, "requirements.txt"))
    assert {"torch", "torchvision", "imutils", "matplotlib", "tqdm", "numpy", "opencv-contrib-python"} <= names
    import imutils

    assert imutils.build_montages and hasattr(cv2, "ximgproc")  # the contrib build, as the design names it


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    base, model = trained
    onnx = str(tmp_path_factory.mktemp("onnx") / "warmup_model.onnx")
    inference.main(["--model", model, "--export", onnx])
    return base, model, onnx


def test_onnx_export_agrees_with_the_checkpoint(exported):
    base, model_path, onnx_path = exported
    meta = json.loads(open(paths.onnx_metadata_path(onnx_path)).read())
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
    real, calls = predict.engine.probabilities, []

    def interrupted_at_the_fourth_frame(*args):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(predict.engine, "probabilities", interrupted_at_the_fourth_frame)
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


def test_the_readme_snippet_classifies_with_only_cv2_and_numpy(exported, tmp_path):
    base, model_path, onnx_path = exported
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    snippet = re.search(r"<!-- opencv-snippet -->\s*```python\n(.*?)```", readme, re.S).group(1)
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
