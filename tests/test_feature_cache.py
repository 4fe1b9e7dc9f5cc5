"""Feature extraction's cache: reused until its key changes, and a damaged file named and recomputed."""

from __future__ import annotations

import os
import shutil

import pytest
import torch

import train_feature_extraction
from conftest import train_args
from pyimagesearch import model as model_module


def _rewritten(path: str, change) -> None:
    """The cache file with its features changed by ``change(payload)`` and a matching checksum, as a
    bug or another program could leave it."""
    from pyimagesearch import feature_cache as features

    payload = torch.load(path, weights_only=True)
    change(payload)
    payload["checksum"] = features._checksum(features._tensors(payload["plain"], payload["views"]))
    torch.save(payload, path)


def _damage_zeroed(path: str) -> None:
    data = bytearray(open(path, "rb").read())
    middle = len(data) // 2
    data[middle:middle + 16384] = bytes(min(16384, len(data) - middle))
    open(path, "wb").write(bytes(data))


@pytest.fixture(scope="module")
def cached_once(tmp_path_factory, small_dataset):
    """One feature-extraction run's output folder, with its feature cache (copied by each test)."""
    root = tmp_path_factory.mktemp("cached")
    train_feature_extraction.main(train_args(root, small_dataset, "warmup", "--no-report", "--epochs", "1"))
    return root / "output"


def test_features_persist_and_are_reused_until_their_key_changes(tmp_path, small_dataset, monkeypatch, capsys):
    body_images = []
    real = model_module.Body.forward

    def counting(self, x):
        body_images.append(len(x))
        return real(self, x)

    monkeypatch.setattr(model_module.Body, "forward", counting)
    run = lambda *extra: train_feature_extraction.main(train_args(tmp_path, small_dataset, "warmup", "--no-report", *extra))
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
    shutil.copytree(small_dataset, copy)
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


@pytest.mark.parametrize("damage,reason", [
    (_damage_zeroed, "checksum does not match"),
    (lambda p: _rewritten(p, lambda d: d["plain"][0].__setitem__((0, 0), float("nan"))), "NaN or infinite"),
    (lambda p: _rewritten(p, lambda d: d["plain"].__setitem__(0, d["plain"][0][:, :100].clone())), "not (9, 2048)"),
    (lambda p: open(p, "wb").write(b"PK\x03\x04 not a zip"), "cannot be read"),
])
def test_a_damaged_or_inconsistent_feature_cache_is_named_and_recomputed(tmp_path, small_dataset, cached_once, monkeypatch,
                                                                        capsys, damage, reason):
    shutil.copytree(cached_once, tmp_path / "output")
    body_images = []
    real = model_module.Body.forward
    monkeypatch.setattr(model_module.Body, "forward", lambda self, x: body_images.append(len(x)) or real(self, x))
    run = lambda: train_feature_extraction.main(train_args(tmp_path, small_dataset, "warmup", "--no-report", "--epochs", "1"))
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
