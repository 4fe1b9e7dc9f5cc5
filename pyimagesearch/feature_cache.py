"""Frozen-body features, kept on disk between feature-extraction runs.

The body's output depends only on the backbone weights, the images, how they are decoded and
transformed, and the precision the body runs in. Those make the cache key; a run with another
learning rate, more epochs or another batch size finds the same key and skips the body
entirely. Anything in the key that changes (an image added, removed, renamed or relabelled, any
byte of an image's content, another image size or number of views, other weights) gives a new
key, so stale features are never used. The images are keyed by their content (SHA-256), not
their size and modification time, which an edit can keep.

A stored file is used only if its checksum matches and its features have the shapes the run
expects and are finite; otherwise it is named, recomputed and replaced.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import DataLoader

from .utils import fileio
from .utils.digest import folder_digest
from .utils.distributed import rank, world_size
from .utils.runtime import Compute
from .utils.weights import weights_identity

FORMAT = 3  # bump when what is stored changes (2: images keyed by content, a checksum; 3: "plain", not "val")


def _checksum(tensors: list[torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for tensor in tensors:
        digest.update(str(tuple(tensor.shape)).encode() + str(tensor.dtype).encode())
        digest.update(tensor.contiguous().view(torch.uint8).numpy())  # hashed in place, not copied
    return digest.hexdigest()


def _tensors(plain: list[torch.Tensor], views: list[list[torch.Tensor]]) -> list[torch.Tensor]:
    return [*plain, *(t for view in views for t in view)]


class FeatureCache:
    """One file per key in ``folder``: the plain features, of images read once as they are (a
    training run's validation set, or the photos an audit reads; ``plain_name`` says which in
    messages), and every cached training view.

    ``shapes`` is what the run expects: plain and training image counts, feature width and class
    count; a stored file that does not match is not used."""

    def __init__(self, folder: str, fields: dict[str, Any], shapes: dict[str, int],
                 plain_name: str = "validation") -> None:
        self.fields, self.shapes, self.plain_name = fields, shapes, plain_name
        key = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:24]
        self.path = os.path.join(folder, f"features-{key}.pt")

    def load(self) -> tuple[dict[str, Any] | None, str | None]:
        """(the stored features, None), or (None, why the file on disk is not used; None if absent)."""
        if not os.path.lexists(self.path):
            return None, None
        if not os.path.isfile(self.path):
            return None, "it is not a regular file"
        try:
            stored = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as error:
            return None, f"it cannot be read ({type(error).__name__})"
        if not isinstance(stored, dict) or stored.get("fields") != self.fields:
            return None, "it was written for other images or settings"
        try:
            plain, views = list(stored["plain"]), [list(v) for v in stored["views"]]
            if stored.get("checksum") != _checksum(_tensors(plain, views)):
                return None, "its checksum does not match: it was damaged on disk"
        except (KeyError, TypeError, AttributeError, RuntimeError, ValueError):
            return None, "it lacks some of what a feature cache holds"
        problem = self._problem(plain, views)
        return (None, problem) if problem else ({"plain": plain, "views": views}, None)

    def _problem(self, plain: list[torch.Tensor], views: list[list[torch.Tensor]]) -> str | None:
        expected = [(self.plain_name, plain, self.shapes["plain"])] + [(f"view {i + 1}", v, self.shapes["train"])
                                                                  for i, v in enumerate(views)]
        if len(views) != self.fields["views"]:
            return f"it holds {len(views)} training view(s), not {self.fields['views']}"
        for what, (features, labels), count in expected:
            if features.shape != (count, self.shapes["width"]) or labels.shape != (count,):
                return (f"its {what} features are {tuple(features.shape)}, not ({count}, {self.shapes['width']}) "
                        "for this run's images and network")
            if not torch.isfinite(features).all():
                return f"its {what} features hold NaN or infinite values"
            if labels.dtype != torch.long or (count and not 0 <= int(labels.min()) <= int(labels.max()) <
                                              self.shapes["classes"]):
                return f"its {what} labels are not class numbers of this dataset"
        return None

    def reuse(self, log: Callable[[str], None] = print) -> dict[str, Any] | None:
        """The stored features when the file on disk holds this key's, saying so; otherwise None,
        with a warning naming why a file that is there cannot be used."""
        stored, problem = self.load()
        if problem:
            log(f"[WARN] not using the cached features in {self.path}: {problem}; computing them again")
        if stored is not None:
            log(f"[INFO] reusing the body's features from {self.path} (same weights, images and settings): "
                "the body does not run")
        return stored

    def save(self, plain: tuple[torch.Tensor, torch.Tensor], views: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        plain, views = list(plain), [list(v) for v in views]
        payload = {"fields": self.fields, "plain": plain, "views": views, "checksum": _checksum(_tensors(plain, views))}
        fileio.atomic_write(self.path, lambda temp: torch.save(payload, temp), needed=fileio.payload_bytes(payload))


def cache_for(folder: str | None, *, weights: str, train_ds, val_ds, image_size: int, views: int, seed: int,
              compute: Compute, fold_bn: bool, width: int) -> FeatureCache | None:
    """The persistent cache of a run's features in ``folder``, or None when there is no folder."""
    if folder is None:
        return None
    fileio.check_writable_folder(folder, "--feature-cache-dir")
    fields = {
        "format": FORMAT, "torch": str(torch.__version__), "weights": weights_identity(weights),
        "train": folder_digest(train_ds.samples, train_ds.root, content=True),
        "val": folder_digest(val_ds.samples, val_ds.root, content=True), "image_size": image_size,
        "views": views, "seed": seed, "device": compute.device.type, "amp": str(compute.amp_dtype),
        "channels_last": compute.channels_last, "fold_bn": fold_bn, "rank": rank(), "world_size": world_size(),
    }
    shapes = {"train": len(train_ds), "plain": len(val_ds), "width": width, "classes": len(train_ds.classes)}
    return FeatureCache(folder, fields, shapes)


Features = tuple[torch.Tensor, torch.Tensor]


def body_features(extract: Callable[[DataLoader, str], Features], train_images: DataLoader, val_images: DataLoader,
                  views: int, cache: FeatureCache | None, *,
                  log: Callable[[str], None] = print) -> tuple[Features, list[Features]]:
    """Validation features and ``views`` passes over ``train_images`` (augmented when its
    transform is), each made by ``extract(loader, progress-bar label)``: from ``cache`` when its
    key matches, otherwise computed and stored there."""
    stored = cache.reuse(log) if cache else None
    if stored is not None:
        return tuple(stored["plain"]), [tuple(v) for v in stored["views"]]
    val = extract(val_images, "features (val)")
    cached = [extract(train_images, f"features (view {view + 1}/{views})") for view in range(views)]
    if cache:
        cache.save(val, cached)
        log(f"[INFO] stored the body's features in {cache.path}; a run with the same weights, images, size and "
            "views reuses them")
    return val, cached


def cache_folder(setting: str, model_path: str) -> str | None:
    """--feature-cache-dir: auto = feature_cache/ beside --model, none = no persistent cache."""
    if not setting or setting.lower() == "none":
        return None
    if setting.lower() == "auto":
        return os.path.join(os.path.dirname(model_path), "feature_cache")
    return setting
