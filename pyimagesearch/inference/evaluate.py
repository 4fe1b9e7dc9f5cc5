"""--evaluate: a class-folder tree through the model, reported in full: metrics, confusion matrix,
mistakes, how well calibrated the probabilities are, and how many photos are unlike every class.

The temperature is judged on these photos only when it was not fitted on them: given the very
validation photos it was fitted on, it is judged by cross-validation over them instead, and the
report says so.
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch
from tqdm import tqdm

from ..create_dataloaders import eval_image_folder, make_loader
from ..reports.report import publish
from ..trust import temperature
from ..utils.digest import folder_digest
from ..utils.errors import UserError
from ..utils.fileio import NOT_REGULAR
from ..utils.text import printable
from .predict import Predictor, unlike_summary


def fitted_on(predictor: Predictor, ds) -> bool:
    """Whether ``ds`` holds the photos the checkpoint's temperature was fitted on."""
    calibration = predictor.meta.get("calibration") or {}
    return (calibration.get("folder") == os.path.realpath(ds.root)
            or calibration.get("photos_digest") == folder_digest(ds.samples, ds.root, content=False))


def judge_calibration(predictor: Predictor, logits: torch.Tensor, labels: torch.Tensor, seen: bool) -> dict:
    """The calibration figures for these photos, honest about which photos the temperature saw
    (``seen``: these are the photos it was fitted on)."""
    stored = predictor.meta.get("calibration")
    if not stored or not stored.get("fitted", False) or stored.get("declined"):
        judged = temperature.measure(logits, labels, 1.0)
        why = (f"the temperature was declined at the end of training: {stored.get('reason', 'no better on held-out')}"
               if stored and stored.get("declined") else "the model carries no fitted temperature")
        return {key: value for key, value in judged.items() if not key.endswith("calibrated")} | {
            "fitted": False, "note": why}
    if seen:
        return temperature.judge(logits, labels) | {
            "note": "these are the photos the temperature was fitted on: each fold judged by a temperature "
                    "fitted on the other folds"}
    return temperature.measure(logits, labels, float(stored["temperature"]))


def _predict_all(predictor: Predictor, loader, progress: bool):
    logits, labels, novelty = [], [], []
    for images, y in tqdm(loader, desc="evaluate", unit="batch", leave=False, disable=not progress):
        batch_logits, batch_novelty = predictor.forward(images)
        logits.append(batch_logits)
        labels.append(y)
        if batch_novelty is not None:
            novelty.append(batch_novelty)
    return torch.cat(logits), torch.cat(labels), np.concatenate(novelty) if novelty else None


def evaluate_folder(predictor: Predictor, folder: str, output: str, *, batch_size: int, progress: bool) -> dict:
    """Metrics, confusion matrix, mistakes, calibration and novelty for a class-folder tree (e.g.
    dataset/val), written as <output>/<model>_report.* and <model>_calibration.png."""
    meta = predictor.meta
    ds = eval_image_folder(folder, meta["image_size"], meta["mean"], meta["std"])
    for path in ds.skipped:
        print(f"[WARN] skipped {printable(path)}: {NOT_REGULAR}")
    unknown = [c for c in ds.classes if c not in predictor.class_names]
    if unknown:
        raise UserError(f"'{folder}' has class folders the model does not know: {unknown}. "
                        f"The model's classes are {predictor.class_names}.")
    label_map = torch.tensor([predictor.class_names.index(c) for c in ds.classes])
    loader = make_loader(ds, batch_size, shuffle=False, num_workers=predictor.num_workers,
                         device=str(predictor.compute.device))
    started = time.perf_counter()
    logits, labels, novelty = _predict_all(predictor, loader, progress)
    seconds = time.perf_counter() - started
    labels = label_map[labels] if len(labels) else labels
    seen = fitted_on(predictor, ds)
    calibration = judge_calibration(predictor, logits, labels, seen)
    flagged = int(predictor.unlike(novelty).sum()) if novelty is not None else None
    unlike = None if flagged is None else {"photos": len(labels), "unlike_every_class": flagged,
                                           "threshold": predictor.novelty.threshold,
                                           "percentile": predictor.novelty.percentile}
    result = publish(predictor.probabilities(logits), labels, predictor.class_names, ds,
                     os.path.join(output, predictor.stem), meta["mean"], meta["std"], seconds=seconds,
                     calibration=calibration, novelty=unlike)
    print(describe_calibration(calibration))
    if flagged is not None:
        print(unlike_summary(predictor, flagged, len(labels),
                             "validation photo(s)" if seen else "photo(s)"))
    return result


def describe_calibration(judged: dict) -> str:
    """One line of calibration figures, and which photos they come from."""
    if "ece_calibrated" not in judged:
        return f"[INFO] calibration: expected calibration error {judged['ece_raw']:.3f}; {judged['note']}"
    how = judged.get("note") or "the temperature was fitted on other photos, the training run's validation set"
    return (f"[INFO] calibration on {judged['photos']} photos: expected calibration error {judged['ece_raw']:.3f} raw, "
            f"{judged['ece_calibrated']:.3f} with the temperature {judged['temperature']:.2f} ({how})")
