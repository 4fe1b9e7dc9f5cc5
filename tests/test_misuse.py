"""The newer features under misuse (#21): resume, feature cache, video, ONNX and annotate keep the
user's files, refuse what would hang or mislead, and say what went wrong in one paragraph."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import resource
import shutil
import signal

import numpy as np
import pytest
import torch

import fine_tune
import inference
import train_feature_extraction
from conftest import deadline, error_text, make_image_folder, read_frames, train_args, write_video
from pyimagesearch import checkpoint, paths, predict
from pyimagesearch.errors import run_cli


def _clip(tmp_path, frames: int = 6):
    return write_video(tmp_path / "clip.avi", [np.full((32, 32, 3), 80 + 20 * i, np.uint8) for i in range(frames)])


def _video_run(model, clip, out, *extra) -> list[str]:
    return ["--model", model, "--video", str(clip), "--output", str(out), "--no-progress", *extra]


# --- 1. earlier results are never destroyed ------------------------------------------------------

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
    real, calls = predict.engine.probabilities, []

    def crashing(*args):
        calls.append(1)
        if len(calls) == 3:
            raise MemoryError("killed")
        return real(*args)

    monkeypatch.setattr(predict.engine, "probabilities", crashing)
    with pytest.raises(MemoryError):
        inference.main(_video_run(model, clip, out))
    assert {name: (out / name).read_bytes() for name in os.listdir(out)} == before  # nothing else, nothing changed


def test_sigterm_during_a_video_finishes_its_files_and_exits_143(trained, tmp_path, monkeypatch):
    _, model = trained
    out, clip = tmp_path / "out", _clip(tmp_path, frames=8)
    real, calls = predict.engine.probabilities, []

    def terminated_at_the_fourth_frame(*args):
        calls.append(1)
        if len(calls) == 4:
            signal.raise_signal(signal.SIGTERM)  # run_cli's handler: the same path as `kill PID`
        return real(*args)

    monkeypatch.setattr(predict.engine, "probabilities", terminated_at_the_fourth_frame)
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
    assert "_annotated" not in out.split("[INFO] not classifying")[0] and "--annotate wrote them" in out
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


@pytest.mark.parametrize("model,plot", [("m.png", "m.png"), ("out/m.pth", "out/../out/m.pth")])
def test_a_run_whose_outputs_coincide_is_refused_before_training(tmp_path, splits, capsys, model, plot):
    args = train_args(tmp_path, splits, "warmup")
    args[args.index("--model") + 1] = str(tmp_path / model)
    args[args.index("--plot") + 1] = str(tmp_path / plot)
    assert run_cli(train_feature_extraction.main, args) == 2
    err = error_text(capsys)
    assert "would both be written to" in err or "--plot" in err
    assert not os.path.exists(tmp_path / model)


# --- 2. nothing stale or damaged is used silently --------------------------------------------------

@pytest.fixture(scope="module")
def finetuned_once(tmp_path_factory):
    """One 1-epoch fine-tuning run: (dataset folder, its output folder), copied by each test."""
    import build_dataset

    root = tmp_path_factory.mktemp("finetuned")
    data = make_image_folder(str(root / "photos"))
    base = str(root / "dataset")
    build_dataset.main(["--data", data, "--output", base, "--val-split", "0.34", "--no-progress"])
    fine_tune.main(train_args(root, base, "finetune", "--epochs", "1", "--no-report"))
    return base, root / "output"


def _resumable_copy(finetuned_once, tmp_path):
    base, output = finetuned_once
    shutil.copytree(output, tmp_path / "output")
    return base, tmp_path / "output" / "finetune_model_resume.pth"


def test_resume_with_another_seed_is_refused(tmp_path, finetuned_once, capsys):
    base, _ = _resumable_copy(finetuned_once, tmp_path)
    code = run_cli(fine_tune.main, train_args(tmp_path, base, "finetune", "--epochs", "2", "--resume", "--seed", "7"))
    assert code == 2 and "seed: 42 then, 7 now" in error_text(capsys)


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    onnx = str(tmp_path_factory.mktemp("onnx") / "m.onnx")
    inference.main(["--model", trained[1], "--export", onnx])
    return onnx


@pytest.mark.parametrize("names,message", [(["blue", "green", "red", "violet"], "names 4 classes"),
                                           (["blue", "green"], "names 2 classes")])
def test_an_onnx_model_whose_metadata_names_another_class_count_is_refused(exported, tmp_path, capsys, names, message):
    onnx = tmp_path / "m.onnx"
    shutil.copy(exported, onnx)
    shutil.copy(paths.onnx_metadata_path(exported), paths.onnx_metadata_path(str(onnx)))
    meta_path = paths.onnx_metadata_path(str(onnx))
    meta = json.loads(open(meta_path).read())
    meta["class_names"] = names
    open(meta_path, "w").write(json.dumps(meta))
    code = run_cli(inference.main, ["--model", str(onnx), "--images", str(tmp_path), "--output", str(tmp_path / "o")])
    err = error_text(capsys)
    assert code == 2 and "gives 3 outputs per image" in err and message in err


def test_an_onnx_run_shows_no_opencv_warning(trained, exported, tmp_path, capfd):
    base, _ = trained
    capfd.readouterr()
    inference.main(["--model", exported, "--images", os.path.join(base, "val"), "--output", str(tmp_path / "o")])
    captured = capfd.readouterr()
    assert "WARN" not in captured.err and "[ WARN" not in captured.out


# --- 3. nothing hangs -----------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["video", "model", "resume", "onnx"])
def test_a_fifo_is_refused_wherever_a_file_is_read(trained, tmp_path, splits, capsys, where):
    _, model = trained
    fifo = tmp_path / ("pipe.onnx" if where == "onnx" else "pipe.pth")
    if where == "resume":
        args = train_args(tmp_path, splits, "finetune", "--resume")
        fifo = tmp_path / "output" / "finetune_model_resume.pth"
        os.makedirs(fifo.parent, exist_ok=True)
        os.mkfifo(fifo)
        with deadline(20):
            code = run_cli(fine_tune.main, args)
    else:
        os.mkfifo(fifo)
        args = {"video": ["--model", model, "--video", str(fifo)], "model": ["--model", str(fifo)],
                "onnx": ["--model", str(fifo), "--images", str(tmp_path)]}[where]
        with deadline(20):
            code = run_cli(inference.main, [*args, "--output", str(tmp_path / "o")])
    assert code == 2 and "not a regular file" in error_text(capsys)


# --- 4. no traceback for what a user can fix or meet --------------------------------------------------

@pytest.mark.parametrize("damage,message", [
    (lambda s: s["resume"]["rng"][0].pop("numpy"), "KeyError"),
    (lambda s: s["resume"].__setitem__("history", s["resume"]["history"][:0]), "history does not hold 1"),
    (lambda s: s["resume"]["optimizer"].pop("param_groups"), "damaged or incomplete"),
    (lambda s: s["resume"].__setitem__("epoch", "one"), "its epoch is 'one'"),
    (lambda s: s["resume"].pop("stopping"), "lacks ['stopping']"),
])
def test_a_damaged_resume_state_is_one_paragraph(tmp_path, finetuned_once, capsys, damage, message):
    base, path = _resumable_copy(finetuned_once, tmp_path)
    state = torch.load(path, weights_only=True)
    damage(state)
    torch.save(state, path)
    code = run_cli(fine_tune.main, train_args(tmp_path, base, "finetune", "--epochs", "2", "--resume"))
    err = error_text(capsys)
    assert code == 2 and message in err and "Traceback" not in err and str(path) in err


@contextlib.contextmanager
def file_size_limit(limit: int):
    """RLIMIT_FSIZE for this process: a write past it fails with EFBIG (Python ignores SIGXFSZ)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def test_a_file_size_limit_while_saving_a_checkpoint_keeps_the_earlier_one(tmp_path, trained, capsys):
    _, model_path = trained
    model, meta = checkpoint.load(model_path)
    target = tmp_path / "kept.pth"
    shutil.copy(model_path, target)
    original = target.read_bytes()
    with file_size_limit(4096):
        code = run_cli(lambda _: checkpoint.save(str(target), model, meta))
    err = error_text(capsys)
    assert code == 2 and str(target) in err and "file-size limit" in err and "needs about" in err
    assert target.read_bytes() == original and os.listdir(tmp_path) == ["kept.pth"]  # no temporary file left


