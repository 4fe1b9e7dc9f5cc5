"""Grad-CAM heatmaps of what the model looked at, computed by torchcam on the very model that
inference.py runs (BatchNorm folded, channels_last, autocast), and overlaid with OpenCV as
PyImageSearch's Grad-CAM tutorial does.

torchcam hooks the chosen layer, and its gradient with respect to the class score weights that
layer's activation maps. The model is frozen, so only the chosen layer's parameters are made to
need gradients while a map is taken: the backward pass then runs from the head to that layer and
no further, and no parameter gradient is kept.
"""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Iterator, Sequence

import cv2
import numpy as np
import torch
from torch import nn

from ..utils.errors import UserError
from ..utils.runtime import Compute

DEFAULT_LAYER = "layer4"  # ResNet50's last block: the coarsest map, the most class-specific
BLEND = 0.5  # the heatmap's weight in the overlay


def check_layer(model: nn.Module, layer: str) -> None:
    """The layer exists and gives a spatial map (not the head, not a pooled vector)."""
    modules = dict(model.named_modules())
    if layer not in modules:
        close = difflib.get_close_matches(layer, [name for name in modules if name], n=3)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise UserError(f"--explain-layer '{layer}' is not a layer of this model.{hint} ResNet50's blocks are "
                        f"layer1 to layer4 (each with sub-blocks such as layer4.2); the default is {DEFAULT_LAYER}.")
    if layer.split(".")[0] in ("fc", "avgpool"):
        raise UserError(f"--explain-layer '{layer}' comes after the spatial pooling, so it has no map to show; "
                        f"choose a convolutional block such as {DEFAULT_LAYER} or layer3.")


@contextlib.contextmanager
def _gradients_at(layer: nn.Module) -> Iterator[None]:
    """The layer's parameters need gradients for the duration, so that its output joins the graph."""
    parameters = [p for p in layer.parameters() if not p.requires_grad]
    for parameter in parameters:
        parameter.requires_grad_(True)
    try:
        yield
    finally:
        for parameter in parameters:
            parameter.requires_grad_(False)


class Explainer:
    """Grad-CAM maps of a batch for chosen classes: (N, h, w) float32 in [0, 1] at the layer's
    resolution, and the probabilities the same forward pass gave."""

    def __init__(self, model: nn.Module, compute: Compute, layer: str = DEFAULT_LAYER, temperature: float = 1.0) -> None:
        check_layer(model, layer)
        self.model, self.compute, self.layer, self.temperature = model, compute, layer, temperature

    def maps(self, images: torch.Tensor, classes: Sequence[int] | None = None) -> tuple[np.ndarray, torch.Tensor]:
        """``classes[i]`` is the class mapped for image i; None maps each image's top class."""
        from torchcam.methods import GradCAM

        self.model.eval()
        target = dict(self.model.named_modules())[self.layer]
        with _gradients_at(target), GradCAM(self.model, target_layer=self.layer) as extractor, torch.enable_grad():
            with self.compute.autocast():
                scores = self.model(self.compute.to_device(images))
            scores = scores.float()
            probabilities = (scores.detach() / self.temperature).softmax(1).cpu()  # calibrated as --images's
            chosen = probabilities.argmax(1).tolist() if classes is None else list(classes)
            cams = extractor(class_idx=chosen, scores=scores)[0]
        cams = torch.nan_to_num(cams.detach().float(), nan=0.0).cpu().numpy()
        return np.clip(cams, 0.0, 1.0), probabilities


def at_size(cam: np.ndarray, width: int, height: int, input_size: int) -> np.ndarray:
    """The map stretched to a photo's size (the model saw the photo squash-resized to
    ``input_size``), in [0, 1].

    A ResNet's strided convolutions are padded so that cell i of a stride-S map is centred on
    input pixel S x i, not S x i + S/2 as a plain resize assumes: at layer4 that would move every
    map half a cell (16 input pixels) down and to the right. The map is placed where its cells look."""
    cam = cam.astype(np.float32)
    rows, columns = cam.shape
    matrix = np.array([[columns / width, 0.0, 0.5 * columns / width - 0.5 * columns / input_size],
                       [0.0, rows / height, 0.5 * rows / height - 0.5 * rows / input_size]])
    placed = cv2.warpAffine(cam, matrix, (width, height), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                            borderMode=cv2.BORDER_REPLICATE)
    return np.clip(placed, 0.0, 1.0)


def overlay(photo_bgr: np.ndarray, placed: np.ndarray, blend: float = BLEND) -> np.ndarray:
    """The photo with its map (``at_size``'s, at the photo's size) on top: OpenCV's JET colormap
    (red where the model looked), blended."""
    heat = cv2.applyColorMap((placed * 255).astype(np.uint8), cv2.COLORMAP_JET)
    return cv2.addWeighted(heat, blend, photo_bgr, 1 - blend, 0)
