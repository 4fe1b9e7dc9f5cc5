"""Checkpoints: a state dict plus plain metadata, written atomically, read with weights_only=True."""

from __future__ import annotations

import math
import zipfile
from typing import Any

import torch
from torch import nn

from .model import ARCH, HEADS, build_head, build_model
from .utils.cli import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE
from .utils.distributed import unwrap
from .utils.errors import UserError, first_line
from .utils.fileio import atomic_write, payload_bytes, read_torch

META_KEYS = ("arch", "head", "class_names", "image_size", "mean", "std")
REQUIRED_KEYS = ("model", *META_KEYS)


class NonFiniteWeights(UserError):
    """A model whose weights hold NaN or infinity: never written as a checkpoint."""


def save(path: str, model: nn.Module, meta: dict[str, Any], only: list[str] | None = None) -> None:
    """Write the model's state dict (or just the entries named in ``only``) with ``meta``, atomically."""
    state = {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items() if only is None or k in only}
    broken = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if broken:
        raise NonFiniteWeights(f"Not saving '{path}': the weights hold NaN or infinite values ({broken[0]}"
                               f"{f' and {len(broken) - 1} more' if len(broken) > 1 else ''}). Training diverged; "
                               "run again with a lower learning rate (--lr).")
    payload = {"model": state, "arch": ARCH, **meta}
    atomic_write(path, lambda temp: torch.save(payload, temp), needed=payload_bytes(payload))


def amend(path: str, **meta: Any) -> None:
    """Add ``meta`` to the metadata of a checkpoint this project wrote, atomically: the weights stay
    as they are (what the end of training adds once the model is chosen, such as its calibration)."""
    payload = read_torch(path, missing=f"'{path}' disappeared while training ended; train again.",
                         unreadable=f"'{path}' could not be read back ({{reason}}); train again.")
    payload.update(meta)
    atomic_write(path, lambda temp: torch.save(payload, temp), needed=payload_bytes(payload))


def is_checkpoint(path: str) -> bool:
    """Whether ``path`` looks like a checkpoint this project wrote (its metadata names, read from the
    small pickle inside torch's zip file, not the weights), so an output path never replaces a
    user's own file."""
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")]
            data = archive.read(pickles[0]) if pickles else b""
    except (OSError, zipfile.BadZipFile):
        return False
    return all(key.encode() in data for key in REQUIRED_KEYS)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _refuse(path: str, what: str) -> UserError:
    return UserError(f"'{path}' is not a usable flowers-transfer checkpoint: {what}. Retrain with this "
                     "project's scripts (train_feature_extraction.py or fine_tune.py).")


def validate_meta(meta: Any, path: str, keys: tuple[str, ...] = META_KEYS) -> None:
    """The metadata inference relies on: architecture, head, class names, image size, mean/std."""
    if not isinstance(meta, dict) or any(key not in meta for key in keys):
        missing = [k for k in keys if not isinstance(meta, dict) or k not in meta]
        raise _refuse(path, f"it lacks the fields {missing}")
    if meta["arch"] != ARCH:
        raise _refuse(path, f"it holds a {meta['arch']!r} model, and this project builds {ARCH}")
    if meta["head"] not in HEADS:
        raise _refuse(path, f"its head {meta['head']!r} is none of {list(HEADS)}")
    names = meta["class_names"]
    if not isinstance(names, list) or len(names) < 2 or not all(isinstance(n, str) for n in names):
        raise _refuse(path, f"class_names must be a list of at least two names, not {names!r}")
    size = meta["image_size"]
    if not (isinstance(size, int) and not isinstance(size, bool) and MIN_IMAGE_SIZE <= size <= MAX_IMAGE_SIZE):
        raise _refuse(path, f"image_size must be a whole number from {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE}, not {size!r}")
    for key in ("mean", "std"):
        values = meta[key]
        if not (isinstance(values, (list, tuple)) and len(values) == 3 and all(_is_number(v) for v in values)):
            raise _refuse(path, f"{key} must be three numbers (one per RGB channel), not {values!r}")
    if any(v <= 0 for v in meta["std"]):
        raise _refuse(path, f"std must be positive, not {meta['std']!r}")


def validate(payload: Any, path: str) -> None:
    """The metadata must describe the weights: architecture, head, class count, image size, mean/std."""
    validate_meta(payload, path, REQUIRED_KEYS)
    names = payload["class_names"]
    state = payload["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise _refuse(path, "its 'model' entry is not a state dict of tensors")
    out_key = "fc.weight" if payload["head"] == "linear" else f"fc.{len(build_head(1, 1, payload['head'])) - 1}.weight"
    outputs = state.get(out_key)
    if outputs is None or outputs.dim() != 2 or outputs.shape[0] != len(names):
        found = "no such layer" if outputs is None else f"{tuple(outputs.shape)}"
        raise _refuse(path, f"its {payload['head']} head should end in {out_key} with {len(names)} outputs, one per "
                            f"class name, but has {found}")


def load(path: str, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model from the checkpoint alone; returns (model in eval mode, metadata)."""
    payload = read_torch(
        path, missing=f"Model file '{path}' does not exist. Train one first (python train_feature_extraction.py or "
                      "python fine_tune.py) or pass --model PATH.",
        unreadable=f"'{path}' is not a flowers-transfer checkpoint ({{reason}}). Whole pickled models, like the "
                   "tutorial's torch.save(model), are not loaded because unpickling runs code; retrain with this "
                   "project's scripts.")
    validate(payload, path)
    model = build_model(len(payload["class_names"]), head=payload["head"])
    try:
        model.load_state_dict(payload.pop("model"))
    except RuntimeError as error:
        raise UserError(f"'{path}' does not hold {ARCH} weights that fit its metadata ({first_line(error)}). "
                        "Retrain with this project's scripts.") from None
    return model.to(device).eval(), payload
