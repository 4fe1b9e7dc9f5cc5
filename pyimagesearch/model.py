"""ResNet50 with a new head, its ImageNet weights, and the two ways of freezing it."""

from __future__ import annotations

import os
import socket
import urllib.error
from typing import Any

import torch
from torch import nn
from torchvision.models import ResNet50_Weights, resnet50
from torchvision.models.resnet import Bottleneck

from .errors import UserError
from .fileio import read_torch

ARCH = "resnet50"
HEADS = ("linear", "mlp")
# training images whose BatchNorm statistics stand in for ImageNet's when --weights none
CALIBRATION_IMAGES = 128
STAND_IN = (f"random weights with every residual block starting as the identity (torchvision's zero_init_residual) "
            f"and BatchNorm statistics calibrated on {CALIBRATION_IMAGES} training images")


def build_head(num_features: int, num_classes: int, head: str) -> nn.Module:
    """``linear``: feature extraction's single layer; ``mlp``: the tutorial's fine-tuning head."""
    if head == "linear":
        return nn.Linear(num_features, num_classes)
    if head == "mlp":
        return nn.Sequential(
            nn.Linear(num_features, 512), nn.ReLU(), nn.Dropout(0.25),
            nn.Linear(512, 256), nn.ReLU(), nn.Dropout(0.5),
            nn.Linear(256, num_classes),
        )
    raise ValueError(f"unknown head {head!r}; expected one of {HEADS}")


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


def build_model(num_classes: int, head: str = "linear", weights: dict[str, Any] | None = None) -> nn.Module:
    """ResNet50, its body loaded from ``weights`` (a state dict, or None for random), with a
    fresh ``head`` of ``num_classes`` outputs in place of the ImageNet classifier."""
    model = resnet50(weights=None)
    if weights is not None:
        body = {k: v for k, v in weights.items() if not k.startswith("fc.")}
        expected = model.state_dict()
        wrong = [k for k, v in body.items() if k in expected and v.shape != expected[k].shape]
        if wrong:
            raise UserError(f"The weights do not fit ResNet50: {wrong[0]} has shape {tuple(body[wrong[0]].shape)}, "
                            f"expected {tuple(expected[wrong[0]].shape)}. Pass ResNet50 weights.")
        result = model.load_state_dict(body, strict=False)
        missing = [k for k in result.missing_keys if not k.startswith("fc.")]
        if missing or result.unexpected_keys:
            raise UserError(
                "The weights do not fit ResNet50: "
                f"missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
                f"unexpected {result.unexpected_keys[:3]}. Pass ResNet50 weights."
            )
    model.fc = build_head(model.fc.in_features, num_classes, head)
    return model


def freeze_body(model: nn.Module) -> None:
    """Feature extraction: nothing but ``fc`` learns, and the body stays in eval mode, so its
    BatchNorm running statistics keep their ImageNet values (``model.train()`` in the tutorial
    quietly re-estimated them on flowers batches)."""
    for name, module in model.named_children():
        if name != "fc":
            module.requires_grad_(False)
            module.eval()
            for sub in module.modules():
                sub.keep_eval = True


def freeze_batchnorm(model: nn.Module) -> None:
    """Fine-tuning: every BatchNorm layer keeps its affine parameters and running statistics.

    The tutorial's ``zip(model.modules(), model.parameters())`` pairs unrelated modules and
    tensors, so it froze conv weights at random positions and left every BN layer training.
    """
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.requires_grad_(False)
            module.eval()
            module.keep_eval = True


def set_train_mode(model: nn.Module, training: bool = True) -> nn.Module:
    """``model.train(training)``, but frozen modules stay in eval mode."""
    model.train(training)
    if training:
        for module in model.modules():
            if getattr(module, "keep_eval", False):
                module.eval()
    return model


