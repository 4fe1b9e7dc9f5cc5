"""Frozen-body features, kept on disk between feature-extraction runs.

The body's output depends only on the backbone weights, the images, how they are decoded and
transformed, and the precision the body runs in. Those make the cache key; a run with another
learning rate, more epochs or another batch size finds the same key and skips the body
entirely. Anything in the key that changes (an image added or touched, another image size or
number of views, other weights) gives a new key, so stale features are never used.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import DataLoader

from . import engine, fileio
from .distributed import rank, world_size
from .runtime import Compute
from .weights import weights_identity

FORMAT = 1  # bump when what is stored changes


def _files_digest(ds) -> str:
    """The image list with each file's size and modification time."""
    digest = hashlib.sha256()
    for path, label in ds.samples:
        info = os.stat(path)
        digest.update(f"{os.path.relpath(path, ds.root)}\0{label}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
    return digest.hexdigest()


class FeatureCache:
    """One file per key in ``folder``: validation features and every cached training view."""

    def __init__(self, folder: str, fields: dict[str, Any]) -> None:
        self.fields = fields
        key = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:24]
        self.path = os.path.join(folder, f"features-{key}.pt")

    def load(self) -> dict[str, Any] | None:
        if not os.path.isfile(self.path):
            return None
        try:
            stored = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception:
            return None  # a damaged file is recomputed and replaced
        return stored if isinstance(stored, dict) and stored.get("fields") == self.fields else None

    def save(self, val: tuple[torch.Tensor, torch.Tensor], views: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        payload = {"fields": self.fields, "val": list(val), "views": [list(v) for v in views]}
        fileio.atomic_write(self.path, lambda temp: torch.save(payload, temp))


def cache_for(folder: str | None, *, weights: str, train_ds, val_ds, image_size: int, views: int, seed: int,
              compute: Compute, fold_bn: bool) -> FeatureCache | None:
    """The persistent cache of a run's features in ``folder``, or None when there is no folder."""
    if folder is None:
        return None
    fileio.check_writable_folder(folder, "--feature-cache-dir")
    fields = {
        "format": FORMAT, "torch": str(torch.__version__), "weights": weights_identity(weights),
        "train": _files_digest(train_ds), "val": _files_digest(val_ds), "image_size": image_size,
        "views": views, "seed": seed, "device": compute.device.type, "amp": str(compute.amp_dtype),
        "channels_last": compute.channels_last, "fold_bn": fold_bn, "rank": rank(), "world_size": world_size(),
    }
    return FeatureCache(folder, fields)


Features = tuple[torch.Tensor, torch.Tensor]


def body_features(body: torch.nn.Module, train_images: DataLoader, val_images: DataLoader, views: int, compute: Compute,
                  cache: FeatureCache | None, *, progress: bool = True,
                  log: Callable[[str], None] = print) -> tuple[Features, list[Features]]:
    """Validation features and ``views`` passes of ``body`` over ``train_images`` (augmented when
    its transform is): from ``cache`` when its key matches, otherwise computed and stored there."""
    stored = cache.load() if cache else None
    if stored is not None:
        log(f"[INFO] reusing the body's features from {cache.path} (same weights, images, size and views): "
            "the body does not run")
        return tuple(stored["val"]), [tuple(v) for v in stored["views"]]
    val = engine.extract_features(body, val_images, compute, progress=progress, desc="features (val)")
    cached = [engine.extract_features(body, train_images, compute, progress=progress,
                                      desc=f"features (view {view + 1}/{views})") for view in range(views)]
    if cache:
        cache.save(val, cached)
        log(f"[INFO] stored the body's features in {cache.path}; a run with the same weights, images, size and "
            "views reuses them")
    return val, cached
