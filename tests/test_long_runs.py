"""Long runs: exact resume, a feature cache that persists, early stopping, schedules, freeze epochs."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil

import pytest
import torch
from PIL import Image

import build_dataset
import fine_tune
import train_feature_extraction
from conftest import error_text, make_image_folder, train_args
from pyimagesearch import engine, plots
from pyimagesearch import model as model_module
from pyimagesearch.errors import run_cli
from pyimagesearch.schedule import EarlyStopping, LearningRate

METRICS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "train_count", "val_count", "lr")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("long")
    data = make_image_folder(str(root / "photos"), per_class=10)
    base = str(root / "dataset")
    build_dataset.main(["--data", data, "--output", base, "--val-split", "0.3", "--no-progress"])
    return base


def _args(tmp_path, base, out: str, *extra: str) -> list[str]:
    args = train_args(tmp_path, base, "finetune", "--batch-size", "4", *extra)
    args[args.index("--plot") + 1] = os.path.join(out, "finetune.png")
    args[args.index("--model") + 1] = os.path.join(out, "finetune_model.pth")
    return args


def _outcome(out: str):
    state = torch.load(os.path.join(out, "finetune_model.pth"), weights_only=True)["model"]
    history = json.loads(open(os.path.join(out, "finetune_history.json")).read())
    return state, [{k: r[k] for k in METRICS} for r in history], history


def test_a_run_stopped_by_sigint_resumes_and_extends_to_the_same_weights(sigint_runs):
    """Fresh processes, as a user's runs are (floating-point kernels in a process that has run
    other tests need not repeat bit for bit): a 4-epoch reference and, side by side, a 3-epoch
    run that sends itself a real SIGINT as epoch 3 starts (after epoch 2 was logged and saved),
    so no timing decides where it stops; then the interrupted run resumed and extended to 4
    (tests/background.py)."""
    whole, cut = str(sigint_runs / "whole"), str(sigint_runs / "cut")

    def outcome(log: str) -> tuple[int, str]:
        return int((sigint_runs / f"{log}.code").read_text()), (sigint_runs / log).read_text()

    code, out = outcome("whole.log")
    assert code == 0, out[-2000:]
    code, out = outcome("cut.log")
    assert code == 130, out[-2000:]
    assert "[INFO] EPOCH: 2/3" in out and "EPOCH: 3/3" not in out and "--resume" in out
    assert "stopped after epoch 2;" in out  # what its resumable state held then (the resumed run replaced it)
    # resumed, and extended past the 3 epochs it was started with
    code, out = outcome("resumed.log")
    assert code == 0, out[-2000:]
    assert "resuming after epoch 2 of 4" in out

    reference_state, reference_history, _ = _outcome(whole)
    state, history, raw = _outcome(cut)
    assert history == reference_history
    assert all(torch.equal(state[k], reference_state[k]) for k in reference_state)  # bitwise
    assert [r.get("resumed", False) for r in raw] == [False, False, True, False]


@pytest.mark.parametrize("mode", [["--cache-views", "2"], ["--no-feature-cache"]])
def test_feature_extraction_resumes_exactly_with_its_features_from_the_cache(tmp_path, dataset, mode):
    def run(name, *extra):
        args = train_args(tmp_path, dataset, "warmup", "--no-report", *mode, *extra)
        args[args.index("--model") + 1] = str(tmp_path / name / "warmup_model.pth")
        args[args.index("--plot") + 1] = str(tmp_path / name / "warmup.png")
        train_feature_extraction.main(args)
        return torch.load(tmp_path / name / "warmup_model.pth", weights_only=True)["model"]

    whole = run("whole", "--epochs", "3")
    run("split", "--epochs", "1")
    split = run("split", "--epochs", "3", "--resume")  # its features come from the persistent cache
    assert all(torch.equal(whole[k], split[k]) for k in whole)


def test_resuming_with_settings_that_cannot_continue_names_the_difference(tmp_path, dataset, capsys):
    fine_tune.main(train_args(tmp_path, dataset, "finetune", "--epochs", "1"))
    code = run_cli(fine_tune.main, train_args(tmp_path, dataset, "finetune", "--epochs", "2", "--resume",
                                               "--image-size", "48"))
    err = error_text(capsys)
    assert code == 2 and "image_size: 32 then, 48 now" in err
    code = run_cli(fine_tune.main, train_args(tmp_path, dataset, "finetune", "--epochs", "1", "--resume"))
    assert code == 2 and "already trained 1 epoch(s)" in error_text(capsys)
    code = run_cli(fine_tune.main, train_args(tmp_path / "elsewhere", dataset, "finetune", "--resume"))
    assert code == 2 and "no resumable state" in error_text(capsys)


def test_features_persist_and_are_reused_until_their_key_changes(tmp_path, dataset, monkeypatch, capsys):
    body_images = []
    real = model_module.Body.forward

    def counting(self, x):
        body_images.append(len(x))
        return real(self, x)

    monkeypatch.setattr(model_module.Body, "forward", counting)
    run = lambda *extra: train_feature_extraction.main(train_args(tmp_path, dataset, "warmup", "--no-report", *extra))
    run("--epochs", "1")
    first = sum(body_images)
    assert first == 30 and "stored the body's features" in capsys.readouterr().out  # 21 train + 9 val images
    cache = os.listdir(tmp_path / "output" / "feature_cache")
    assert len(cache) == 1

    body_images.clear()
    run("--epochs", "3", "--lr", "0.01", "--batch-size", "8")  # only the head's settings differ
    assert body_images == [] and "the body does not run" in capsys.readouterr().out

    for change in (["--image-size", "48"], ["--cache-views", "2"]):
        body_images.clear()
        run("--epochs", "1", *change)
        assert sum(body_images) > 0, change

    # the key is the images' content: a copy elsewhere, or a touched file, finds the same features;
    # pixels changed with the size and modification time kept do not
    copy = str(tmp_path / "copy")
    shutil.copytree(dataset, copy)
    edited = os.path.join(copy, "train", "red", sorted(os.listdir(os.path.join(copy, "train", "red")))[0])
    os.utime(edited, (1, 1))
    body_images.clear()
    train_feature_extraction.main(train_args(tmp_path, copy, "warmup", "--no-report", "--epochs", "1"))
    assert body_images == []
    info, data = os.stat(edited), bytearray(open(edited, "rb").read())
    data[len(data) // 2] ^= 0xFF  # in the middle of the JPEG's entropy-coded pixels
    open(edited, "wb").write(bytes(data))
    os.utime(edited, ns=(info.st_atime_ns, info.st_mtime_ns))
    assert (os.stat(edited).st_size, os.stat(edited).st_mtime_ns) == (info.st_size, info.st_mtime_ns)
    train_feature_extraction.main(train_args(tmp_path, copy, "warmup", "--no-report", "--epochs", "1"))
    assert sum(body_images) == 30


def _damage_zeroed(path: str) -> None:
    data = bytearray(open(path, "rb").read())
    middle = len(data) // 2
    data[middle:middle + 16384] = bytes(min(16384, len(data) - middle))
    open(path, "wb").write(bytes(data))


def _rewritten(path: str, change) -> None:
    """The cache file with its features changed by ``change(payload)`` and a matching checksum, as a
    bug or another program could leave it."""
    from pyimagesearch import features

    payload = torch.load(path, weights_only=True)
    change(payload)
    payload["checksum"] = features._checksum(features._tensors(payload["val"], payload["views"]))
    torch.save(payload, path)


@pytest.fixture(scope="module")
def cached_once(tmp_path_factory, dataset):
    """One feature-extraction run's output folder, with its feature cache (copied by each test)."""
    root = tmp_path_factory.mktemp("cached")
    train_feature_extraction.main(train_args(root, dataset, "warmup", "--no-report", "--epochs", "1"))
    return root / "output"


