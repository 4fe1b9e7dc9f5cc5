"""Per-epoch learning rate and early stopping: opt-in, so the tutorial's constant-LR, fixed-epoch
run stays the default. Both keep plain state, saved in the resumable state every epoch."""

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
