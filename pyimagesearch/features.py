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
from typing import Any

import torch

from . import engine, fileio
from .model import weights_identity
from .runtime import rank, world_size

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


def cache_for(run, views: int) -> FeatureCache | None:
    """The persistent cache of this run's features, or None when --feature-cache-dir is none."""
    args = run.args
    folder = args.feature_cache_dir
    if not folder or folder.lower() == "none":
        return None
    if folder.lower() == "auto":
        folder = os.path.join(os.path.dirname(args.model), "feature_cache")
    fileio.check_writable_folder(folder, "--feature-cache-dir")
    precision = run.precision
    fields = {
        "format": FORMAT, "torch": str(torch.__version__), "weights": weights_identity(args.weights),
        "train": _files_digest(run.train_ds), "val": _files_digest(run.val_ds), "image_size": args.image_size,
        "views": views, "seed": args.seed, "device": precision.device.type, "amp": str(precision.amp_dtype),
        "channels_last": precision.channels_last, "fold_bn": args.fold_bn, "rank": rank(), "world_size": world_size(),
    }
    return FeatureCache(folder, fields)


def body_features(run, body, views: int) -> tuple[tuple[torch.Tensor, torch.Tensor], list[tuple[torch.Tensor, torch.Tensor]]]:
    """Validation features and ``views`` views of the training features: from the persistent
    cache when its key matches, otherwise computed by ``body`` (and stored for the next run)."""
    cache = cache_for(run, views)
    stored = cache.load() if cache else None
    if stored is not None:
        run.log(f"[INFO] reusing the body's features from {cache.path} (same weights, images, size and views): "
                "the body does not run")
        return tuple(stored["val"]), [tuple(v) for v in stored["views"]]
    progress = run.args.progress
    val = engine.extract_features(body, run.loader(run.val_ds, shuffle=False, once=True), run.precision,
                                  progress=progress, desc="features (val)")
    # even: under torchrun every process must cache as many features, to take as many steps
    train_images = run.loader(run.train_ds, shuffle=False, even=True, once=True)
    cached = [engine.extract_features(body, train_images, run.precision, progress=progress,
                                      desc=f"features (view {view + 1}/{views})") for view in range(views)]
    if cache:
        cache.save(val, cached)
        run.log(f"[INFO] stored the body's features in {cache.path}; a run with the same weights, images, size and "
                "views reuses them")
    return val, cached
