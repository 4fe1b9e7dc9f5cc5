"""What both training scripts share around their epoch loop: the session that checks the outputs,
picks the device and precision and loads the weights, and the history's rows.

The loop itself, and everything that differs between feature extraction and fine-tuning, is in
the scripts; their flags are in ``arguments.py``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from . import checkpointer, config
from .checkpointer import Checkpointer
from .create_dataloaders import eval_image_folder, make_loader
from .data.split import imbalance_warning
from .engine import evaluate_and_report
from .reports.report import publish
from .utils import cli, settings
from .utils.digest import folder_digest
from .utils.distributed import init_distributed, is_distributed, is_main_process, rank, shutdown_distributed, unwrap, wrap_ddp
from .utils.errors import UserError
from .utils.fileio import NOT_REGULAR
from .utils.memory import keep_allocator_memory
from .utils.runtime import Compute, resolve_device, resolve_workers, seed_everything, start_worker_server, worker_start_method
from .utils.stand_in import CALIBRATION_IMAGES, STAND_IN, offline_stand_in
from .utils.text import printable
from .utils.weights import load_backbone_weights


def class_counts(ds) -> list[int]:
    """Images per class of an ImageFolder, in class order (from its labels; no image is read)."""
    return np.bincount(ds.targets, minlength=len(ds.classes)).tolist()


def class_weights(ds, balanced: bool, device: torch.device) -> torch.Tensor | None:
    """With ``balanced``, scikit-learn's "balanced" class weights for ``ds``'s images: images /
    (classes x images of the class); None (every image counts once) otherwise."""
    if not balanced:
        return None
    from sklearn.utils.class_weight import compute_class_weight  # only here: scikit-learn takes 1.5 s to import

    weights = compute_class_weight("balanced", classes=np.arange(len(ds.classes)), y=ds.targets)
    return torch.tensor(weights, dtype=torch.float32, device=device)


def epoch_record(epoch: int, train: dict[str, float], val: dict[str, float], optimizer: torch.optim.Optimizer,
                 seconds: float, trained: nn.Module, **flags: bool) -> dict[str, Any]:
    """One row of the history: the epoch's metrics, learning rate, time and trainable parameters;
    ``flags`` that are true (resumed, stopped_early) are recorded too."""
    record = {
        "epoch": epoch + 1,
        "train_loss": train["loss"], "train_acc": train["accuracy"], "train_count": train["count"],
        "val_loss": val["loss"], "val_acc": val["accuracy"], "val_count": val["count"],
        "val_balanced_acc": val["balanced_accuracy"],
        "lr": optimizer.param_groups[0]["lr"], "seconds": seconds,
        "trainable_params": sum(p.numel() for p in unwrap(trained).parameters() if p.requires_grad),
    }
    record.update({name: True for name, value in flags.items() if value})
    return record


class EpochEnd:
    """The bookkeeping after each epoch's training and validation passes, in one call and in this
    order: the learning-rate schedule sees the validation loss, early stopping decides, the epoch's
    record joins ``history``, and the checkpointer saves the best model and the resumable state,
    before the script logs the epoch. ``record`` returns whether early stopping ends the run."""

    def __init__(self, checkpointer: Checkpointer, schedule, stopping, optimizer: torch.optim.Optimizer,
                 trained: nn.Module, history: list[dict[str, Any]]) -> None:
        self.checkpointer, self.schedule, self.stopping = checkpointer, schedule, stopping
        self.optimizer, self.trained, self.history = optimizer, trained, history
        self.start = len(history)  # epochs a --resume brought back

    def record(self, epoch: int, train: dict[str, float], val: dict[str, float], seconds: float) -> bool:
        self.schedule.observe(val["loss"])
        stop = self.stopping.should_stop(val["loss"])
        self.history.append(epoch_record(epoch, train, val, self.optimizer, seconds, self.trained,
                                         resumed=epoch == self.start > 0, stopped_early=stop))
        self.checkpointer.end_of_epoch(self.history)
        return stop


def warn_about_short_runs(args: argparse.Namespace, log: Callable[[str], None]) -> None:
    """--warmup-epochs or --freeze-epochs as long as the run itself: legal, but rarely meant."""
    for flag, value in (("--warmup-epochs", args.warmup_epochs), ("--freeze-epochs", getattr(args, "freeze_epochs", 0))):
        if value >= args.epochs:
            log(f"[WARN] {flag} {value} is not shorter than the run (--epochs {args.epochs}): "
                + ("the learning rate never reaches --lr" if flag == "--warmup-epochs"
                   else "the body is never unfrozen, only the head trains"))


def check_classes_and_log_skips(train_ds, val_ds, args: argparse.Namespace, log: Callable[[str], None]) -> None:
    """The two folders must hold the same classes; files skipped and a class imbalance are logged."""
    if getattr(args, "find_lr", False) and len(train_ds) < 2:
        raise UserError(f"--find-lr: '{args.train}' holds {len(train_ds)} training image(s); the range test takes a "
                        "step per batch over a hundred batches, and one image makes every batch the same. Add "
                        "images, or run without --find-lr.")
    if train_ds.classes != val_ds.classes:
        raise UserError(f"The class folders differ between '{args.train}' {train_ds.classes} and '{args.val}' "
                        f"{val_ds.classes}. Rebuild both with python build_dataset.py.")
    for path in train_ds.skipped + val_ds.skipped:
        log(f"[WARN] skipped {printable(path)}: {NOT_REGULAR}")
    warning = imbalance_warning(dict(zip(train_ds.classes, class_counts(train_ds))))
    if warning:
        log(warning.replace("the classes are", "the training classes are"))


def calibration_loader(args: argparse.Namespace, loader_options: dict):
    """CALIBRATION_IMAGES un-augmented training images drawn with --seed (the same ones on every
    torchrun process): what the offline stand-in's BatchNorm statistics are measured on."""
    ds = eval_image_folder(args.train, args.image_size)
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(args.seed))
    subset = torch.utils.data.Subset(ds, order[:CALIBRATION_IMAGES].tolist())
    return make_loader(subset, min(32, args.batch_size * 4), False, split_across_processes=False, **loader_options)


