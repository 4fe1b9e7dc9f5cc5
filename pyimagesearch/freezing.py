"""What does not learn: the two ways of freezing ResNet50, and folding frozen BatchNorm layers
into the convolutions before them (same math, less work)."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn


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


def set_body_trainable(model: nn.Module, trainable: bool) -> None:
    """Fine-tuning's --freeze-epochs: the body's parameters (all but the head and the frozen
    BatchNorm layers) learn or not; the optimizer skips parameters without gradients."""
    for parameter in _body_parameters(model):
        parameter.requires_grad_(trainable)


def _body_parameters(model: nn.Module) -> Iterator[nn.Parameter]:
    for name, module in model.named_children():
        if name == "fc":
            continue
        for sub in module.modules():
            if not isinstance(sub, nn.modules.batchnorm._BatchNorm):
                yield from sub.parameters(recurse=False)


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
