"""The one training loop: train_one_epoch, evaluate, predict, extract_features, fit."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable

import torch
from torch import nn
from tqdm import tqdm

from .errors import UserError
from .model import set_train_mode
from .runtime import Precision, all_reduce_sum, is_main_process, unwrap


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
        self.count, self.batches, self.every = 0, 0, every

    def add(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor, bar=None) -> None:
        loss = loss.detach()
        self.loss_sum += loss.to(self.loss_sum.dtype) * y.numel()
        self.correct += (logits.argmax(1) == y).sum()
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

    def summary(self, precision: Precision) -> dict[str, float]:
        loss_sum, correct, count = all_reduce_sum([self.loss_sum.item(), self.correct.item(), self.count],
                                                  precision.device)
        count = int(count)
        return {"loss": loss_sum / max(count, 1), "accuracy": correct / max(count, 1), "count": count}


def _ddp(model: nn.Module) -> nn.parallel.DistributedDataParallel | None:
    """The DistributedDataParallel wrapper inside ``model`` (under torch.compile), if any."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            return model
        if not hasattr(model, "_orig_mod"):
            return None
        model = model._orig_mod


def _features(feature_fn: FeatureFn | None, x: torch.Tensor, precision: Precision) -> torch.Tensor:
    """Run the frozen body without autograd; ``clone()`` turns the inference tensor into one
    the head's backward pass may keep."""
    if feature_fn is None:
        return x
    with torch.inference_mode(), precision.autocast():
        features = feature_fn(x)
    return features.float().clone()


def train_one_epoch(model: nn.Module, loader: Iterable, loss_fn: nn.Module, optimizer: torch.optim.Optimizer,
                    precision: Precision, *, grad_accum_steps: int = 1,
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
    tally = _Tally(precision.device)
    bar = _batches(loader, desc, progress)
    ddp = _ddp(model) if grad_accum_steps > 1 else None
    total = len(loader) if ddp is not None else None
    pending = 0
    where = f"epoch {epoch}, " if epoch is not None else ""
    for index, (x, y) in enumerate(bar):
        x, y = precision.to_device(x), y.to(precision.device, non_blocking=True)
        x = _features(feature_fn, x, precision)
        steps_now = pending + 1 == grad_accum_steps or (total is not None and index + 1 == total)
        # intermediate micro-steps keep their gradients local: one all-reduce per optimizer step
        with ddp.no_sync() if ddp is not None and not steps_now else contextlib.nullcontext():
            with precision.autocast():
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
    return tally.summary(precision)


def _step(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None) -> None:
    if scaler:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)


@torch.inference_mode()
def evaluate(model: nn.Module, loader: Iterable, loss_fn: nn.Module, precision: Precision, *,
             progress: bool = True, desc: str = "val") -> dict[str, float]:
    """Mean loss, accuracy and image count over ``loader`` (summed over all torchrun processes)."""
    model.eval()
    tally = _Tally(precision.device)
    for x, y in _batches(loader, desc, progress):
        x, y = precision.to_device(x), y.to(precision.device, non_blocking=True)
        with precision.autocast():
            logits = model(x)
        tally.add(loss_fn(logits.float(), y), logits, y)
    return tally.summary(precision)


@torch.inference_mode()
def probabilities(model: nn.Module, x: torch.Tensor, precision: Precision) -> torch.Tensor:
    """Softmax probabilities of one batch, float32 on the CPU."""
    with precision.autocast():
        logits = model(precision.to_device(x))
    return logits.float().softmax(1).cpu()


@torch.inference_mode()
def predict(model: nn.Module, loader: Iterable, precision: Precision, *, progress: bool = True,
            desc: str = "predict") -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax probabilities (N, classes) and the loader's labels (N), on the CPU."""
    model.eval()
    batches, labels = [], []
    for x, y in _batches(loader, desc, progress):
        batches.append(probabilities(model, x, precision))
        labels.append(y.cpu())
    if not batches:
        return torch.empty(0, 0), torch.empty(0, dtype=torch.long)
    return torch.cat(batches), torch.cat(labels)


@torch.inference_mode()
def extract_features(body: nn.Module, loader: Iterable, precision: Precision, *, progress: bool = True,
                     desc: str = "features") -> tuple[torch.Tensor, torch.Tensor]:
    """Run the frozen ``body`` once over ``loader``: (N, 2048) float32 features and labels, on the CPU."""
    body.eval()
    features, labels = [], []
    for x, y in _batches(loader, desc, progress):
        with precision.autocast():
            features.append(body(precision.to_device(x)).float().cpu())
        labels.append(y.cpu())
    if not features:  # under torchrun, a process whose share of a small set is empty
        return torch.empty(0, 0), torch.empty(0, dtype=torch.long)
    return torch.cat(features), torch.cat(labels)


def fit(model: nn.Module, train_loader: Iterable | Callable[[int], Iterable], val_loader: Iterable,
        loss_fn: nn.Module, optimizer: torch.optim.Optimizer, precision: Precision, epochs: int, *,
        start_epoch: int = 0, scaler: torch.amp.GradScaler | None = None, grad_accum_steps: int = 1,
        feature_fn: FeatureFn | None = None, on_epoch_start: Callable[[int], None] | None = None,
        on_epoch_end: Callable[[dict[str, float]], bool | None] | None = None,
        progress: bool = True) -> list[dict[str, float]]:
    """Train epochs ``start_epoch`` .. ``epochs - 1`` and return their history, one record each.

    ``train_loader`` may be a function of the epoch (cached feature views, distributed samplers).
    ``on_epoch_start(epoch)`` runs before an epoch (learning rate, unfreezing); ``on_epoch_end(record)``
    after it, and returning True stops training there (early stopping).
    """
    history: list[dict[str, float]] = []
    for epoch in tqdm(range(start_epoch, epochs), desc="epochs", unit="epoch", dynamic_ncols=True,
                      initial=start_epoch, total=epochs, disable=not (progress and is_main_process())):
        if on_epoch_start:
            on_epoch_start(epoch)
        started = time.perf_counter()
        loader = train_loader(epoch) if callable(train_loader) else train_loader
        sampler = getattr(loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        train = train_one_epoch(model, loader, loss_fn, optimizer, precision, grad_accum_steps=grad_accum_steps,
                                scaler=scaler, feature_fn=feature_fn, progress=progress, epoch=epoch + 1)
        # the bare module: evaluation shards differ in length, and DDP's forward must not wait for peers
        val = evaluate(unwrap(model), val_loader, loss_fn, precision, progress=progress)
        if not (math.isfinite(train["loss"]) and math.isfinite(val["loss"])):
            raise _diverged(f"epoch {epoch + 1} (validation)")
        record = {
            "epoch": epoch + 1,
            "train_loss": train["loss"], "train_acc": train["accuracy"], "train_count": train["count"],
            "val_loss": val["loss"], "val_acc": val["accuracy"], "val_count": val["count"],
            "lr": optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - started,
        }
        history.append(record)
        stop = bool(on_epoch_end(record)) if on_epoch_end else False  # saves first: a logged epoch is on disk
        if is_main_process():
            tqdm.write(f"[INFO] EPOCH: {epoch + 1}/{epochs}\n"
                       f"Train loss: {train['loss']:.6f}, Train accuracy: {train['accuracy']:.4f}\n"
                       f"Val loss: {val['loss']:.6f}, Val accuracy: {val['accuracy']:.4f}")
            if stop:
                tqdm.write(f"[INFO] early stopping after epoch {epoch + 1}: the validation loss has not improved "
                           "for the last epochs (--patience)")
        if stop:
            break
    return history
