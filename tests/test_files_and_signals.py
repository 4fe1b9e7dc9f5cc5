"""Files and signals: FIFOs never opened, full disks and size limits, the umask, leftovers of killed
runs, SIGTERM.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import stat
import subprocess
import sys

import pytest
import torch

import build_dataset
import fine_tune
import inference
import train_feature_extraction
from conftest import (
    ROOT,
    build,
    deadline,
    error_text,
    file_contents,
    make_image_folder,
    train_args,
)
from pyimagesearch import checkpoint, plots
from pyimagesearch.data import dataset
from pyimagesearch.utils import fileio
from pyimagesearch.utils.errors import UserError, run_cli


@contextlib.contextmanager
def file_size_limit(limit: int):
    """RLIMIT_FSIZE for this process: a write past it fails with EFBIG (Python ignores SIGXFSZ)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def dead_pid() -> int:
    """A process id no process can have (above the kernel's pid_max): dead whatever else runs."""
    try:
        with open("/proc/sys/kernel/pid_max") as handle:
            return int(handle.read()) + 1
    except OSError:
        return 2**22 + 1  # Linux's largest pid_max


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


def test_a_fifo_named_like_an_image_is_listed_and_never_opened(tmp_path, trained, capsys):
    base, model = trained
    photos = tmp_path / "photos"
    make_image_folder(str(photos), per_class=3)
    os.mkfifo(photos / "red" / "stuck.jpg")
    out = str(tmp_path / "out")
    with deadline(120):
        build(photos, tmp_path / "dataset", "--val-split", "0.34")
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


def test_an_error_with_an_empty_message_is_still_reported(capsys):
    def main(argv):
        raise UserError("")

    assert run_cli(main, []) == 2
    assert "UserError" in capsys.readouterr().err


def test_written_files_and_folders_follow_the_umask(tmp_path):
    data = make_image_folder(str(tmp_path / "photos"), per_class=2)
    previous = os.umask(0o027)
    try:
        fileio.write_text(str(tmp_path / "out" / "t.json"), "{}")
        checkpoint.save(str(tmp_path / "out" / "m.pth"), torch.nn.Linear(1, 1), {})
        plots.plot_history([{"epoch": 1, "train_loss": 1, "val_loss": 1, "train_acc": 0.5, "val_acc": 0.5}],
                           str(tmp_path / "out" / "h.png"))
        build(data, tmp_path / "dataset", "--val-split", "0.5")
    finally:
        os.umask(previous)
    for name in ("t.json", "m.pth", "h.png"):
        assert stat.S_IMODE(os.stat(tmp_path / "out" / name).st_mode) == 0o640, name
    assert stat.S_IMODE(os.stat(tmp_path / "dataset").st_mode) == 0o750
    assert stat.S_IMODE(os.stat(tmp_path / "dataset" / "split.json").st_mode) == 0o640


def test_sigterm_during_a_build_leaves_the_old_dataset_and_no_staging(tmp_path, monkeypatch, capsys):
    data = make_image_folder(str(tmp_path / "photos"), per_class=4)
    base = tmp_path / "dataset"
    build(data, base, "--val-split", "0.5")
    before = file_contents(base)
    copies = []

    def copy_then_get_killed(src, dst):
        copies.append(src)
        shutil.copyfile(src, dst)
        if len(copies) == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(dataset.shutil, "copy2", copy_then_get_killed)
    code = run_cli(build_dataset.main, ["--data", data, "--output", str(base), "--no-progress", "--seed", "7"])
    assert code == 143 and "terminated" in capsys.readouterr().err and len(copies) == 3
    assert file_contents(base) == before
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

    build(data, tmp_path / "dataset", "--val-split", "0.5")
    checkpoint.save(str(out / "m.pth"), torch.nn.Linear(1, 1), {})
    assert not staging.exists() and not half_written.exists() and users.exists() and alive.exists()


def test_a_dataset_moved_aside_by_a_killed_rebuild_is_restored(tmp_path):
    data = make_image_folder(str(tmp_path / "photos"), per_class=2)
    base = tmp_path / "dataset"
    build(data, base, "--val-split", "0.5")
    before = file_contents(base)
    os.replace(base, tmp_path / f".dataset.old-{dead_pid()}-0123abcd")  # killed between the two renames

    def fail(src, dst):
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        dataset.write_splits(data, str(base), {"red": ["red/img_0.jpg"]}, {"red": ["red/img_1.jpg"]}, info={},
                             progress=False, copy=fail)
    assert file_contents(base) == before
    assert sorted(os.listdir(tmp_path)) == ["dataset", "photos"]


def test_a_second_build_of_the_same_output_is_refused_while_one_runs(tmp_path, capsys):
    data = make_image_folder(str(tmp_path / "photos"), per_class=2)
    base = tmp_path / "dataset"
    build(data, base, "--val-split", "0.5")
    before = file_contents(base)
    with fileio.exclusive(str(base), "build_dataset.py"):
        code = run_cli(build_dataset.main, ["--data", data, "--output", str(base), "--no-progress"])
    assert code == 2 and "Another build_dataset.py is writing" in error_text(capsys)
    assert file_contents(base) == before
    build(data, base, "--val-split", "0.5")  # the lock is gone with its holder
    assert not (tmp_path / ".dataset.lock").exists()


def test_a_closed_terminal_stops_a_run_as_sigterm_does_and_nohup_keeps_it_going(capsys):
    """SIGHUP unwinds like SIGTERM (staging removed, the resumable state of the last epoch kept),
    exit 129; a process started under nohup inherits SIGHUP ignored, and keeps it ignored."""
    reached = []

    def main(argv):
        signal.raise_signal(signal.SIGHUP)
        reached.append("after the signal")

    assert run_cli(main, []) == 129 and reached == []
    assert "terminated (SIGHUP)" in capsys.readouterr().err
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        assert run_cli(main, []) == 0 and reached == ["after the signal"]
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_ctrl_c_while_a_script_loads_exits_130_in_one_line():
    """A terminal's Ctrl-C during the second or more that torch takes to import."""
    command = ("import pyimagesearch.utils.ctrl_c_at_start, os, signal; os.kill(os.getpid(), signal.SIGINT); "
               "import torch, time; time.sleep(30)")
    done = subprocess.run([sys.executable, "-c", command], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as from a terminal
    assert done.returncode == 130 and done.stderr == "[ERROR] interrupted\n"


def test_once_the_script_runs_ctrl_c_unwinds_as_usual():
    from pyimagesearch.utils import ctrl_c_at_start

    seen = []
    previous = signal.signal(signal.SIGINT, ctrl_c_at_start._exit_quietly)
    try:
        assert run_cli(lambda argv: seen.append(signal.getsignal(signal.SIGINT)), []) == 0
    finally:
        signal.signal(signal.SIGINT, previous)
    assert seen == [signal.default_int_handler]
