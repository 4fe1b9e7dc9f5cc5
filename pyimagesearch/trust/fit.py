"""The end of a training run: each saved model (the final and the best) gets its temperature and
its novelty reference, fitted on the run's own photos and written into the checkpoint's metadata.

The validation photos' logits give the temperature (judged by cross-validation over them), the
training photos' body features are the novelty reference, and the validation photos' features
set where "unlike every class" begins. Both are read un-augmented, as inference reads a photo.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import torch
from torch import nn

from .. import checkpoint
from ..checkpointer import Checkpointer
from ..create_dataloaders import eval_image_folder, make_loader
from ..engine import extract_features
from ..feature_cache import Features  # (N, width) features and their labels
from ..freezing import fold_frozen_batchnorm
from ..model import Body
from ..utils.digest import folder_digest
from ..utils.distributed import is_distributed
from ..utils.fileio import human_size
from . import novelty, temperature

if TYPE_CHECKING:
    from ..session import TrainingSession

def calibration_meta(judged: dict) -> dict:
    """What a checkpoint keeps of the judgement: the temperature and the figures."""
    return {key: value for key, value in judged.items() if not key.startswith("bins_")}


def fitted_on(val_ds) -> dict:
    """Which photos the temperature was fitted on, so that --evaluate on the same ones can say so."""
    return {"folder": os.path.realpath(val_ds.root),
            "photos_digest": folder_digest(val_ds.samples, val_ds.root, content=False)}


class CheckpointTrust:
    """Calibration and novelty for a run's saved models, on the main process after training.

    ``body_frozen`` (feature extraction): every saved model shares the body, so its features are
    read once; ``cached_train`` and ``cached_val`` are the run's own un-augmented features, used
    when they cover every photo (not a torchrun process's share). Calling the object amends the
    best and the final checkpoint and returns the final one's judgement, for the report.
    """

    def __init__(self, session: TrainingSession, checkpointer: Checkpointer, model: nn.Module, train_ds, val_ds, *,
                 body_frozen: bool, cached_train: Features | None = None, cached_val: Features | None = None) -> None:
        self.args, self.compute, self.loader_options, self.log = (session.args, session.compute,
                                                                  session.loader_options, session.log)
        self.checkpointer, self.train_ds, self.val_ds, self.body_frozen = checkpointer, train_ds, val_ds, body_frozen
        self.model = model  # the final model, as it trained (on its device, BatchNorm folded with --fold-bn)
        self.reference: dict | None = None
        whole = not is_distributed()  # under torchrun, a process's features are its share of the photos
        self.cached = (cached_train, cached_val) if whole else (None, None)

    def _features(self, model: nn.Module) -> tuple[Features, Features]:
        """Un-augmented training and validation features: the run's own where it has them, else
        read through ``model``'s body (once for every saved model when the body is frozen)."""
        train, val = self.cached
        body = Body(model)
        if train is None:
            train = self._extract(body, self.train_ds, "features (train)")
        if val is None:
            val = self._extract(body, self.val_ds, "features (val)")
        if self.body_frozen:
            self.cached = (train, val)
        return train, val

    def _extract(self, body: nn.Module, ds, desc: str) -> Features:
        loader = make_loader(eval_image_folder(ds.root, self.args.image_size), self.args.batch_size, False,
                             split_across_processes=False, **self.loader_options)
        return extract_features(body, loader, self.compute, progress=self.args.progress, desc=desc)

    def _load(self, path: str) -> nn.Module:
        model = self.compute.prepare(checkpoint.load(path)[0].requires_grad_(False)).eval()
        if self.args.fold_bn:
            fold_frozen_batchnorm(model)
        return model

    def _fit(self, model: nn.Module) -> tuple[dict, dict | None]:
        model.eval()
        (train_features, _), (val_features, val_labels) = self._features(model)
        with torch.inference_mode():
            logits = self.compute.infer(model.fc, val_features).float().cpu()
        judged = temperature.judge(logits, val_labels, seed=self.args.seed)
        if self.reference is None or not self.body_frozen:  # a frozen body's reference is every saved model's
            self.reference = novelty.fit(train_features, val_features, self.args.seed) if len(train_features) > 1 else None
        return judged, self.reference

    def __call__(self) -> dict:
        final, best, photos = self.checkpointer.path, self.checkpointer.best_path, fitted_on(self.val_ds)
        judged, reference = self._fit(self.model)
        checkpoint.amend(final, calibration={**calibration_meta(judged), **photos}, novelty=reference)
        # a best model of the final epoch is the final model: the same answers, without reading it again
        same = self.checkpointer.best_epoch == self.checkpointer.saved_epoch
        best_judged, best_reference = (judged, reference) if same else self._fit(self._load(best))
        checkpoint.amend(best, calibration={**calibration_meta(best_judged), **photos}, novelty=best_reference)
        self.log(describe(judged, reference))
        return judged


def describe(judged: dict, reference: dict | None) -> str:
    """The lines the end of training prints about calibration and novelty."""
    if judged.get("declined"):
        line = (f"[INFO] calibration: the temperature {judged['declined']:.2f} fitted on {judged['photos']} validation "
                f"photos is declined, as {judged['reason']} (log-loss over the folds it was not fitted on: "
                f"{judged['nll_raw']:.3f} raw, {judged['nll_calibrated']:.3f} calibrated); inference reports the raw "
                f"probabilities (expected calibration error {judged['ece_raw']:.3f})")
    elif judged["fitted"]:
        line = (f"[INFO] calibration: temperature {judged['temperature']:.2f}, fitted on {judged['photos']} validation "
                f"photos; expected calibration error {judged['ece_raw']:.3f} raw, {judged['ece_calibrated']:.3f} "
                f"calibrated (each fold judged by a temperature fitted on the other {temperature.FOLDS - 1})")
    else:
        line = (f"[INFO] calibration: {judged['photos']} validation photos are too few to fit a temperature (it "
                f"takes {temperature.MIN_PHOTOS}); inference reports the raw probabilities")
    if reference is None:
        return line + "\n[INFO] novelty: one training photo is no reference; no photo will be flagged"
    return line + (f"\n[INFO] novelty: {len(reference['reference'])} training photos kept as the reference "
                   f"(+{human_size(novelty.extra_bytes(reference))} in each checkpoint); a photo more unusual than "
                   f"{reference['percentile']:g} % of the validation photos is flagged as unlike every class")