@pytest.mark.parametrize("damage,reason", [
    (_damage_zeroed, "checksum does not match"),
    (lambda p: _rewritten(p, lambda d: d["val"][0].__setitem__((0, 0), float("nan"))), "NaN or infinite"),
    (lambda p: _rewritten(p, lambda d: d["val"].__setitem__(0, d["val"][0][:, :100].clone())), "not (9, 2048)"),
    (lambda p: open(p, "wb").write(b"PK\x03\x04 not a zip"), "cannot be read"),
])
def test_a_damaged_or_inconsistent_feature_cache_is_named_and_recomputed(tmp_path, dataset, cached_once, monkeypatch,
                                                                        capsys, damage, reason):
    shutil.copytree(cached_once, tmp_path / "output")
    body_images = []
    real = model_module.Body.forward
    monkeypatch.setattr(model_module.Body, "forward", lambda self, x: body_images.append(len(x)) or real(self, x))
    run = lambda: train_feature_extraction.main(train_args(tmp_path, dataset, "warmup", "--no-report", "--epochs", "1"))
    (cache,) = (tmp_path / "output" / "feature_cache").iterdir()
    damage(str(cache))
    capsys.readouterr()
    run()
    out = capsys.readouterr().out
    assert sum(body_images) == 30 and "[WARN] not using the cached features" in out and reason in out, out
    assert str(cache) in out
    if reason == "checksum does not match":
        body_images.clear()
        run()  # the damaged file was replaced by a good one
        assert body_images == []