def test_a_full_disk_while_saving_is_one_paragraph_with_the_space_needed(tmp_path, trained, capsys, monkeypatch):
    import errno

    _, model_path = trained
    model, meta = checkpoint.load(model_path)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    code = run_cli(lambda _: checkpoint.save(str(tmp_path / "m.pth"), model, meta))
    err = error_text(capsys)
    assert code == 2 and "the disk is full" in err and "MiB" in err and "is free there" in err
    assert os.listdir(tmp_path) == []


def test_the_stand_in_calibrates_when_the_last_batch_holds_one_image(tmp_path, capsys):
    import build_dataset

    data = make_image_folder(str(tmp_path / "photos"), per_class=10)
    base = str(tmp_path / "dataset")
    build_dataset.main(["--data", data, "--output", base, "--val-split", "0.4", "--no-progress"])
    train = sum(len(os.listdir(os.path.join(base, "train", c))) for c in os.listdir(os.path.join(base, "train")))
    assert train == 18
    os.remove(os.path.join(base, "train", "red", sorted(os.listdir(os.path.join(base, "train", "red")))[0]))
    # 17 images: calibration batches of 16 and 1; the one image cannot give BatchNorm a variance
    fine_tune.main(train_args(tmp_path, base, "finetune", "--epochs", "1", "--no-report"))
    assert "calibrated on 16 training images" in capsys.readouterr().out


