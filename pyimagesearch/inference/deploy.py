"""A model that runs without PyTorch: ONNX export, and the exported file run through OpenCV's DNN module.

``inference.py --model M.pth --export M.onnx`` writes the network and, beside it, ``M.json``
with what inference needs to feed it (class names, image size, mean/std). Any inference mode
then takes ``--model M.onnx``; a Raspberry Pi needs only ``cv2`` and ``numpy`` (docs/onnx.md).
"""

from __future__ import annotations

import json
import os
import warnings
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import checkpoint
from ..utils import fileio
from ..utils.errors import UserError, first_line
from ..utils.opencv import quiet_opencv

OPSET = 17


def metadata_path(onnx_path: str) -> str:
    """output/finetune_model.onnx -> output/finetune_model.json"""
    return f"{os.path.splitext(onnx_path)[0]}.json"


def export_onnx(model_path: str, onnx_path: str) -> dict[str, Any]:
    """Write the checkpoint's network as ONNX (batch size free, BatchNorm left for the runtime to
    fold) and its metadata as JSON beside it; returns the metadata."""
    if not onnx_path.lower().endswith(".onnx"):
        raise UserError(f"--export {onnx_path}: the file name must end in .onnx.")
    fileio.check_writable_file(onnx_path, "--export")
    if (os.path.exists(onnx_path) or os.path.exists(metadata_path(onnx_path))) and not _exported_here(onnx_path):
        raise UserError(f"--export: '{onnx_path}' or '{metadata_path(onnx_path)}' exists and was not written by "
                        "--export; it would be overwritten. Move it away or choose another name.")
    model, meta = checkpoint.load(model_path)
    size = meta["image_size"]
    example = torch.zeros(1, 3, size, size)

    def write(temp: str) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript-based exporter's deprecation notice
            torch.onnx.export(model, (example,), temp, dynamo=False, opset_version=OPSET, input_names=["input"],
                              output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})

    fileio.atomic_write(onnx_path, write, needed=fileio.payload_bytes(model.state_dict()))
    exported = {key: meta[key] for key in checkpoint.META_KEYS}
    exported["source"] = os.path.abspath(model_path)
    exported["epoch"] = meta.get("epoch")
    calibration = meta.get("calibration")  # the temperature travels; the novelty reference does not (docs/onnx.md)
    if isinstance(calibration, dict) and "temperature" in calibration:
        exported["calibration"] = {"temperature": calibration["temperature"], "fitted": calibration.get("fitted", True)}
    fileio.write_text(metadata_path(onnx_path), json.dumps(exported, indent=2))
    return exported


def _exported_here(onnx_path: str) -> bool:
    """Both files of an earlier export (its JSON names the checkpoint it came from)."""
    try:
        with open(metadata_path(onnx_path), encoding="utf-8") as handle:
            meta = json.load(handle)
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and "source" in meta and all(key in meta for key in checkpoint.META_KEYS)


class OpenCVModel(nn.Module):
    """An exported network run by cv2.dnn, behind the same call as the PyTorch model:
    a (N, 3, H, W) float tensor in, (N, classes) logits out, on the CPU."""

    def __init__(self, onnx_path: str) -> None:
        super().__init__()
        import cv2

        try:
            with quiet_opencv():
                self.net = cv2.dnn.readNetFromONNX(onnx_path)
        except cv2.error as error:
            raise UserError(f"OpenCV cannot read '{onnx_path}' as an ONNX network ({str(error).strip()[:200]}). "
                            "Export it again with inference.py --export.") from None
        with quiet_opencv():  # "[ WARN] ... setPreferableTarget Targets are not supported by the new graph engine"
            self.net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
            self.net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.net.setInput(np.ascontiguousarray(x.detach().float().cpu().numpy()))
        with quiet_opencv():
            return torch.from_numpy(np.array(self.net.forward(), dtype=np.float32))


def load_onnx(onnx_path: str) -> tuple[nn.Module, dict[str, Any]]:
    """The exported network and its metadata, checked like a checkpoint's, and the network's
    outputs counted against the class names."""
    fileio.check_regular_or_absent(onnx_path, "--model")
    fileio.check_regular_or_absent(metadata_path(onnx_path), "--model's metadata")
    if not os.path.isfile(onnx_path):
        raise UserError(f"Model file '{onnx_path}' does not exist. Export one with "
                        "python inference.py --model output/finetune_model.pth --export output/finetune_model.onnx.")
    meta_path = metadata_path(onnx_path)
    try:
        with open(meta_path, encoding="utf-8") as handle:
            meta = json.load(handle)
    except (OSError, ValueError) as error:
        raise UserError(f"'{onnx_path}' needs its metadata file '{meta_path}' (written beside it by --export): "
                        f"{error}. Export the model again.") from None
    model = OpenCVModel(onnx_path)
    checkpoint.validate_meta(meta, meta_path)
    size = meta["image_size"]
    try:
        outputs = model(torch.zeros(1, 3, size, size)).shape
    except Exception as error:  # cv2.error: the network does not take this input
        raise UserError(f"'{onnx_path}' does not run on a {size} x {size} image as its metadata '{meta_path}' says "
                        f"({first_line(error)[:200]}). Export the model again.") from None
    if len(outputs) != 2 or outputs[1] != len(meta["class_names"]):
        raise UserError(f"'{onnx_path}' gives {outputs[-1]} outputs per image, but its metadata '{meta_path}' names "
                        f"{len(meta['class_names'])} classes. The two files come from different models: export the "
                        "model again (both files are written together).")
    return model, meta
