"""Per-epoch learning rate and early stopping: opt-in, so the tutorial's constant-LR, fixed-epoch
run stays the default. Both keep plain state, saved in the resumable state every epoch. And the
rates of the learning-rate range test (--find-lr), with the rules that read a rate off its curve."""

from __future__ import annotations

import math
from typing import Any

SCHEDULES = ("none", "cosine", "step", "plateau")


class LearningRate:
    """The learning rate of each epoch: a linear warm-up over ``warmup`` epochs, then

    - ``none``: the base rate;
    - ``cosine``: half a cosine from the base rate down to 0 at the last epoch;
    - ``step``: a tenth of the rate after each third of the remaining epochs;
    - ``plateau``: a tenth of the rate whenever the validation loss has not improved for
      ``plateau_patience`` epochs (as torch's ReduceLROnPlateau).
    """

    def __init__(self, kind: str, base: float, epochs: int, warmup: int = 0, plateau_patience: int = 2) -> None:
        if kind not in SCHEDULES:
            raise ValueError(f"unknown schedule {kind!r}")
        self.kind, self.base, self.epochs, self.warmup = kind, base, epochs, warmup
        self.plateau_patience = plateau_patience
        self.plateau_scale, self.best_loss, self.bad_epochs = 1.0, math.inf, 0

    def at(self, epoch: int) -> float:
        """The rate for ``epoch`` (0-based)."""
        if epoch < self.warmup:
            return self.base * (epoch + 1) / self.warmup
        progress, remaining = epoch - self.warmup, max(1, self.epochs - self.warmup)
        if self.kind == "cosine":
            return self.base * 0.5 * (1 + math.cos(math.pi * progress / remaining))
        if self.kind == "step":
            return self.base * 0.1 ** (progress // max(1, math.ceil(remaining / 3)))
        if self.kind == "plateau":
            return self.base * self.plateau_scale
        return self.base

    def apply(self, optimizer, epoch: int) -> None:
        """Set the optimizer's rate for ``epoch`` (0-based)."""
        for group in optimizer.param_groups:
            group["lr"] = self.at(epoch)

    def observe(self, val_loss: float) -> None:
        """Feed the epoch's validation loss (only ``plateau`` uses it)."""
        if val_loss < self.best_loss:
            self.best_loss, self.bad_epochs = val_loss, 0
            return
        self.bad_epochs += 1
        if self.kind == "plateau" and self.bad_epochs >= self.plateau_patience:
            self.plateau_scale *= 0.1
            self.bad_epochs = 0

    def state_dict(self) -> dict[str, Any]:
        return {"plateau_scale": self.plateau_scale, "best_loss": self.best_loss, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.plateau_scale, self.best_loss, self.bad_epochs = state["plateau_scale"], state["best_loss"], state["bad_epochs"]


class EarlyStopping:
    """Stop when the validation loss has not improved for ``patience`` epochs (0 = never)."""

    def __init__(self, patience: int = 0) -> None:
        self.patience, self.best_loss, self.bad_epochs = patience, math.inf, 0

    def should_stop(self, val_loss: float) -> bool:
        if val_loss < self.best_loss:
            self.best_loss, self.bad_epochs = val_loss, 0
            return False
        self.bad_epochs += 1
        return 0 < self.patience <= self.bad_epochs

    def state_dict(self) -> dict[str, Any]:
        return {"best_loss": self.best_loss, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_loss, self.bad_epochs = state["best_loss"], state["bad_epochs"]


# --- the learning-rate range test (--find-lr): Smith (2017), with fastai's lr_find defaults ----

RANGE_START, RANGE_END, RANGE_STEPS = 1e-7, 10.0, 100  # rates from tiny to far too large, one batch each
SMOOTHING = 0.98  # the loss's exponential moving average (debiased), as fastai records it
DIVERGED = 4.0  # the test stops once the smoothed loss is 4x its best (fastai's stop_div)
FLAT = 0.05  # a curve whose smoothed loss never falls 5 % below its start suggests nothing


def range_rates(start: float = RANGE_START, end: float = RANGE_END, steps: int = RANGE_STEPS) -> list[float]:
    """``steps`` learning rates growing exponentially from ``start`` to ``end``."""
    return [start * (end / start) ** (i / (steps - 1)) for i in range(steps)]


def smooth(losses: list[float], beta: float = SMOOTHING) -> list[float]:
    average, smoothed = 0.0, []
    for i, loss in enumerate(losses, start=1):
        average = beta * average + (1 - beta) * loss
        smoothed.append(average / (1 - beta ** i))
    return smoothed


def _valley(losses: list[float]) -> int:
    """fastai's "valley" (its default since 2.4): the longest stretch over which the loss keeps
    falling, and a point about half-way down it."""
    n, start, end = len(losses), 0, 0
    falling = [1] * n  # the longest decreasing run ending at each point
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and falling[i] < falling[j] + 1:
                falling[i] = falling[j] + 1
            if falling[end] < falling[i]:
                end, start = i, i - falling[i]
    third = (end - start) / 3
    return start + int(third) + int(third / 2)


def _steepest(rates: list[float], losses: list[float]) -> int:
    """The older rule: where the loss falls fastest against the log of the rate."""
    slopes = [(losses[i + 1] - losses[i]) / (math.log(rates[i + 1]) - math.log(rates[i])) for i in range(len(rates) - 1)]
    return min(range(len(slopes)), key=slopes.__getitem__)


def suggest(rates: list[float], losses: list[float]) -> dict[str, float] | None:
    """fastai's "valley" and "steepest" rates on the smoothed curve, leaving out its first tenth
    and last 5 points as fastai does; None when the curve is too short, or too flat (it never falls
    FLAT below its start) for a rate to mean anything."""
    smoothed = smooth(losses)
    kept = slice(len(smoothed) // 10, len(smoothed) - 5)
    rates, smoothed = rates[:len(smoothed)][kept], smoothed[kept]
    if len(smoothed) < 10 or min(smoothed) > (1 - FLAT) * smoothed[0]:
        return None
    return {"valley": rates[_valley(smoothed)], "steepest": rates[_steepest(rates, smoothed)]}