def write_validation_report(model: nn.Module, val_ds, args: argparse.Namespace, compute: Compute, loader_options: dict,
                            val_predictions: Callable[[], tuple[torch.Tensor, torch.Tensor]] | None,
                            calibration: dict | None = None) -> None:
    """The report on the validation set, from ``val_predictions`` (probabilities, labels) when the run
    has them (feature extraction's cached features), else by evaluating the model again; with
    ``calibration`` (the temperature's judgement), its figures and reliability diagram too."""
    prefix = checkpointer.report_prefix(args.model)
    if val_predictions is not None:
        probabilities, labels = val_predictions()
        publish(probabilities, labels, val_ds.classes, val_ds, prefix, config.MEAN, config.STD, calibration=calibration)
        return
    val_loader = make_loader(val_ds, args.batch_size, False, **loader_options)  # no process group now: all of it
    evaluate_and_report(unwrap(model), val_loader, val_ds.classes, compute, prefix, config.MEAN, config.STD,
                        progress=args.progress, calibration=calibration)


class TrainingSession:
    """One training script's process: outputs checked; device, precision, loader workers and the C
    allocator's policy (``trains_body``: fine-tuning) chosen. As a context manager it seeds every
    generator, joins the torchrun process group and leaves it on the way out, also on failure."""

    def __init__(self, args: argparse.Namespace, *, trains_body: bool = False) -> None:
        cli.check_plot_path(args.plot)
        checkpointer.check_outputs(args.model, args.plot)
        self.args = args
        self.device = resolve_device(args.device)
        self.num_workers = resolve_workers(args.num_workers, self.device)
        # fine-tuning's workers start from a fork server (Linux): they do not share this process's pages
        self.start_method = worker_start_method(settings.WORKER_START_METHOD, body_trains=trains_body)
        # before the first large allocation; "auto" keeps it unless workers fork from a trainer
        keep_allocator_memory(settings.KEEP_ALLOCATOR_MEMORY, backward=trains_body,
                              workers_fork=self.num_workers > 0 and self.start_method == "fork")
        start_worker_server(self.num_workers, self.start_method)
        self.compute = Compute.from_settings(self.device, args.amp, args.channels_last, settings.FORWARD_CHUNK)
        self.loader_options = {"num_workers": self.num_workers, "device": str(self.device), "seed": args.seed,
                               "start_method": self.start_method}
        self.started = time.perf_counter()
        self.checkpointer: Checkpointer | None = None

    def __enter__(self) -> TrainingSession:
        init_distributed(self.device)
        seed_everything(self.args.seed)  # the same on every process: a random body must be identical everywhere
        warn_about_short_runs(self.args, self.log)
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

    def check_and_describe_data(self, train_ds, val_ds) -> None:
        """Refuse training and validation folders with other classes; log the files skipped, a
        class imbalance, and how many images, classes and workers the run has."""
        check_classes_and_log_skips(train_ds, val_ds, self.args, self.log)
        self.log(f"[INFO] {len(train_ds)} training and {len(val_ds)} validation images, {len(train_ds.classes)} "
                 f"classes; running on {self.compute.describe()}")
        for name, ds in (("training", train_ds), ("validation", val_ds)):
            self.log(f"[INFO] {name} photos: {ds.pipeline}")

    def checkpointer_for(self, train_ds, head: str) -> Checkpointer:
        """The run's checkpointer, which reads and checks a --resume state now, before any model is
        built or feature computed."""
        images = folder_digest(train_ds.samples, train_ds.root, content=False)
        self.checkpointer = Checkpointer(self.args, head, train_ds.classes, images)
        return self.checkpointer

    def backbone_weights(self) -> dict[str, Any] | None:
        if self.args.weights.lower() == "none":
            self.log(f"[WARN] --weights none: no ImageNet weights; the backbone is a stand-in, {STAND_IN} (smoke runs "
                     "and the offline demo only)")
        return load_backbone_weights(self.args.weights)

    def calibrate_stand_in(self, model: nn.Module) -> None:
        """With --weights none only: make the random body the offline stand-in (utils/stand_in.py)."""
        if self.args.weights.lower() == "none":
            loader = calibration_loader(self.args, self.loader_options)
            seen = offline_stand_in(model, (self.compute.to_device(x) for x, _ in loader))
            self.log(f"[INFO] --weights none stand-in ready: residual blocks start as the identity, BatchNorm "
                     f"statistics calibrated on {seen} training images")

    def reseed_per_process(self) -> None:
        """Initial weights are identical on every process by now; augmentation and dropout should not be."""
        seed_everything(self.args.seed + rank())

    def ddp_and_compile(self, trained: nn.Module, find_unused: bool = False) -> nn.Module:
        """DDP around the trained module under torchrun, then torch.compile with --compile (compiling the
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

    def log_end_of_training(self, history: list[dict[str, Any]]) -> None:
        """Whether early stopping ended the run, and how long the whole run took."""
        if history and history[-1].get("stopped_early"):
            self.log(f"[INFO] early stopping after epoch {history[-1]['epoch']}: the validation loss has not improved "
                     "for the last epochs (--patience)")
        epochs_time = sum(r["seconds"] for r in history)
        self.log(f"[INFO] total time taken to train the model: {time.perf_counter() - self.started:.2f}s (set-up, "
                 f"weights and feature caching included; the epochs alone: {epochs_time:.2f}s)")

    def leave_group_calibrate_and_report(self, model: nn.Module, val_ds,
                               val_predictions: Callable[[], tuple[torch.Tensor, torch.Tensor]] | None = None,
                               calibrate: Callable[[], dict] | None = None) -> None:
        """Leave the process group (the other processes are done, so none waits on a collective while
        the main process works on alone), then on the main process ``calibrate`` the saved models
        (their temperature and novelty reference) and write the validation report (--report)."""
        main = is_main_process()  # asked before leaving the group: afterwards every process is "rank 0"
        distributed = is_distributed()
        shutdown_distributed()
        if not main:
            return
        calibration = calibrate() if calibrate is not None else None
        if self.args.report:
            write_validation_report(model, val_ds, self.args, self.compute, self.loader_options,
                                    None if distributed else val_predictions, calibration)