# --- 6. smaller things --------------------------------------------------------------------------------

def test_schedules_longer_than_the_run_and_changed_images_on_resume_are_warned_about(tmp_path, splits, capsys):
    fine_tune.main(train_args(tmp_path, splits, "finetune", "--epochs", "1", "--warmup-epochs", "1",
                              "--freeze-epochs", "2", "--no-report"))
    out = capsys.readouterr().out
    assert "--warmup-epochs 1 is not shorter than the run" in out and "--freeze-epochs 2 is not shorter" in out
    extra = os.path.join(splits, "train", "red", "new.jpg")
    shutil.copy(os.path.join(splits, "train", "red", sorted(os.listdir(os.path.join(splits, "train", "red")))[0]), extra)
    fine_tune.main(train_args(tmp_path, splits, "finetune", "--epochs", "3", "--warmup-epochs", "1",
                              "--freeze-epochs", "2", "--resume", "--no-report"))
    out = capsys.readouterr().out
    assert "the training images in" in out and "is not shorter than the run" not in out


def test_csv_cells_that_a_spreadsheet_would_run_are_neutralised(tmp_path, capsys):
    import build_dataset

    classes = {"=cmd": (220, 40, 40), "+plus": (40, 200, 60), "accuracy": (30, 60, 220)}
    data = make_image_folder(str(tmp_path / "photos"), per_class=6, classes=classes)
    base = str(tmp_path / "dataset")
    build_dataset.main(["--data", data, "--output", base, "--val-split", "0.34", "--no-progress"])
    train_feature_extraction.main(train_args(tmp_path, base, "warmup", "--epochs", "1"))
    with open(tmp_path / "output" / "warmup_model_report.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["class"] for r in rows if r["row"] == "class"] == ["'+plus", "'=cmd", "accuracy"]  # sorted folders
    assert [r["class"] for r in rows if r["row"] == "summary"] == ["accuracy", "balanced accuracy", "macro F1"]
    images = os.path.join(base, "val", "=cmd")
    inference.main(["--model", str(tmp_path / "output" / "warmup_model.pth"), "--images", images, "--output",
                    str(tmp_path / "o"), "--top-k", "3"])
    with open(tmp_path / "o" / "warmup_model_images.csv") as handle:
        cells = [cell for row in csv.reader(handle) for cell in row]
    assert not any(cell.startswith(("=", "+")) for cell in cells) and "'=cmd" in cells
    assert json.loads((tmp_path / "o" / "warmup_model_images.json").read_text())["predictions"][0]["top"][0]["class"] \
        in classes  # the JSON keeps the names as they are


def test_a_file_that_would_run_code_is_refused_without_torchs_weights_only_advice(tmp_path, capsys):
    class Evil:
        def __reduce__(self):
            return (print, ("this ran",))

    path = tmp_path / "evil.pth"
    torch.save({"model": Evil()}, path)
    code = run_cli(inference.main, ["--model", str(path), "--output", str(tmp_path / "o")])
    captured = capsys.readouterr()
    assert code == 2 and "run Python code" in captured.err and "print" in captured.err
    assert "weights_only" not in captured.err and "this ran" not in captured.out