@torch.no_grad()
def offline_stand_in(model: nn.Module, batches) -> int:
    """Make a randomly initialised ResNet50 a usable stand-in for ImageNet weights, offline.

    Two things, both standard initialisation practice, nothing learned from labels:
    every residual block starts as the identity (its last BatchNorm's scale set to 0, what
    torchvision's ``zero_init_residual=True`` does), so the random body does not scramble the
    image over 16 blocks; and every BatchNorm layer's statistics are measured on ``batches``
    of training images (:func:`calibrate_batchnorm`). Returns the number of images used.
    """
    for module in model.modules():
        last_bn = getattr(module, "bn3", None) if isinstance(module, Bottleneck) else None
        if last_bn is not None:
            last_bn.weight.zero_()
    return calibrate_batchnorm(model, batches)


@torch.no_grad()
def calibrate_batchnorm(model: nn.Module, batches) -> int:
    """Measure every BatchNorm layer's running statistics on ``batches`` of images.

    An offline stand-in for ImageNet weights: with random weights, BatchNorm's default
    statistics (mean 0, variance 1) are far from what the layers really see, so the features
    reaching the head are badly scaled and even a linear probe learns little. Running a few
    batches through the network in train mode, with a plain average (``momentum=None``),
    gives each layer the statistics of this data; nothing else changes. Returns the image count.
    """
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, m.training) for m in layers]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None
        layer.train()
    seen = 0
    try:
        for x in batches:
            model(x)
            seen += len(x)
    finally:
        for layer, (momentum, training) in zip(layers, saved):
            layer.momentum = momentum
            layer.train(training)
    return seen


class _FoldedConv2d(nn.Conv2d):
    """A convolution that applies the frozen BatchNorm after it by scaling its own weights.

    A BatchNorm layer with fixed statistics and fixed affine parameters is a per-channel affine
    map, so ``bn(conv(x)) == conv(x; weight * scale, bias = shift)``. Scaling the weights costs a
    pass over the kernel (thousands of numbers); the BatchNorm it replaces reads and writes every
    activation (millions) in the forward and again in the backward pass.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bn = self.__dict__["_folded_bn"]  # a plain attribute: not a second owner in the state dict
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        shift = bn.bias - bn.running_mean * scale
        if self.bias is not None:
            shift = shift + self.bias * scale
        return self._conv_forward(x, self.weight * scale.reshape(-1, 1, 1, 1), shift)


class _FoldedBatchNorm2d(nn.BatchNorm2d):
    """Its work is done by the convolution before it; it keeps its parameters for the state dict."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _conv_bn_pairs(model: nn.Module) -> list[tuple[nn.Module, nn.Module]]:
    """(conv, bn) pairs of a torchvision ResNet, where each bn directly follows its conv."""
    pairs = [(model.conv1, model.bn1)]
    for layer in (model.layer1, model.layer2, model.layer3, model.layer4):
        for block in layer:
            pairs += [(getattr(block, f"conv{i}"), getattr(block, f"bn{i}")) for i in (1, 2, 3) if hasattr(block, f"conv{i}")]
            if block.downsample is not None:
                pairs.append((block.downsample[0], block.downsample[1]))
    return pairs


def fold_frozen_batchnorm(model: nn.Module) -> int:
    """Fold every frozen BatchNorm (no trainable parameters, kept in eval mode) into the
    convolution before it. The module tree and the state dict keep their shape, so checkpoints
    stay plain torchvision ResNet50 state dicts. Returns how many layers were folded."""
    folded = 0
    for conv, bn in _conv_bn_pairs(model):
        frozen = not any(p.requires_grad for p in bn.parameters()) and (getattr(bn, "keep_eval", False) or not bn.training)
        if frozen and type(conv) is nn.Conv2d and type(bn) is nn.BatchNorm2d:
            conv.__class__, bn.__class__ = _FoldedConv2d, _FoldedBatchNorm2d
            conv.__dict__["_folded_bn"] = bn
            folded += 1
    return folded


class Body(nn.Module):
    """ResNet50 up to the pooled, flattened 2048-d features: what the head sees."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.layers = nn.Sequential(*[m for name, m in model.named_children() if name != "fc"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.layers(x), 1)
