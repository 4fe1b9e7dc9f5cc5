"""Checkpoints: a state dict plus plain metadata, written atomically, read with weights_only=True."""

from __future__ import annotations

import os
import tempfile
from typing import Any

import torch
from torch import nn

from .errors import UserError
from .model import ARCH, build_model
from .runtime import unwrap

REQUIRED_KEYS = ("model", "arch", "head", "class_names", "image_size", "mean", "std")


def atomic_write(path: str, write) -> None:
    """Call ``write(temp_path)`` then rename over ``path``: readers never see half a file."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temp_path = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    os.close(handle)
    try:
        write(temp_path)
        os.replace(temp_path, path)
    except BaseException:
        if os.path.exists(temp_path):
            os.remove(temp_path)
        raise


def write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""

    def write(temp: str) -> None:
        with open(temp, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)

    atomic_write(path, write)


def save(path: str, model: nn.Module, meta: dict[str, Any]) -> None:
    state = {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()}
    payload = {"model": state, "arch": ARCH, **meta}
    atomic_write(path, lambda temp: torch.save(payload, temp))


def load(path: str, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model from the checkpoint alone; returns (model in eval mode, metadata)."""
    if not os.path.isfile(path):
        raise UserError(f"Model file '{path}' does not exist. Train one first "
                        "(python train_feature_extraction.py or python fine_tune.py) or pass --model PATH.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise UserError(
            f"'{path}' is not a flowers-transfer checkpoint ({str(error).splitlines()[0]}). Whole pickled "
            "models, like the tutorial's torch.save(model), are not loaded because unpickling runs code; "
            "retrain with this project's scripts."
        ) from None
    if not isinstance(payload, dict) or any(key not in payload for key in REQUIRED_KEYS):
        raise UserError(f"'{path}' lacks the checkpoint fields {REQUIRED_KEYS}; retrain with this project's scripts.")
    if payload["arch"] != ARCH:
        raise UserError(f"'{path}' holds a {payload['arch']!r} model; this project builds {ARCH}.")
    model = build_model(len(payload["class_names"]), head=payload["head"])
    model.load_state_dict(payload.pop("model"))
    return model.to(device).eval(), payload
