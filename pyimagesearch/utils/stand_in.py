"""The offline stand-in for ImageNet weights (``--weights none``): smoke runs and the demo only.

A randomly initialised ResNet50 scrambles images over its 16 residual blocks and its BatchNorm
layers normalise with statistics that are far from what they see, so even a linear probe on
its features learns little. Two standard initialisation steps, nothing learned from labels,
make it a usable stand-in.
"""

from __future__ import annotations

import torch
from torch import nn

# training images whose BatchNorm statistics stand in for ImageNet's when --weights none
CALIBRATION_IMAGES = 128
STAND_IN = (f"random weights with every residual block starting as the identity (torchvision's zero_init_residual) "
            f"and BatchNorm statistics calibrated on {CALIBRATION_IMAGES} training images")


@torch.no_grad()
def offline_stand_in(model: nn.Module, batches) -> int:
    """Make a randomly initialised ResNet50 a usable stand-in for ImageNet weights, offline.

    Two things, both standard initialisation practice, nothing learned from labels:
    every residual block starts as the identity (its last BatchNorm's scale set to 0, what
    torchvision's ``zero_init_residual=True`` does), so the random body does not scramble the
    image over 16 blocks; and every BatchNorm layer's statistics are measured on ``batches``
    of training images (:func:`calibrate_batchnorm`). Returns the number of images used.
    """
    from torchvision.models.resnet import Bottleneck  # here: the scripts' flags are checked before torchvision loads

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
            if len(x) < 2:
                continue  # BatchNorm cannot measure a variance on one image (a last batch of one)
            model(x)
            seen += len(x)
    finally:
        for layer, (momentum, training) in zip(layers, saved):
            layer.momentum = momentum
            layer.train(training)
    return seen
