"""What a model's metadata says about trusting its answers, read for inference: the temperature its
probabilities are divided by, and the novelty reference that flags photos unlike every class.

A checkpoint from before calibration existed, or from a run stopped before its end, carries
neither: it loads as before, with raw probabilities and no flag, and one line says so.
"""

from __future__ import annotations

import argparse
import math

import torch

from ..arguments import is_onnx
from ..trust.novelty import KINDS, Novelty
from ..utils.errors import UserError


def _damaged(model: str, what: str) -> UserError:
    return UserError(f"'{model}' carries a damaged {what}. Train the model again, or export it again if it is an "
                     ".onnx file; --no-calibration reads the raw probabilities meanwhile.")


def temperature_of(args: argparse.Namespace, meta: dict) -> float:
    """The checkpoint's temperature, 1 under --no-calibration or when it has none (said once)."""
    calibration = meta.get("calibration")
    if not args.calibration:
        print("[INFO] --no-calibration: probabilities are the network's raw softmax")
        return 1.0
    if calibration is None:
        print(f"[INFO] '{args.model}' carries no temperature (trained before calibration existed, or stopped before "
              "the end of its run): probabilities are the network's raw softmax")
        return 1.0
    value = calibration.get("temperature") if isinstance(calibration, dict) else None
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0):
        raise _damaged(args.model, f"temperature ({value!r})")
    if calibration.get("declined"):
        print(f"[INFO] '{args.model}': its temperature was declined at the end of training ("
              f"{calibration.get('reason', 'no better on held-out validation photos')}): probabilities are the "
              "network's raw softmax")
    elif not calibration.get("fitted", True):
        print(f"[INFO] '{args.model}' was trained with too few validation photos to fit a temperature: probabilities "
              "are the network's raw softmax")
    else:
        print(f"[INFO] probabilities calibrated with the temperature {value:.2f} fitted at the end of training "
              "(--no-calibration for the raw ones)")
    return float(value)


def novelty_of(args: argparse.Namespace, meta: dict, feature_width: int | None = None) -> Novelty | None:
    """The checkpoint's novelty reference at --unlike-percentile, or None (said once); its features
    must be as wide as the body's (``feature_width``)."""
    if is_onnx(args.model):
        print("[INFO] an exported ONNX model gives logits only, not the features novelty is measured on: no photo "
              "is flagged as unlike every class (pass the .pth checkpoint for that)")
        return None
    state = meta.get("novelty")
    if state is None:
        print(f"[INFO] '{args.model}' carries no novelty reference (trained before it existed, or stopped before the "
              "end of its run): no photo is flagged as unlike every class")
        return None
    try:
        reference, distances = state["reference"], state["validation_distances"]
        if not (isinstance(reference, torch.Tensor) and reference.dim() == 2 and len(reference) > 1
                and reference.shape[1] == (feature_width or reference.shape[1])
                and all(isinstance(distances[kind], torch.Tensor) and distances[kind].numel() > 0 for kind in KINDS)
                and int(state["k"]) > 0):
            raise ValueError
        return Novelty(state, args.unlike_percentile)
    except (KeyError, TypeError, ValueError):
        raise _damaged(args.model, "novelty reference") from None


def trust_settings(args: argparse.Namespace, meta: dict, feature_width: int | None = None
                   ) -> tuple[float, Novelty | None]:
    """The temperature, and the novelty reference where a mode flags photos (--images, --evaluate):
    building it loads scikit-learn and cleanlab, seconds the tutorial's random batch need not wait."""
    flags = bool(getattr(args, "images", None) or getattr(args, "evaluate", None))
    return temperature_of(args, meta), novelty_of(args, meta, feature_width) if flags else None
