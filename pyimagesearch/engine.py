"""One pass over the data: train_one_epoch, evaluate, predict, extract_features, evaluate_and_report.

The epoch loop itself is in each training script's main, as in the tutorial.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from .freezing import set_train_mode
from .reports.report import publish
from .schedule import DIVERGED, smooth
from .utils.distributed import all_reduce_sum, find_ddp, is_main_process
from .utils.errors import UserError
from .utils.runtime import Compute


class NonFiniteLoss(UserError):
    """The loss became NaN or infinite: training stops before anything is saved from it."""


def _diverged(where: str) -> NonFiniteLoss:
    return NonFiniteLoss(f"Training stopped: the loss became NaN or infinite at {where}. The learning rate is "
                         "most likely too high for this model and data: run again with a lower --lr (for example "
                         "a tenth of it). Nothing from the diverged epoch was saved; the checkpoints already on "
                         "disk are from the last finite epoch.")

FeatureFn = Callable[[torch.Tensor], torch.Tensor]


def _batches(loader: Iterable, desc: str, progress: bool):
    return tqdm(loader, desc=desc, leave=False, unit="batch", dynamic_ncols=True,
                disable=not (progress and is_main_process()))


class _Tally:
    """Sample-weighted loss and correct predictions, summed on the device: reading them back
    (a GPU sync) happens every ``every`` batches for the progress bar and once at the end.

    The first batch whose loss is not finite is remembered on the device too, and checked at
    each read-back, so a diverging run stops within ``every`` batches without a sync per batch.
    """

    def __init__(self, device: torch.device, every: int = 10) -> None:
        dtype = torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64
        self.loss_sum = torch.zeros((), dtype=dtype, device=device)
        self.correct = torch.zeros((), dtype=torch.int64, device=device)
        self.first_bad = torch.full((), -1, dtype=torch.int64, device=device)
        self.support: torch.Tensor | None = None  # images per true class, and those predicted right
        self.hits: torch.Tensor | None = None
        self.count, self.batches, self.every = 0, 0, every

    def add(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor, bar=None) -> None:
        loss = loss.detach()
        self.loss_sum += loss.to(self.loss_sum.dtype) * y.numel()
        right = logits.argmax(1) == y
        self.correct += right.sum()
        if self.support is None:
            self.support = torch.zeros(logits.shape[1], dtype=torch.int64, device=y.device)
            self.hits = torch.zeros_like(self.support)
        # scatter_add_, not bincount or y[right]: both would wait for the GPU on every batch
        self.support.scatter_add_(0, y, torch.ones_like(y))
        self.hits.scatter_add_(0, y, right.to(y.dtype))
        bad = (~torch.isfinite(loss)) & (self.first_bad < 0)
        self.first_bad = torch.where(bad, self.batches, self.first_bad)
        self.count += y.numel()
        self.batches += 1
        if self.batches % self.every == 0:
            self.check()
        if bar is not None and not bar.disable and self.batches % self.every == 1:
            bar.set_postfix(loss=f"{self.loss_sum.item() / self.count:.4f}", acc=f"{self.correct.item() / self.count:.3f}")

    def check(self, where: str = "") -> None:
        """Raise NonFiniteLoss if a batch so far had a NaN or infinite loss."""
        first_bad = int(self.first_bad.item())
        if first_bad >= 0:
            raise _diverged(f"{where}batch {first_bad + 1}")

    def summary(self, compute: Compute) -> dict[str, float]:
        """Loss, accuracy, count, and balanced accuracy (the mean recall over the classes present:
        scikit-learn's balanced_accuracy_score), summed over every torchrun process."""
        per_class = [] if self.support is None else [*self.support.tolist(), *self.hits.tolist()]
        loss_sum, correct, count, *per_class = all_reduce_sum(
            [self.loss_sum.item(), self.correct.item(), self.count, *per_class], compute.device)
        count = int(count)
        support, hits = per_class[:len(per_class) // 2], per_class[len(per_class) // 2:]
        recalls = [h / s for h, s in zip(hits, support) if s > 0]
        return {"loss": loss_sum / max(count, 1), "accuracy": correct / max(count, 1), "count": count,
                "balanced_accuracy": sum(recalls) / len(recalls) if recalls else 0.0}


def _features(feature_fn: FeatureFn | None, x: torch.Tensor, compute: Compute) -> torch.Tensor:
    """The batch on the device, through the frozen body (if any) without autograd; ``clone()``
    turns the inference tensor into one the head's backward pass may keep."""
    if feature_fn is None:
        return compute.to_device(x)
    with torch.inference_mode():
        features = compute.infer(feature_fn, x)
    return features.float().clone()


def train_one_epoch(model: nn.Module, loader: Iterable, loss_fn: nn.Module, optimizer: torch.optim.Optimizer,
                    compute: Compute, *, grad_accum_steps: int = 1,
                    scaler: torch.amp.GradScaler | None = None, feature_fn: FeatureFn | None = None,
                    progress: bool = True, desc: str = "train", epoch: int | None = None) -> dict[str, float]:
    """One pass over ``loader``; returns the sample-weighted mean loss, accuracy and count.

    With ``grad_accum_steps`` > 1 the optimizer steps every that many batches and once more at
    the end, so no gradient is carried into the next epoch; under DDP the gradients are
    all-reduced only on the batch before a step. A NaN or infinite loss raises NonFiniteLoss.
    """
    set_train_mode(model, True)
    if isinstance(feature_fn, nn.Module):
        feature_fn.eval()  # a frozen body: BatchNorm must use, not update, its statistics
    optimizer.zero_grad(set_to_none=True)
    tally = _Tally(compute.device)
    bar = _batches(loader, desc, progress)
    ddp = find_ddp(model) if grad_accum_steps > 1 else None
    total = len(loader) if ddp is not None else None
    pending = 0
    where = f"epoch {epoch}, " if epoch is not None else ""
    for index, (x, y) in enumerate(bar):
        x, y = _features(feature_fn, x, compute), y.to(compute.device, non_blocking=True)
        steps_now = pending + 1 == grad_accum_steps or (total is not None and index + 1 == total)
        # intermediate micro-steps keep their gradients local: one all-reduce per optimizer step
        with ddp.no_sync() if ddp is not None and not steps_now else contextlib.nullcontext():
            with compute.autocast():
                logits = model(x)
                loss = loss_fn(logits, y)
            scaled = loss / grad_accum_steps
            (scaler.scale(scaled) if scaler else scaled).backward()
        pending += 1
        if pending == grad_accum_steps:
            _step(optimizer, scaler)
            pending = 0
        tally.add(loss, logits, y, bar)
    tally.check(where)
    if pending:
        _step(optimizer, scaler)
    return tally.summary(compute)


def _step(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None) -> None:
    if scaler:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def lr_range_test(model: nn.Module, loader: Iterable, loss_fn: nn.Module, optimizer: torch.optim.Optimizer,
                  compute: Compute, rates: Sequence[float], *, scaler: torch.amp.GradScaler | None = None,
                  feature_fn: FeatureFn | None = None, progress: bool = True) -> list[float]:
    """Smith's learning-rate range test: one optimizer step per batch of ``loader`` (from its start
    again when it runs out), at each of ``rates`` in turn; returns the loss of each step, and stops
    early once the smoothed loss is DIVERGED times its best or not finite. It trains ``model`` as a
    training pass would: the caller keeps its weights and restores them."""
    set_train_mode(model, True)
    if isinstance(feature_fn, nn.Module):
        feature_fn.eval()
    losses: list[float] = []
    batches = iter(loader)
    for rate in tqdm(rates, desc="lr range test", unit="step", leave=False, disable=not (progress and is_main_process())):
        try:
            x, y = next(batches)
        except StopIteration:
            batches = iter(loader)
            x, y = next(batches)
        for group in optimizer.param_groups:
            group["lr"] = rate
        x, y = _features(feature_fn, x, compute), y.to(compute.device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with compute.autocast():
            loss = loss_fn(model(x), y)
        (scaler.scale(loss) if scaler else loss).backward()
        _step(optimizer, scaler)
        losses.append(float(loss.item()))  # one sync a step: the test is 100 steps, and each decides whether to go on
        smoothed = smooth(losses)
        if not math.isfinite(losses[-1]) or smoothed[-1] > DIVERGED * min(smoothed):
            break
    optimizer.zero_grad(set_to_none=True)
    return losses


@torch.inference_mode()
def evaluate(model: nn.Module, loader: Iterable, loss_fn: nn.Module, compute: Compute, *,
             progress: bool = True, desc: str = "val") -> dict[str, float]:
    """Mean loss, accuracy and image count over ``loader`` (summed over all torchrun processes)."""
    model.eval()
    tally = _Tally(compute.device)
    for x, y in _batches(loader, desc, progress):
        logits, y = compute.infer(model, x), y.to(compute.device, non_blocking=True)
        tally.add(loss_fn(logits.float(), y), logits, y)
    return tally.summary(compute)


@torch.inference_mode()
def probabilities(model: nn.Module, x: torch.Tensor, compute: Compute) -> torch.Tensor:
    """Softmax probabilities of one batch, float32 on the CPU."""
    logits = compute.infer(model, x)
    return logits.float().softmax(1).cpu()


@torch.inference_mode()
def predict(model: nn.Module, loader: Iterable, compute: Compute, *, progress: bool = True,
            desc: str = "predict") -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax probabilities (N, classes) and the loader's labels (N), on the CPU."""
    model.eval()
    batches, labels = [], []
    for x, y in _batches(loader, desc, progress):
        batches.append(probabilities(model, x, compute))
        labels.append(y.cpu())
    if not batches:
        return torch.empty(0, 0), torch.empty(0, dtype=torch.long)
    return torch.cat(batches), torch.cat(labels)


@torch.inference_mode()
def extract_features(body: nn.Module, loader: Iterable, compute: Compute, *, progress: bool = True,
                     desc: str = "features") -> tuple[torch.Tensor, torch.Tensor]:
    """Run the frozen ``body`` once over ``loader``: (N, 2048) float32 features and labels, on the CPU."""
    body.eval()
    features, labels = [], []
    for x, y in _batches(loader, desc, progress):
        features.append(compute.infer(body, x).float().cpu())
        labels.append(y.cpu())
    if not features:  # under torchrun, a process whose share of a small set is empty
        return torch.empty(0, 0), torch.empty(0, dtype=torch.long)
    return torch.cat(features), torch.cat(labels)


def check_finite(train: dict[str, float], val: dict[str, float], epoch: int) -> None:
    """Stop with NonFiniteLoss when an epoch's mean training or validation loss is NaN or infinite."""
    if not (math.isfinite(train["loss"]) and math.isfinite(val["loss"])):
        raise _diverged(f"epoch {epoch} (validation)")


def evaluate_and_report(model: nn.Module, loader: Iterable, class_names: Sequence[str], compute: Compute,
                        prefix: str, mean: Sequence[float], std: Sequence[float], progress: bool = True,
                        label_map: Sequence[int] | None = None, calibration: dict | None = None) -> dict[str, Any]:
    """Predict every image of ``loader`` (shuffle off), print the table and write the report files.

    ``label_map[folder_label]`` translates the folder's class index into the model's; ``calibration``
    is the temperature's judgement, reported too.
    """
    started = time.perf_counter()
    probabilities, labels = predict(model, loader, compute, progress=progress, desc="evaluate")
    seconds = time.perf_counter() - started
    if label_map is not None:
        labels = torch.tensor([label_map[int(label)] for label in labels], dtype=torch.long)
    return publish(probabilities, labels, class_names, loader.dataset, prefix, mean, std, seconds=seconds,
                   calibration=calibration)
