"""What both training scripts share around their epoch loop: the flags, and the session that
checks the outputs, picks the device and precision, and loads the weights.

The loop itself, and everything that differs between feature extraction and fine-tuning, is in
the scripts.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from . import cli, config, fileio, paths, report
from .checkpoint import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE
from .checkpointer import Checkpointer, check_output_paths
from .create_dataloaders import make_loader
from .dataset import imbalance_warning
from .distributed import init_distributed, is_distributed, is_main_process, rank, shutdown_distributed, unwrap, wrap_ddp
from .errors import UserError
from .freezing import fold_frozen_batchnorm
from .images import NOT_REGULAR
from .memory import keep_allocator_memory
from .runtime import (
    Compute,
    resolve_device,
    resolve_workers,
    seed_everything,
    start_worker_server,
    worker_start_method,
)
from .schedule import SCHEDULES
from .stand_in import STAND_IN, stand_in_from_folder
from .weights import load_backbone_weights


def training_parser(description: str, *, batch_size: int, lr: float, plot: str, model: str) -> argparse.ArgumentParser:
    """Flags shared by both training scripts; every default comes from config.py."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     parents=[cli.runtime_parser()])
    add = parser.add_argument
    add("--train", default=config.TRAIN, help="training image folder (default: %(default)s)")
    add("--val", default=config.VAL, help="validation image folder (default: %(default)s)")
    add("--epochs", type=cli.positive_int, default=config.EPOCHS, help="epochs (default: %(default)s)")
    add("--batch-size", type=cli.positive_int, default=batch_size,
        help="images per batch (not per optimizer step, see --grad-accum-steps), per process under torchrun "
             "(default: %(default)s)")
    add("--lr", type=cli.positive_float, default=lr, help="Adam learning rate (default: %(default)s)")
    add("--grad-accum-steps", type=cli.positive_int, default=config.GRAD_ACCUM_STEPS,
        help="batches per optimizer step (default: %(default)s)")
    add("--image-size", type=cli.positive_int, default=config.IMAGE_SIZE, help="input size (default: %(default)s)")
    add("--weights", default=config.WEIGHTS,
        help=f"IMAGENET1K_V1, IMAGENET1K_V2, DEFAULT, a .pth state dict, or none: {STAND_IN}, an offline stand-in "
             "for smoke runs and the demo, never applied to real weights (default: %(default)s)")
    add("--seed", type=int, default=config.SEED, help="random seed (default: %(default)s)")
    add("--compile", action=argparse.BooleanOptionalAction, default=config.COMPILE,
        help="torch.compile the trained part (default: %(default)s)")
    add("--plot", default=plot, help="training-history plot (default: %(default)s)")
    add("--model", default=model, help="final checkpoint; the best one goes beside it (default: %(default)s)")
    add("--report", action=argparse.BooleanOptionalAction, default=True,
        help="write the validation report after training (default: %(default)s)")
    add("--resume", action="store_true",
        help="continue the run whose --model this is, from the state written after its last complete epoch "
             "(<model>_resume.pth); with a larger --epochs, extend a finished run")
    add("--patience", type=cli.non_negative_int, default=config.PATIENCE,
        help="stop when the validation loss has not improved for N epochs; 0 = never (default: %(default)s)")
    add("--lr-scheduler", choices=SCHEDULES, default=config.LR_SCHEDULER,
        help="learning rate per epoch: none (the tutorial's constant rate), cosine, step (a tenth after each third), "
             "plateau (a tenth when the validation loss stalls for 2 epochs) (default: %(default)s)")
    add("--balanced", action=argparse.BooleanOptionalAction, default=config.BALANCED,
        help="weight the loss by class, images / (classes x images of the class), so that small classes count as "
             "much as large ones (scikit-learn's 'balanced'); the reported losses are the weighted ones "
             "(default: %(default)s)")
    add("--warmup-epochs", type=cli.non_negative_int, default=config.WARMUP_EPOCHS,
        help="epochs of linear learning-rate warm-up before the schedule (default: %(default)s)")
    return parser


def check_outputs(args: argparse.Namespace) -> None:
    """Every output path is usable before any image is read: a mistake here costs seconds, not epochs."""
    if not MIN_IMAGE_SIZE <= args.image_size <= MAX_IMAGE_SIZE:
        raise UserError(f"--image-size {args.image_size}: use {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE} pixels (the "
                        "tutorial uses 224).")
    cli.check_plot_path(args.plot)
    fileio.check_writable_file(args.plot, "--plot")
    fileio.check_regular_or_absent(args.plot, "--plot")
    check_output_paths(args)
    outputs = {"--model": args.model, "the best model": paths.best_model_path(args.model),
               "the resumable state": paths.resume_path(args.model), "--plot": args.plot,
               "the history": paths.history_path(args.plot), "the history CSV": paths.history_path(args.plot, ".csv")}
    prefix = paths.report_prefix(args.model)
    outputs.update({f"the report's {suffix}": f"{prefix}{suffix}" for suffix in report.REPORT_SUFFIXES})
    seen: dict[str, str] = {}
    for what, path in outputs.items():
        real = os.path.realpath(path)
        if real in seen:
            raise UserError(f"{seen[real]} and {what} would both be written to '{path}'. Give --model and --plot "
                            "different names (for example output/finetune_model.pth and output/finetune.png).")
        seen[real] = what


