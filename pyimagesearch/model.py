"""The network: ResNet50 with a new head in place of its ImageNet classifier.

Weights come from ``weights.py``, what is frozen from ``freezing.py``, and the offline
stand-in for ImageNet weights from ``stand_in.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torchvision.models import resnet50

from .utils.errors import UserError

ARCH = "resnet50"
HEADS = ("linear", "mlp")


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


def trainable_parameters(module: nn.Module) -> Iterator[nn.Parameter]:
    """What the optimizer updates: the parameters that still require gradients after freezing."""
    return (p for p in module.parameters() if p.requires_grad)


class Body(nn.Module):
    """ResNet50 up to the pooled, flattened 2048-d features: what the head sees."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.layers = nn.Sequential(*[m for name, m in model.named_children() if name != "fc"])
        # 2048 for ResNet50: what the head's first Linear takes, the tutorial's Linear or its MLP
        self.width = next(m for m in model.fc.modules() if isinstance(m, nn.Linear)).in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.layers(x), 1)
