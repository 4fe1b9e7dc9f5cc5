"""The files a training run keeps beside --model, and their names: the final model, the best one
so far, the state that --resume continues from, the history beside --plot and the report.

One object owns the checkpoints, and the one list of settings a resumed run must share with the
run it continues (``RESUME_SETTINGS``): what is saved is what is checked. Reading and checking a
saved state, and every random generator's state, are in ``utils/resume_state.py``.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

import torch
from torch import nn

from . import checkpoint, config
from .reports.report import REPORT_SUFFIXES
from .utils import fileio
from .utils import resume_state as resume
from .utils.distributed import gather_objects, is_distributed, is_main_process, rank, unwrap, world_size
from .utils.errors import UserError, first_line
from .utils.weights import weights_identity

# what a continuation must share with the run it continues
RESUME_SETTINGS = ("head", "class_names", "image_size", "weights", "world_size", "feature_cache", "cache_views", "seed",
                   "balanced")
# what a state from before a setting existed did: it is compared as that
SETTINGS_BEFORE = {"balanced": False}
HISTORY_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_balanced_acc", "lr", "train_count",
                   "val_count", "trainable_params", "seconds", "resumed", "stopped_early")


def _beside(path: str, suffix: str, default_ext: str = ".pth") -> str:
    stem, ext = os.path.splitext(path)
    return f"{stem}{suffix}{ext or default_ext}"


def best_model_path(model_path: str) -> str:
    """output/finetune_model.pth -> output/finetune_model_best.pth"""
    return _beside(model_path, "_best")


def resume_path(model_path: str) -> str:
    """output/finetune_model.pth -> output/finetune_model_resume.pth"""
    return _beside(model_path, "_resume")


def history_path(plot_path: str, extension: str = ".json") -> str:
    """output/finetune.png -> output/finetune_history.json (or .csv)"""
    return f"{os.path.splitext(plot_path)[0]}_history{extension}"


def report_prefix(model_path: str) -> str:
    """output/finetune_model.pth -> output/finetune_model (report files are named after the model)."""
    return os.path.splitext(model_path)[0]


def check_outputs(model_path: str, plot_path: str) -> None:
    """--model, --plot and every file named after them may be written, none replaces a file this
    project did not write, and no two are the same file: checked before any image is read, so a
    mistake costs seconds, not epochs."""
    fileio.check_writable_file(plot_path, "--plot")
    fileio.check_regular_or_absent(plot_path, "--plot")
    fileio.check_writable_file(model_path, "--model")
    for path in (model_path, best_model_path(model_path), resume_path(model_path)):
        fileio.check_regular_or_absent(path, "--model")
        if os.path.exists(path) and not checkpoint.is_checkpoint(path):
            raise UserError(f"--model: '{path}' exists and is not a checkpoint this project wrote; it would be "
                            "overwritten. Move it away or pass another --model path.")
    outputs = {"--model": model_path, "the best model": best_model_path(model_path),
               "the resumable state": resume_path(model_path), "--plot": plot_path,
               "the history": history_path(plot_path), "the history CSV": history_path(plot_path, ".csv")}
    prefix = report_prefix(model_path)
    outputs.update({f"the report's {suffix}": f"{prefix}{suffix}" for suffix in REPORT_SUFFIXES})
    seen: dict[str, str] = {}
    for what, path in outputs.items():
        real = os.path.realpath(path)
        if real in seen:
            raise UserError(f"{seen[real]} and {what} would both be written to '{path}'. Give --model and --plot "
                            "different names (for example output/finetune_model.pth and output/finetune.png).")
        seen[real] = what


def resume_settings(args: argparse.Namespace, head: str, class_names: list[str]) -> dict[str, Any]:
    processes = world_size() if is_distributed() else int(os.environ.get("WORLD_SIZE", 1))
    settings = {"head": head, "class_names": list(class_names), "image_size": args.image_size,
                "weights": weights_identity(args.weights), "world_size": processes,
                "feature_cache": getattr(args, "feature_cache", None), "cache_views": getattr(args, "cache_views", None),
                "seed": args.seed, "balanced": args.balanced}
    assert tuple(settings) == RESUME_SETTINGS
    return settings


class Checkpointer:
    """Best, last and resumable checkpoints of one run (written by the main process only).

    Built before the model, it reads and checks the resumable state when --resume is given, so
    a run that cannot continue stops before any weights load or feature is computed. ``track``
    names what training changes; ``restore`` puts the saved state back into it;
    ``end_of_epoch`` saves the best model and the resumable state before the epoch is logged.
    """

    def __init__(self, args: argparse.Namespace, head: str, class_names: list[str], train_images: str = "") -> None:
        self.args, self.head, self.class_names = args, head, list(class_names)
        self.train_images = train_images  # a digest of the training files' names, sizes and times
        self.path, self.best_path, self.resume_path = args.model, best_model_path(args.model), resume_path(args.model)
        self.settings = resume_settings(args, head, class_names)
        self.best_score = -1.0  # the best value of best_key: val_acc, or val_balanced_acc under --balanced
        self.best_key = "val_balanced_acc" if args.balanced else "val_acc"
        self.saved_epoch = 0
        self.best_epoch = 0  # the epoch the best model is from
        self.resumed: dict[str, Any] | None = None
        if args.resume:
            self.resumed = resume.load(self.resume_path)
            resume.check_settings(self.resumed["resume"]["settings"], self.settings, RESUME_SETTINGS, self.resume_path,
                                  before=SETTINGS_BEFORE)
            done = self.resumed["resume"]["epoch"]
            if not isinstance(done, int) or isinstance(done, bool):
                raise resume.damaged(self.resume_path, f"its epoch is {done!r}")
            if done >= args.epochs:
                raise UserError(f"--resume: '{self.resume_path}' has already trained {done} epoch(s), as many as "
                                f"--epochs {args.epochs}. Pass a larger --epochs to train further.")

    def meta(self, epoch: int, metrics: dict[str, Any]) -> dict[str, Any]:
        """The plain metadata every checkpoint carries (inference rebuilds the model from it)."""
        return {
            "head": self.head, "class_names": list(self.class_names), "image_size": self.args.image_size,
            "mean": list(config.MEAN), "std": list(config.STD), "epoch": epoch,
            "metrics": {k: float(v) for k, v in metrics.items()},
            "config": {k: v for k, v in vars(self.args).items() if isinstance(v, (str, int, float, bool, type(None)))},
        }

    def track(self, *, model: nn.Module, trained: nn.Module, optimizer: torch.optim.Optimizer, schedule, stopping,
              generators: list[torch.Generator], scaler: torch.amp.GradScaler | None = None) -> None:
        """What the resumable state holds: the trained layers of ``model`` (``trained`` is the model
        or its head; the rest comes from --weights again), the optimizer, gradient scaler, learning
        rate schedule, early stopping and each DataLoader generator in ``generators``."""
        self.model, self.optimizer, self.scaler = model, optimizer, scaler
        self.schedule, self.stopping, self.generators = schedule, stopping, generators
        learning = {id(p) for p in unwrap(trained).parameters() if p.requires_grad}
        self.learned = [name for name, p in unwrap(model).named_parameters() if id(p) in learning]

    def restore(self) -> list[dict[str, Any]]:
        """Put the resumable state back (with --resume) and return the history so far ([] otherwise)."""
        if self.resumed is None:
            return []
        state = self.resumed["resume"]
        if sorted(self.resumed["model"]) != sorted(self.learned):
            raise UserError(f"--resume: '{self.resume_path}' holds other trained layers than this run trains; resume "
                            "with the same script and settings.")
        try:  # everything or nothing: a damaged state is one paragraph, not a traceback
            unwrap(self.model).load_state_dict(self.resumed["model"], strict=False)
            self.optimizer.load_state_dict(state["optimizer"])
            if self.scaler is not None and state.get("scaler"):
                self.scaler.load_state_dict(state["scaler"])
            self.schedule.load_state_dict(state["schedule"])
            self.stopping.load_state_dict(state["stopping"])
            resume.set_rng_state(state["rng"][rank()], self.generators)
            self.best_score, self.saved_epoch = float(state["best_val_acc"]), state["epoch"]
            history = resume.checked_history(state["history"], state["epoch"])
            self.best_epoch = max(history, key=lambda r: r.get(self.best_key, -1.0))["epoch"] if history else 0
        except (KeyError, IndexError, TypeError, ValueError, RuntimeError, AttributeError) as error:
            raise resume.damaged(self.resume_path, f"{type(error).__name__}: {first_line(error)}") from None
        saved_images = state.get("train_images")
        if saved_images and self.train_images and saved_images != self.train_images:
            print(f"[WARN] --resume: the training images in '{self.args.train}' changed since epoch {state['epoch']} "
                  "(files added, removed or edited); training continues on the images as they are now, so the run "
                  "is no longer the one it would have been", flush=True)
        return history

    def end_of_epoch(self, history: list[dict[str, Any]]) -> None:
        """Save the best model when validation accuracy improved (balanced accuracy with --balanced),
        and the resumable state."""
        record = history[-1]
        epoch = int(record["epoch"])
        if record[self.best_key] > self.best_score:
            self.best_epoch = epoch
            if is_main_process():
                checkpoint.save(self.best_path, self.model, self.meta(epoch, record))
        self.best_score = max(self.best_score, record[self.best_key])  # the same on every process
        rng = gather_objects(resume.rng_state(self.generators))  # a collective: every process takes part
        if is_main_process():
            state = {"optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict() if self.scaler else None,
                     "epoch": epoch, "history": history, "best_val_acc": self.best_score,  # the key older states have
                     "schedule": self.schedule.state_dict(), "stopping": self.stopping.state_dict(), "rng": rng,
                     "settings": self.settings, "train_images": self.train_images}
            checkpoint.save(self.resume_path, self.model, {**self.meta(epoch, record), "resume": state}, only=self.learned)
        self.saved_epoch = epoch

    def save_final(self, history: list[dict[str, Any]], plot_path: str) -> None:
        """The final model, and the history as JSON and CSV beside the plot (main process)."""
        checkpoint.save(self.path, self.model, self.meta(len(history), history[-1]))
        fileio.write_text(history_path(plot_path), json.dumps(history, indent=2))
        fileio.write_csv(history_path(plot_path, ".csv"), HISTORY_COLUMNS,
                         ([record.get(c, "") for c in HISTORY_COLUMNS] for record in history))

    def describe(self, history: list[dict[str, Any]]) -> str:
        best = max(history, key=lambda r: r.get(self.best_key, -1.0))
        what = "balanced val accuracy" if self.best_key == "val_balanced_acc" else "val accuracy"
        return f"{self.path} (final), {self.best_path} (best {what} {best[self.best_key]:.4f} at epoch {best['epoch']})"