def test_patience_stops_when_validation_loss_stalls(tmp_path, splits, monkeypatch):
    losses = iter([1.0, 0.8, 0.9, 0.85, 0.7, 0.6])
    real = engine.evaluate

    def stalling(*args, **kwargs):
        return {**real(*args, **kwargs), "loss": next(losses)}

    monkeypatch.setattr(train_feature_extraction, "evaluate", stalling)  # the script's validation pass
    train_feature_extraction.main(train_args(tmp_path, splits, "warmup", "--epochs", "6", "--patience", "2",
                                             "--no-report"))
    history = json.loads((tmp_path / "output" / "warmup_history.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]  # epochs 3 and 4 did not beat epoch 2's 0.8
    assert history[-1]["stopped_early"] is True
    with open(tmp_path / "output" / "warmup_history.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["stopped_early"] for r in rows] == ["", "", "", "True"] and float(rows[0]["lr"]) == 1e-3


def test_the_learning_rate_follows_the_schedule_and_is_recorded(tmp_path, splits):
    train_feature_extraction.main(train_args(tmp_path, splits, "warmup", "--epochs", "4", "--lr", "0.01",
                                             "--lr-scheduler", "cosine", "--warmup-epochs", "1", "--no-report"))
    history = json.loads((tmp_path / "output" / "warmup_history.json").read_text())
    expected = [0.01, 0.01, 0.01 * 0.5 * (1 + math.cos(math.pi / 3)), 0.01 * 0.5 * (1 + math.cos(2 * math.pi / 3))]
    assert [r["lr"] for r in history] == pytest.approx(expected)


def test_schedules_and_early_stopping_by_the_numbers():
    assert [LearningRate("none", 1.0, 4, warmup=2).at(e) for e in range(4)] == [0.5, 1.0, 1.0, 1.0]
    assert [LearningRate("step", 1.0, 6).at(e) for e in range(6)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    cosine = LearningRate("cosine", 1.0, 5)
    assert cosine.at(0) == 1.0 and cosine.at(4) == pytest.approx(0.5 * (1 + math.cos(math.pi * 4 / 5)))
    plateau = LearningRate("plateau", 1.0, 10, plateau_patience=2)
    for loss in (1.0, 1.1, 1.2):  # two epochs without improvement: a tenth
        plateau.observe(loss)
    assert plateau.at(3) == pytest.approx(0.1)
    restored = LearningRate("plateau", 1.0, 10)
    restored.load_state_dict(plateau.state_dict())
    assert restored.at(5) == pytest.approx(0.1)
    stopping = EarlyStopping(patience=2)
    assert [stopping.should_stop(v) for v in (1.0, 0.9, 0.95, 0.92)] == [False, False, False, True]
    assert not any(EarlyStopping(0).should_stop(v) for v in (1, 2, 3, 4))


def test_freeze_epochs_train_the_head_first_then_the_body(tmp_path, splits, resnet_weights_file):
    initial = torch.load(resnet_weights_file, weights_only=True)
    body_keys = [k for k in initial if k.startswith("layer") and ".conv" in k and k.endswith("weight")]
    for epochs in ("1", "2"):
        out = tmp_path / f"e{epochs}"
        args = train_args(tmp_path, splits, "finetune", "--epochs", epochs, "--freeze-epochs", "1", "--weights",
                          resnet_weights_file, "--no-report")
        args[args.index("--model") + 1] = str(out / "finetune_model.pth")
        args[args.index("--plot") + 1] = str(out / "finetune.png")
        fine_tune.main(args)
        state = torch.load(out / "finetune_model.pth", weights_only=True)["model"]
        history = json.loads((out / "finetune_history.json").read_text())
        body_changed = any(not torch.equal(state[k], initial[k]) for k in body_keys)
        assert body_changed == (epochs == "2")
        bn = [k for k in initial if ".bn" in k and k.endswith(("running_mean", "weight"))]
        assert all(torch.equal(state[k], initial[k]) for k in bn)  # BatchNorm frozen throughout
    network = fine_tune.build_model(3, head="mlp")
    head = sum(p.numel() for p in network.fc.parameters())
    all_but_batchnorm = sum(p.numel() for m in network.modules() if not isinstance(m, torch.nn.BatchNorm2d)
                            for p in m.parameters(recurse=False))
    assert history[0]["trainable_params"] == head and history[1]["trainable_params"] == all_but_batchnorm


def test_the_plot_marks_a_resume_and_an_early_stop(tmp_path):
    records = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1 / e, "train_acc": 0.5, "val_acc": 0.5} for e in (1, 2, 3)]
    records[1]["resumed"], records[2]["stopped_early"] = True, True
    plots.plot_history(records, str(tmp_path / "p.png"))
    plain = [dict(r) for r in records]
    for r in plain:
        r.pop("resumed", None), r.pop("stopped_early", None)
    plots.plot_history(plain, str(tmp_path / "q.png"))
    with Image.open(tmp_path / "p.png") as marked, Image.open(tmp_path / "q.png") as unmarked:
        assert marked.size == unmarked.size and marked.tobytes() != unmarked.tobytes()
