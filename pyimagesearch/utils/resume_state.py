"""The resumable state a training run writes after every epoch, and reading it back.

It is a checkpoint (state dict + metadata, ``weights_only`` loadable) with a ``resume`` entry:
optimizer and gradient-scaler state, the history so far, the best-so-far values, the learning
rate schedule and early stopping, every random number generator's state (Python, NumPy,
torch, CUDA, and each DataLoader generator the run made, per torchrun process) and the
settings a continuation must share. Restoring all of it at the start of the next epoch makes a
resumed run (CPU, ``--num-workers 0``) end with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from .errors import UserError
from .fileio import read_torch

# what every resumable state holds besides the trained weights
STATE_KEYS = ("optimizer", "epoch", "history", "best_val_acc", "schedule", "stopping", "rng", "settings")

def rng_state(generators: list[torch.Generator]) -> dict[str, Any]:
    """Every random state of this process, as plain types and tensors (weights_only loads them)."""
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    version, internal, python_gauss = random.getstate()
    state = {
        "python": [version, list(internal), python_gauss],
        "numpy": [kind, keys.tolist(), int(position), int(has_gauss), float(gauss)],
        "torch": torch.get_rng_state(),
        "generators": [g.get_state() for g in generators],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], generators: list[torch.Generator]) -> None:
    version, internal, python_gauss = state["python"]
    random.setstate((version, tuple(internal), python_gauss))
    kind, keys, position, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), position, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if len(state["generators"]) != len(generators):
        raise UserError("The resumable state was written by a run that made another number of data loaders; "
                        "resume with the same script and the same --feature-cache/--cache-views settings.")
    for generator, saved in zip(generators, state["generators"]):
        generator.set_state(saved)


def load(path: str) -> dict[str, Any]:
    payload = read_torch(path, missing=f"--resume: there is no resumable state at '{path}' (each epoch writes one "
                                      "beside --model). Run without --resume to start from the beginning, or pass the "
                                      "--model of the run to continue.",
                         unreadable=f"--resume: '{path}' cannot be read ({{reason}}). Delete it and run without --resume.")
    if not isinstance(payload, dict) or not isinstance(payload.get("resume"), dict):
        raise UserError(f"--resume: '{path}' holds no resumable state; run without --resume.")
    state = payload["resume"]
    missing = [key for key in STATE_KEYS if key not in state]
    if missing or not isinstance(payload.get("model"), dict) or not isinstance(state.get("settings"), dict):
        raise UserError(f"--resume: '{path}' is incomplete (it lacks {missing or ['model']}); it was not written by "
                        "this version of the scripts or was damaged. Delete it and run without --resume.")
    return payload


def damaged(path: str, what: str) -> UserError:
    return UserError(f"--resume: '{path}' is damaged or incomplete ({what}); it cannot be continued. Delete it and "
                     "run without --resume (or with another --model to keep it).")


def checked_history(history: Any, epoch: int) -> list[dict[str, Any]]:
    """The saved per-epoch records: one dict per epoch trained, numbered 1 to ``epoch``."""
    if not isinstance(history, list) or len(history) != epoch or not all(isinstance(r, dict) for r in history):
        raise ValueError(f"its history does not hold {epoch} epoch record(s)")
    if [r.get("epoch") for r in history] != list(range(1, epoch + 1)):
        raise ValueError("its history's epochs are not 1 to the last one")
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "seconds"):
        if not all(isinstance(r.get(key), (int, float)) for r in history):
            raise ValueError(f"its history lacks {key!r}")
    return list(history)


def check_settings(saved: dict[str, Any], current: dict[str, Any], keys: tuple[str, ...], path: str,
                   before: dict[str, Any] | None = None) -> None:
    """Refuse to continue a run whose ``keys`` settings differ, naming each difference. A key that
    an older state file lacks is compared as ``before[key]``, what such a run did (a run from
    before --balanced was unweighted), and not compared at all when ``before`` does not say."""
    before = before or {}
    different = []
    for key in keys:
        if key not in saved and key not in before:
            continue
        then = saved.get(key, before.get(key))
        if then != current.get(key):
            different.append(f"{key}: {then!r} then, {current.get(key)!r} now")
    if different:
        raise UserError(f"--resume: '{path}' was written with other settings, and training cannot continue across "
                        f"them ({'; '.join(different)}). Use the same settings, or start a new run without --resume "
                        "(with another --model to keep this one).")