def class_weights(ds, balanced: bool, device: torch.device) -> torch.Tensor | None:
    """With ``balanced``, scikit-learn's "balanced" class weights for ``ds``'s images: images /
    (classes x images of the class); None (every image counts once) otherwise."""
    if not balanced:
        return None
    counts = torch.tensor(class_counts(ds), dtype=torch.float64)
    weights = counts.sum() / (len(ds.classes) * counts.clamp(min=1))
    return weights.float().to(device)


def class_counts(ds) -> list[int]:
    """Images per class of an ImageFolder, in class order (from its labels; no image is read)."""
    return np.bincount(ds.targets, minlength=len(ds.classes)).tolist()


def files_digest(ds) -> str:
    """The training files' names, labels, sizes and modification times (cheap: no image is read),
    so a resumed run can say when the images changed under it."""
    digest = hashlib.sha256()
    for path, label in ds.samples:
        info = os.stat(path)
        digest.update(f"{os.path.relpath(path, ds.root)}\0{label}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def epoch_record(epoch: int, train: dict[str, float], val: dict[str, float], optimizer: torch.optim.Optimizer,
                 seconds: float, trained: nn.Module, **flags: bool) -> dict[str, Any]:
    """One row of the history: the epoch's metrics, learning rate, time and trainable parameters;
    ``flags`` that are true (resumed, stopped_early) are recorded too."""
    record = {
        "epoch": epoch + 1,
        "train_loss": train["loss"], "train_acc": train["accuracy"], "train_count": train["count"],
        "val_loss": val["loss"], "val_acc": val["accuracy"], "val_count": val["count"],
        "lr": optimizer.param_groups[0]["lr"], "seconds": seconds,
        "trainable_params": sum(p.numel() for p in unwrap(trained).parameters() if p.requires_grad),
    }
    record.update({name: True for name, value in flags.items() if value})
    return record


