"""Nothing a user owns is lost, nothing hangs, and every mistake is caught before the work starts."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import stat
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch
from PIL import Image

import build_dataset
import fine_tune
import inference
import train_feature_extraction
from conftest import deadline, error_text, make_image_folder, train_args
from pyimagesearch import checkpoint, config, dataset, fileio, plots
from pyimagesearch.create_dataloaders import eval_image_folder, get_dataloader, train_transforms
from pyimagesearch.download import DownloadLimits, download, extract
from pyimagesearch.errors import UserError, run_cli
from pyimagesearch.images import check_image, load_rgb
from pyimagesearch.predict import ImageFiles


def dead_pid() -> int:
    """A process id no process can have (above the kernel's pid_max): dead whatever else runs."""
    try:
        with open("/proc/sys/kernel/pid_max") as handle:
            return int(handle.read()) + 1
    except OSError:
        return 2**22 + 1  # Linux's largest pid_max


def _build(data, base, *extra):
    build_dataset.main(["--data", str(data), "--output", str(base), "--no-progress", *extra])


def _digest(root) -> dict[str, bytes]:
    return {os.path.relpath(os.path.join(folder, name), root): open(os.path.join(folder, name), "rb").read()
            for folder, _, names in os.walk(root) for name in names}


# --- 1. nothing the user wrote is deleted or overwritten ------------------------------------------

def test_build_refuses_a_split_it_did_not_write(tmp_path, capsys):
    data = make_image_folder(str(tmp_path / "photos"))
    mine = tmp_path / "dataset"
    for split in ("train", "val"):
        (mine / split / "cats").mkdir(parents=True)
        (mine / split / "cats" / "tom.jpg").write_bytes(b"my own photo")
    before = _digest(mine)
    code = run_cli(build_dataset.main, ["--data", data, "--output", str(mine), "--no-progress"])
    err = error_text(capsys)
    assert code == 2 and "split.json" in err and str(mine) in err and "Traceback" not in err
    assert _digest(mine) == before


def test_training_refuses_to_overwrite_a_file_it_did_not_write(tmp_path, splits, capsys):
    precious = tmp_path / "output" / "warmup_model.pth"
    precious.parent.mkdir()
    precious.write_bytes(b"three weeks of someone else's training")
    code = run_cli(train_feature_extraction.main, train_args(tmp_path, splits, "warmup"))
    assert code == 2 and "not a checkpoint this project wrote" in error_text(capsys)
    assert precious.read_bytes() == b"three weeks of someone else's training"


# --- 2. only regular files are opened as images -----------------------------------------------------

def test_a_fifo_named_like_an_image_is_listed_and_never_opened(tmp_path, trained, capsys):
    base, model = trained
    photos = tmp_path / "photos"
    make_image_folder(str(photos), per_class=3)
    os.mkfifo(photos / "red" / "stuck.jpg")
    out = str(tmp_path / "out")
    with deadline(120):
        _build(photos, tmp_path / "dataset", "--val-split", "0.34")
        assert "stuck.jpg: not a regular file" in capsys.readouterr().out

        shutil.copytree(base, tmp_path / "split")
        for split in ("train", "val"):
            os.mkfifo(tmp_path / "split" / split / "red" / "stuck.jpg")
        inference.main(["--model", model, "--images", str(photos / "red"), "--output", out, "--num-workers", "0",
                        "--no-progress"])
        printed = capsys.readouterr().out
        assert "skipped" in printed and "stuck.jpg" in printed and "img_0.jpg: " in printed

        inference.main(["--model", model, "--evaluate", str(tmp_path / "split" / "val"), "--output", out,
                        "--num-workers", "0", "--no-progress"])
        assert "stuck.jpg" in capsys.readouterr().out

        train_feature_extraction.main(train_args(tmp_path, str(tmp_path / "split"), "warmup", "--epochs", "1",
                                                 "--no-report"))
        assert capsys.readouterr().out.count("stuck.jpg: not a regular file") == 2


# --- 3. every flag and path is checked before the expensive work --------------------------------------

@pytest.mark.parametrize("flag,value", [("--lr", "-0.1"), ("--lr", "nan"), ("--lr", "inf"), ("--lr", "0"),
                                        ("--batch-size", "0"), ("--num-workers", "-1"), ("--epochs", "0"),
                                        ("--grad-accum-steps", "0"), ("--image-size", "abc")])
def test_bad_numbers_stop_at_once_naming_the_flag(tmp_path, capsys, flag, value):
    # the dataset does not exist: had the value got through, the error would be about the folder
    args = ["--train", str(tmp_path / "none"), "--val", str(tmp_path / "none"), "--weights", "none", flag, value]
    with pytest.raises(SystemExit) as stopped:
        fine_tune.main(args)
    err = error_text(capsys)
    assert stopped.value.code == 2 and f"argument {flag}" in err and "none" not in err.split(flag)[-1]


@pytest.mark.parametrize("extra,message", [
    (["--plot", "{out}/p.txt"], ".txt"),
    (["--plot", "{file}/warmup.png"], "is a file"),
    (["--model", "{file}/warmup_model.pth"], "is a file"),
    (["--model", "{out}"], "is a folder"),
    (["--image-size", "8"], "--image-size 8"),
])
def test_unusable_outputs_are_refused_before_any_image_is_read(tmp_path, capsys, monkeypatch, extra, message):
    read = []
    monkeypatch.setattr(train_feature_extraction, "build_model", lambda *a, **k: read.append("model"))
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    (tmp_path / "out").mkdir()
    extra = [e.format(out=tmp_path / "out", file=a_file) for e in extra]
    args = ["--train", str(tmp_path / "missing"), "--val", str(tmp_path / "missing"), "--weights", "none", *extra]
    code = run_cli(train_feature_extraction.main, args)
    err = error_text(capsys)
    assert code == 2 and message in err and "missing" not in err and "Traceback" not in err and not read


@pytest.mark.parametrize("args,message", [
    (["--eval-batch-size", "0"], "--eval-batch-size"),
    (["--batch-size", "0"], "--batch-size"),
    (["--num-workers", "-1"], "--num-workers"),
    (["--top-k", "0"], "--top-k"),
])
def test_inference_numbers_are_checked_by_the_parser(trained, capsys, args, message):
    with pytest.raises(SystemExit) as stopped:
        inference.main(["--model", trained[1], *args])
    assert stopped.value.code == 2 and message in error_text(capsys)


def test_file_paths_where_folders_belong_are_one_clear_message(tmp_path, trained, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    data = make_image_folder(str(tmp_path / "photos"), per_class=2)
    for script, args in ((inference, ["--model", trained[1], "--output", str(a_file)]),
                         (build_dataset, ["--data", data, "--output", str(a_file)]),
                         (build_dataset, ["--data", str(a_file), "--output", str(tmp_path / "ds"), "--download"])):
        code = run_cli(script.main, args)
        err = error_text(capsys)
        assert code == 2 and str(a_file) in err and "Traceback" not in err, (script, err)
    assert a_file.read_text() == "x"


# --- 4. a diverging run stops, and nothing non-finite is saved ---------------------------------------

def test_a_non_finite_loss_stops_training_naming_epoch_and_batch(tmp_path, splits, capsys):
    code = run_cli(train_feature_extraction.main, train_args(tmp_path, splits, "warmup", "--lr", "1e37"))
    err = error_text(capsys)
    assert code == 2 and "epoch 1, batch" in err and "--lr" in err
    out = tmp_path / "output"
    assert not [f for f in os.listdir(out) if f.endswith(".pth")] if out.exists() else True


def test_a_checkpoint_with_non_finite_weights_is_never_written(tmp_path):
    model = torch.nn.Linear(2, 2)
    with torch.no_grad():
        model.weight[0, 0] = float("nan")
    with pytest.raises(UserError, match="NaN or infinite"):
        checkpoint.save(str(tmp_path / "m.pth"), model, {})
    assert os.listdir(tmp_path) == []


# --- 5. archives and downloads have limits --------------------------------------------------------------

def _tgz(path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_an_archive_that_expands_past_the_cap_is_refused_before_writing(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "EXTRACT_MAX_BYTES", 1 << 20)
    archive = tmp_path / "bomb.tgz"
    _tgz(archive, {"flower_photos/daisy/a.jpg": b"\0" * 1000, "flower_photos/roses/huge.jpg": b"\0" * (8 << 20)})
    assert archive.stat().st_size < 64 << 10
    (tmp_path / "sandbox").mkdir()
    with pytest.raises(UserError, match="EXTRACT_MAX_BYTES"):
        extract(str(archive), str(tmp_path / "sandbox" / "flower_photos"))
    assert os.listdir(tmp_path / "sandbox") == []

    monkeypatch.setattr(config, "EXTRACT_MAX_MEMBERS", 5)
    _tgz(archive, {f"flower_photos/daisy/{i}.jpg": b"x" for i in range(10)})
    with pytest.raises(UserError, match="EXTRACT_MAX_MEMBERS"):
        extract(str(archive), str(tmp_path / "sandbox" / "flower_photos"))
    assert os.listdir(tmp_path / "sandbox") == []


class TrickleServer:
    """Announces 100,000 bytes, then sends ``chunk`` bytes every ``pause`` seconds (for 30 s at most)."""

    def __init__(self, chunk: int, pause: float) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Length", "100000")
                self.end_headers()
                with contextlib.suppress(OSError):
                    for _ in range(1500):  # 30 s at most, whatever the client does
                        self.wfile.write(b"x" * chunk)
                        self.wfile.flush()
                        time.sleep(pause)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/flower_photos.tgz"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


# Each case can end one way only, however busy the machine: 1 byte per 20 ms never reaches 100 bytes/s
# (a starved server thread only sends less), and with a minimum speed of 1 byte/s only the deadline
# stops the second; the server trickles for longer than either takes.
@pytest.mark.parametrize("chunk,limits,message", [
    (1, DownloadLimits(min_bytes_per_s=100, window_s=0.5, deadline_s=600), "slowed to"),
    (50, DownloadLimits(min_bytes_per_s=1, window_s=0.5, deadline_s=1.0), "took longer than"),
])
def test_a_trickling_download_is_abandoned_and_leaves_nothing(tmp_path, chunk, limits, message):
    server = TrickleServer(chunk, pause=0.02)
    try:
        started = time.monotonic()
        with pytest.raises(UserError, match=message):
            download(server.url, str(tmp_path / "cache" / "flower_photos.tgz"), progress=False, limits=limits)
        assert time.monotonic() - started < 25  # abandoned, not waited out (the server trickles for 30 s)
    finally:
        server.close()
    assert os.listdir(tmp_path / "cache") == []


# --- 6. checkpoints are validated against their metadata -------------------------------------------------

def _resnet18_with_three_outputs() -> dict:
    from torchvision.models import resnet18

    state = resnet18(num_classes=3).state_dict()
    return state


@pytest.mark.parametrize("tamper,message", [
    ("empty", "not a flowers-transfer checkpoint"),
    (lambda p: p["class_names"].append("extra"), "4 outputs"),
    (lambda p: p.update(head="transformer"), "head 'transformer'"),
    (lambda p: p.update(image_size=-1), "image_size"),
    (lambda p: p.update(image_size=0), "image_size"),
    (lambda p: p.update(image_size="abc"), "image_size"),
    (lambda p: p.update(mean=[0.5]), "mean must be three numbers"),
    (lambda p: p.update(std=[0.2, 0.2, 0.0]), "std must be positive"),
    (lambda p: p.update(model=_resnet18_with_three_outputs()), "does not hold resnet50 weights"),
    (lambda p: p.update(arch="vit_b_16"), "'vit_b_16'"),
])
def test_inconsistent_checkpoints_are_one_paragraph(tmp_path, trained, capsys, tamper, message):
    path = tmp_path / "broken.pth"
    if tamper == "empty":
        path.write_bytes(b"")
    else:
        payload = torch.load(trained[1], weights_only=True)
        tamper(payload)
        torch.save(payload, path)
    code = run_cli(inference.main, ["--model", str(path), "--images", trained[0], "--output", str(tmp_path / "o")])
    err = error_text(capsys)
    assert code == 2 and message in err and str(path) in err and "Traceback" not in err


def test_an_error_with_an_empty_message_is_still_reported(capsys):
    def main(argv):
        raise UserError("")

    assert run_cli(main, []) == 2
    assert "UserError" in capsys.readouterr().err


# --- 7 and 8. names are text, and --images fails when nothing was classified --------------------------

def test_dollar_signs_in_names_are_drawn_as_text(tmp_path, trained):
    _, model = trained
    photo = tmp_path / "price_$5_$.jpg"
    Image.fromarray(np.full((40, 40, 3), 200, np.uint8)).save(photo)
    out = tmp_path / "out"
    inference.main(["--model", model, "--images", str(photo), "--output", str(out), "--num-workers", "0"])
    assert (out / "warmup_model_images.png").stat().st_size > 0
    plots.plot_confusion(np.eye(2, dtype=np.int64), ["a$b$", "c$d"], str(tmp_path / "c.png"), title="$x$ report")
    plots.image_grid(np.zeros((1, 8, 8, 3), np.uint8), ["$\\frac{1}{$"], str(tmp_path / "g.png"), suptitle="$$")


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


# --- 9. EXIF orientation, the same everywhere -------------------------------------------------------------

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


# --- 10. permissions follow the umask ------------------------------------------------------------------

def test_written_files_and_folders_follow_the_umask(tmp_path):
    data = make_image_folder(str(tmp_path / "photos"), per_class=2)
    previous = os.umask(0o027)
    try:
        fileio.write_text(str(tmp_path / "out" / "t.json"), "{}")
        checkpoint.save(str(tmp_path / "out" / "m.pth"), torch.nn.Linear(1, 1), {})
        plots.plot_history([{"epoch": 1, "train_loss": 1, "val_loss": 1, "train_acc": 0.5, "val_acc": 0.5}],
                           str(tmp_path / "out" / "h.png"))
        _build(data, tmp_path / "dataset", "--val-split", "0.5")
    finally:
        os.umask(previous)
    for name in ("t.json", "m.pth", "h.png"):
        assert stat.S_IMODE(os.stat(tmp_path / "out" / name).st_mode) == 0o640, name
    assert stat.S_IMODE(os.stat(tmp_path / "dataset").st_mode) == 0o750
    assert stat.S_IMODE(os.stat(tmp_path / "dataset" / "split.json").st_mode) == 0o640


# --- 11. SIGTERM, leftovers of killed runs, concurrent builds ------------------------------------------------

def test_sigterm_during_a_build_leaves_the_old_dataset_and_no_staging(tmp_path, monkeypatch, capsys):
    data = make_image_folder(str(tmp_path / "photos"), per_class=4)
    base = tmp_path / "dataset"
    _build(data, base, "--val-split", "0.5")
    before = _digest(base)
    copies = []

    def copy_then_get_killed(src, dst):
        copies.append(src)
        shutil.copyfile(src, dst)
        if len(copies) == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(dataset.shutil, "copy2", copy_then_get_killed)
    code = run_cli(build_dataset.main, ["--data", data, "--output", str(base), "--no-progress", "--seed", "7"])
    assert code == 143 and "terminated" in capsys.readouterr().err and len(copies) == 3
    assert _digest(base) == before
    assert sorted(os.listdir(tmp_path)) == ["dataset", "photos"]


def test_leftovers_of_a_killed_run_are_removed_by_the_next(tmp_path):
    data = make_image_folder(str(tmp_path / "photos"), per_class=2)
    pid = dead_pid()
    staging = tmp_path / f".dataset.new-{pid}-0123abcd"
    (staging / "train").mkdir(parents=True)
    out = tmp_path / "out"
    out.mkdir()
    half_written = out / f".m.pth.tmp-{pid}-89abcdef"
    half_written.write_bytes(b"half a checkpoint")
    users = out / ".m.pth.tmp-notes"  # not one of ours: stays
    users.write_text("mine")
    alive = out / f".m.pth.tmp-{os.getpid()}-00000000"  # a live process's temp file: stays
    alive.write_bytes(b"")

    _build(data, tmp_path / "dataset", "--val-split", "0.5")
    checkpoint.save(str(out / "m.pth"), torch.nn.Linear(1, 1), {})
    assert not staging.exists() and not half_written.exists() and users.exists() and alive.exists()


def test_a_dataset_moved_aside_by_a_killed_rebuild_is_restored(tmp_path):
    data = make_image_folder(str(tmp_path / "photos"), per_class=2)
    base = tmp_path / "dataset"
    _build(data, base, "--val-split", "0.5")
    before = _digest(base)
    os.replace(base, tmp_path / f".dataset.old-{dead_pid()}-0123abcd")  # killed between the two renames

    def fail(src, dst):
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        dataset.write_splits(data, str(base), {"red": ["red/img_0.jpg"]}, {"red": ["red/img_1.jpg"]}, info={},
                             progress=False, copy=fail)
    assert _digest(base) == before
    assert sorted(os.listdir(tmp_path)) == ["dataset", "photos"]


def test_a_second_build_of_the_same_output_is_refused_while_one_runs(tmp_path, capsys):
    data = make_image_folder(str(tmp_path / "photos"), per_class=2)
    base = tmp_path / "dataset"
    _build(data, base, "--val-split", "0.5")
    before = _digest(base)
    with fileio.exclusive(str(base), "build_dataset.py"):
        code = run_cli(build_dataset.main, ["--data", data, "--output", str(base), "--no-progress"])
    assert code == 2 and "Another build_dataset.py is writing" in error_text(capsys)
    assert _digest(base) == before
    _build(data, base, "--val-split", "0.5")  # the lock is gone with its holder
    assert not (tmp_path / ".dataset.lock").exists()
