"""ImageNet weights for the ResNet50 body: torchvision's weights enums and torch hub cache, or a file.

Offline, a missing download fails in seconds with a message that says where to put the file;
random weights are never used unless asked for (``--weights none``).
"""

from __future__ import annotations

import os
import socket
import urllib.error
from typing import Any

import torch
from torchvision.models import ResNet50_Weights

from .errors import UserError
from .fileio import read_torch
from .stand_in import STAND_IN


def _hub_checkpoint_path(weights: ResNet50_Weights) -> str:
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(weights.url))


def _download_state_dict(weights: ResNet50_Weights, timeout_s: float) -> dict[str, Any]:
    """torchvision's own loader (torch hub cache, hash-checked download), with a socket
    timeout so that a machine without internet fails in seconds instead of hanging."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout_s)
    try:
        return weights.get_state_dict(progress=True, check_hash=True)
    finally:
        socket.setdefaulttimeout(previous)


def load_backbone_weights(spec: str, timeout_s: float = 30.0) -> dict[str, Any] | None:
    """Turn ``--weights`` into a state dict for the ResNet50 body, or None for ``none``.

    ``spec`` is a torchvision ResNet50_Weights name (IMAGENET1K_V1, IMAGENET1K_V2, DEFAULT),
    a path to a ``.pth`` state dict (a torchvision file, or one of our checkpoints), or none.
    """
    if spec.lower() == "none":
        return None
    if os.path.exists(spec) or spec.endswith((".pth", ".pt")):
        return _load_state_dict_file(spec)
    try:
        weights = ResNet50_Weights[spec.upper()]
    except KeyError:
        names = ", ".join(w.name for w in ResNet50_Weights)
        raise UserError(
            f"--weights {spec!r} is neither a file nor a ResNet50 weights name. "
            f"Use one of {names}, DEFAULT, a path to a .pth state dict, or none."
        ) from None
    cached = _hub_checkpoint_path(weights)
    try:
        return _download_state_dict(weights, timeout_s)
    except (urllib.error.URLError, OSError, RuntimeError) as error:
        raise UserError(
            f"Could not load the ImageNet weights {weights} ({error}). They are not in the torch "
            f"hub cache ('{cached}') and could not be downloaded from {weights.url}. "
            f"Fix it by: running once with internet access (the file is cached for later runs); "
            f"or downloading {weights.url} elsewhere and copying it to '{cached}' "
            f"(folder: '{os.path.dirname(cached)}', set TORCH_HOME to move it); "
            f"or passing --weights PATH to a ResNet50 state-dict file; "
            f"or --weights none for a smoke run with random weights (the results will be poor)."
        ) from None


def weights_identity(spec: str) -> str:
    """What --weights loads, as a string that changes when the weights do: a torchvision file's
    URL, a file on disk with its size and modification time, or the offline stand-in."""
    if spec.lower() == "none":
        return f"none: {STAND_IN}"
    if os.path.exists(spec):
        info = os.stat(spec)
        return f"file {os.path.abspath(spec)} {info.st_size} {info.st_mtime_ns}"
    try:
        return ResNet50_Weights[spec.upper()].url
    except KeyError:
        return spec


def _load_state_dict_file(path: str) -> dict[str, Any]:
    obj = read_torch(path, missing=f"Weights file '{path}' does not exist. Pass an existing .pth state dict, "
                                   "a ResNet50_Weights name such as IMAGENET1K_V1, or none.",
                     unreadable=f"Weights file '{path}' cannot be read as a state dict ({{reason}}). Only plain "
                                "state dicts load; whole pickled models are refused for safety.")
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]  # one of our checkpoints: reuse its body
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"Weights file '{path}' does not hold a state dict of tensors.")
    return obj