class TrainingSession:
    """One training script's process: outputs checked, device, precision, loader workers and the C
    allocator's policy (``trains_body``: fine-tuning) chosen, seeds set; under torchrun it joins
    the process group and, as a context manager, leaves it on the way out, also when something
    fails."""

    def __init__(self, args: argparse.Namespace, *, trains_body: bool = False) -> None:
        check_outputs(args)
        self.args = args
        self.device = resolve_device(args.device)
        self.num_workers = resolve_workers(args.num_workers, self.device)
        # fine-tuning's workers start from a fork server (Linux): they do not share this process's pages
        self.start_method = worker_start_method(body_trains=trains_body)
        # before the first large allocation; "auto" keeps it unless workers fork from a trainer
        keep_allocator_memory(config.KEEP_ALLOCATOR_MEMORY, backward=trains_body,
                              workers_fork=self.num_workers > 0 and self.start_method == "fork")
        start_worker_server(self.num_workers, self.start_method)
        self.compute = Compute.from_settings(self.device, args.amp, args.channels_last)
        self.loader_options = {"num_workers": self.num_workers, "device": str(self.device), "seed": args.seed,
                               "start_method": self.start_method}
        self.started = time.perf_counter()
        self.checkpointer: Checkpointer | None = None

    def __enter__(self) -> TrainingSession:
        init_distributed(self.device)
        # the same seed on every process: a randomly initialised body must be identical everywhere
        seed_everything(self.args.seed)
        epochs = self.args.epochs
        for flag, value in (("--warmup-epochs", self.args.warmup_epochs),
                            ("--freeze-epochs", getattr(self.args, "freeze_epochs", 0))):
            if value >= epochs:
                self.log(f"[WARN] {flag} {value} is not shorter than the run (--epochs {epochs}): "
                         + ("the learning rate never reaches --lr" if flag == "--warmup-epochs"
                            else "the body is never unfrozen, only the head trains"))
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        shutdown_distributed()
        saved = self.checkpointer.saved_epoch if self.checkpointer else 0
        if exc_type is not None and issubclass(exc_type, KeyboardInterrupt) and saved:
            print(f"[INFO] stopped after epoch {saved}; continue with the same command and --resume (state in "
                  f"{self.checkpointer.resume_path})", flush=True)

    def log(self, message: str) -> None:
        if is_main_process():
            tqdm.write(message)
            sys.stdout.flush()

    def checkpointer_for(self, train_ds, val_ds, head: str) -> Checkpointer:
        """The class names both folders share, checked, and the run's checkpointer (which checks a
        --resume state now, before any model is built or feature computed)."""
        args = self.args
        if train_ds.classes != val_ds.classes:
            raise UserError(f"The class folders differ between '{args.train}' {train_ds.classes} and '{args.val}' "
                            f"{val_ds.classes}. Rebuild both with python build_dataset.py.")
        for path in train_ds.skipped + val_ds.skipped:
            self.log(f"[WARN] skipped {path}: {NOT_REGULAR}")
        self.checkpointer = Checkpointer(args, head, train_ds.classes, files_digest(train_ds))
        warning = imbalance_warning(dict(zip(train_ds.classes, class_counts(train_ds))))
        if warning:
            self.log(warning.replace("the classes are", "the training classes are"))
        self.log(f"[INFO] {len(train_ds)} training and {len(val_ds)} validation images, {len(train_ds.classes)} "
                 f"classes; running on {self.compute.describe()}, {self.num_workers} loader worker(s)")
        return self.checkpointer

    def backbone_weights(self) -> dict[str, Any] | None:
        if self.args.weights.lower() == "none":
            self.log(f"[WARN] --weights none: no ImageNet weights; the backbone is a stand-in, {STAND_IN} (smoke runs "
                     "and the offline demo only)")
        return load_backbone_weights(self.args.weights)

    def prepare(self, model: nn.Module) -> nn.Module:
        """Move to the device and memory format, build the stand-in when the weights are random,
        fold frozen BatchNorm layers (call after freezing), then give each process its own
        randomness for augmentation and dropout."""
        args = self.args
        model = self.compute.prepare(model)
        if args.weights.lower() == "none":
            seen = stand_in_from_folder(model, args.train, args.image_size, self.compute, seed=args.seed,
                                        batch_size=args.batch_size, num_workers=self.num_workers,
                                        start_method=self.start_method)
            self.log(f"[INFO] --weights none stand-in ready: residual blocks start as the identity, BatchNorm "
                     f"statistics calibrated on {seen} training images")
        if args.fold_bn:
            fold_frozen_batchnorm(model)
        # initial weights are identical everywhere by now; the draws that follow should not be
        seed_everything(args.seed + rank())
        return model

    def parallel(self, trained: nn.Module, find_unused: bool = False) -> nn.Module:
        """DDP around the trained module under torchrun, then torch.compile when asked (compiling the
        DDP module lets the compiler split its graph at the gradient buckets)."""
        trained = wrap_ddp(trained, self.device, find_unused)
        return torch.compile(trained) if self.args.compile else trained

    def epochs(self, start: int) -> Iterator[int]:
        """Epoch numbers from ``start`` (after --resume) to --epochs, with a progress bar."""
        total = self.args.epochs
        if start:
            self.log(f"[INFO] resuming after epoch {start} of {total} from {self.checkpointer.resume_path}")
        self.log(f"[INFO] training the network for {total} epochs...")
        return iter(tqdm(range(start, total), desc="epochs", unit="epoch", dynamic_ncols=True, initial=start,
                         total=total, disable=not (self.args.progress and is_main_process())))

    def log_total_time(self, history: list[dict[str, Any]]) -> None:
        epochs_time = sum(r["seconds"] for r in history)
        self.log(f"[INFO] total time taken to train the model: {time.perf_counter() - self.started:.2f}s (set-up, "
                 f"weights and feature caching included; the epochs alone: {epochs_time:.2f}s)")

    def report(self, model: nn.Module, val_ds,
               val_predictions: Callable[[], tuple[torch.Tensor, torch.Tensor]] | None = None) -> None:
        """The validation report (main process). ``val_predictions`` gives (probabilities, labels)
        when the run already has them (feature extraction's cached features); otherwise the model
        is evaluated again. The other processes leave the process group first, so none of them
        waits on a collective while the main process writes the report."""
        main = is_main_process()  # asked before leaving the group: afterwards every process is "rank 0"
        distributed = is_distributed()
        shutdown_distributed()
        if not main or not self.args.report:
            return
        prefix = paths.report_prefix(self.args.model)
        if val_predictions is not None and not distributed:
            probabilities, labels = val_predictions()
            report.publish(probabilities, labels, val_ds.classes, val_ds, prefix, config.MEAN, config.STD)
            return
        val_loader = make_loader(val_ds, self.args.batch_size, False, **self.loader_options)  # no group now: all of it
        report.evaluate_and_report(unwrap(model), val_loader, val_ds.classes, self.compute, prefix, config.MEAN,
                                   config.STD, progress=self.args.progress)
