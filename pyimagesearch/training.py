"""What both training scripts share: flags, set-up, data, checkpoints, plots and the report.

The scripts themselves say only what differs: the head, what is frozen, batch size and LR.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from . import checkpoint, cli, config, engine, fileio, plots, report
from .create_dataloaders import as_eval, eval_image_folder, make_loader, train_image_folder
from .errors import UserError
from .model import (
    CALIBRATION_IMAGES,
    STAND_IN,
    fold_frozen_batchnorm,
    load_backbone_weights,
    offline_stand_in,
    weights_identity,
)
from .resume import check_settings, resume_path, rng_state, set_rng_state
from .resume import load as load_resumable
from .runtime import (
    Precision,
    gather_objects,
    init_distributed,
    is_distributed,
    is_main_process,
    rank,
    resolve_amp,
    resolve_device,
    resolve_workers,
    seed_everything,
    shutdown_distributed,
    unwrap,
    world_size,
)
from .schedule import SCHEDULES, EarlyStopping, LearningRate


def training_parser(description: str, *, batch_size: int, lr: float, plot: str, model: str) -> argparse.ArgumentParser:
    """Flags shared by both training scripts; every default comes from config.py."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     parents=[cli.runtime_parser()])
    parser.add_argument("--train", default=config.TRAIN, help="training image folder (default: %(default)s)")
    parser.add_argument("--val", default=config.VAL, help="validation image folder (default: %(default)s)")
    parser.add_argument("--epochs", type=cli.positive_int, default=config.EPOCHS, help="epochs (default: %(default)s)")
    parser.add_argument("--batch-size", type=cli.positive_int, default=batch_size,
                        help="images per batch (not per optimizer step, see --grad-accum-steps), per process "
                             "under torchrun (default: %(default)s)")
    parser.add_argument("--lr", type=cli.positive_float, default=lr, help="Adam learning rate (default: %(default)s)")
    parser.add_argument("--grad-accum-steps", type=cli.positive_int, default=config.GRAD_ACCUM_STEPS,
                        help="batches per optimizer step (default: %(default)s)")
    parser.add_argument("--image-size", type=cli.positive_int, default=config.IMAGE_SIZE,
                        help="input size (default: %(default)s)")
    parser.add_argument("--weights", default=config.WEIGHTS,
                        help=f"IMAGENET1K_V1, IMAGENET1K_V2, DEFAULT, a .pth state dict, or none: {STAND_IN}, an "
                             "offline stand-in for smoke runs and the demo, never applied to real weights "
                             "(default: %(default)s)")
    parser.add_argument("--seed", type=int, default=config.SEED, help="random seed (default: %(default)s)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=config.COMPILE,
                        help="torch.compile the trained part (default: %(default)s)")
    parser.add_argument("--plot", default=plot, help="training-history plot (default: %(default)s)")
    parser.add_argument("--model", default=model, help="final checkpoint; the best one goes beside it (default: %(default)s)")
    parser.add_argument("--report", action=argparse.BooleanOptionalAction, default=True,
                        help="write the validation report after training (default: %(default)s)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run whose --model this is, from the state written after its last "
                             "complete epoch (<model>_resume.pth); with a larger --epochs, extend a finished run")
    parser.add_argument("--patience", type=cli.non_negative_int, default=config.PATIENCE,
                        help="stop when the validation loss has not improved for N epochs; 0 = never "
                             "(default: %(default)s)")
    parser.add_argument("--lr-scheduler", choices=SCHEDULES, default=config.LR_SCHEDULER,
                        help="learning rate per epoch: none (the tutorial's constant rate), cosine, step (a tenth "
                             "after each third), plateau (a tenth when the validation loss stalls for 2 epochs) "
                             "(default: %(default)s)")
    parser.add_argument("--warmup-epochs", type=cli.non_negative_int, default=config.WARMUP_EPOCHS,
                        help="epochs of linear learning-rate warm-up before the schedule (default: %(default)s)")
    return parser


def best_model_path(model_path: str) -> str:
    stem, ext = os.path.splitext(model_path)
    return f"{stem}_best{ext or '.pth'}"


def history_path(plot_path: str, extension: str = ".json") -> str:
    return f"{os.path.splitext(plot_path)[0]}_history{extension}"


def check_outputs(args: argparse.Namespace) -> None:
    """Every output path is usable before any image is read: a mistake here costs seconds, not epochs."""
    image_size = args.image_size
    if not checkpoint.MIN_IMAGE_SIZE <= image_size <= checkpoint.MAX_IMAGE_SIZE:
        raise UserError(f"--image-size {image_size}: use {checkpoint.MIN_IMAGE_SIZE} to {checkpoint.MAX_IMAGE_SIZE} "
                        "pixels (the tutorial uses 224).")
    cli.check_plot_path(args.plot)
    for path, flag in ((args.plot, "--plot"), (args.model, "--model")):
        fileio.check_writable_file(path, flag)
    for path in (args.model, best_model_path(args.model), resume_path(args.model)):
        if os.path.exists(path) and not checkpoint.is_checkpoint(path):
            raise UserError(f"--model: '{path}' exists and is not a checkpoint this project wrote; it would be "
                            "overwritten. Move it away or pass another --model path.")


class TrainingRun:
    """One training script's run: device, seeds, torchrun, data and outputs.

    Use it as a context manager: under torchrun every process leaves the process group on the
    way out, also when something fails.
    """

    def __init__(self, args: argparse.Namespace, head: str) -> None:
        check_outputs(args)
        self.args = args
        self.head = head
        self.device = resolve_device(args.device)
        self.precision = Precision(self.device, resolve_amp(args.amp, self.device), args.channels_last)
        self.num_workers = resolve_workers(args.num_workers, self.device)
        self.started = time.perf_counter()
        self.generators: list[torch.Generator] = []  # every loader's, in creation order: saved for --resume
        self.history: list[dict[str, Any]] = []
        self.resumed: dict[str, Any] | None = None

    def __enter__(self) -> TrainingRun:
        init_distributed(self.device)
        try:
            self._load_data()
        except BaseException:
            shutdown_distributed()
            raise
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        shutdown_distributed()
        if exc_type is not None and issubclass(exc_type, KeyboardInterrupt) and self.history:
            print(f"[INFO] stopped after epoch {self.history[-1]['epoch']}; continue with the same command and "
                  f"--resume (state in {resume_path(self.args.model)})", flush=True)

    def _load_data(self) -> None:
        args = self.args
        # the same seed on every process: a randomly initialised body must be identical everywhere
        seed_everything(args.seed)
        self.train_ds = train_image_folder(args.train, args.image_size)
        self.val_ds = eval_image_folder(args.val, args.image_size)
        if self.train_ds.classes != self.val_ds.classes:
            raise UserError(
                f"The class folders differ between '{args.train}' {self.train_ds.classes} and "
                f"'{args.val}' {self.val_ds.classes}. Rebuild both with python build_dataset.py."
            )
        for path in self.train_ds.skipped + self.val_ds.skipped:
            self.log(f"[WARN] skipped {path}: not a regular file (a pipe, socket or device is never opened)")
        self.class_names: list[str] = self.train_ds.classes
        self.best_val_acc = -1.0
        if args.resume:  # checked now, before any model is built or feature computed
            path = resume_path(args.model)
            self.resumed = load_resumable(path)
            check_settings(self.resumed["resume"]["settings"], self.fixed_settings(), path)
            done = self.resumed["resume"]["epoch"]
            if done >= args.epochs:
                raise UserError(f"--resume: '{path}' has already trained {done} epoch(s), as many as --epochs "
                                f"{args.epochs}. Pass a larger --epochs to train further.")
        self.log(f"[INFO] {len(self.train_ds)} training and {len(self.val_ds)} validation images, "
                 f"{len(self.class_names)} classes; running on {self.precision.describe()}, "
                 f"{self.num_workers} loader worker(s)")

    # --- building blocks ---------------------------------------------------------------
    def log(self, message: str) -> None:
        if is_main_process():
            print(message, flush=True)

    @property
    def random_weights(self) -> bool:
        return self.args.weights.lower() == "none"

    def weights(self) -> dict[str, Any] | None:
        if self.random_weights:
            self.log(f"[WARN] --weights none: no ImageNet weights; the backbone is a stand-in, {STAND_IN} "
                     "(smoke runs and the offline demo only)")
        return load_backbone_weights(self.args.weights)

    def prepare(self, model: nn.Module) -> nn.Module:
        """Move to the device and memory format, calibrate BatchNorm when the weights are random,
        fold frozen BatchNorm layers (call after freezing), then give each process its own
        randomness for augmentation and dropout."""
        model = self.precision.prepare(model)
        if self.random_weights:
            self.stand_in(model)
        if self.args.fold_bn:
            fold_frozen_batchnorm(model)
        # initial weights are identical everywhere by now; the draws that follow should not be
        seed_everything(self.args.seed + rank())
        return model

    def stand_in(self, model: nn.Module) -> None:
        """The offline stand-in for ImageNet weights, from un-augmented training images, the same
        ones on every process."""
        ds = as_eval(train_image_folder(self.args.train, self.args.image_size), self.args.image_size)
        order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(self.args.seed))
        subset = torch.utils.data.Subset(ds, order[:CALIBRATION_IMAGES].tolist())
        loader = make_loader(subset, min(32, self.args.batch_size * 4), False, self.num_workers, device=str(self.device),
                             shard=False)
        seen = offline_stand_in(model, (self.precision.to_device(x) for x, _ in loader))
        self.log(f"[INFO] --weights none stand-in ready: residual blocks start as the identity, BatchNorm "
                 f"statistics calibrated on {seen} training images")

    def loader(self, dataset, shuffle: bool, even: bool = False, once: bool = False) -> DataLoader:
        """A loader of this run's data; ``once`` for a single pass before training (feature
        extraction), whose generator --resume need not restore (and which a cache hit skips)."""
        loader = make_loader(dataset, self.args.batch_size, shuffle, self.num_workers,
                             device=str(self.device), seed=self.args.seed, even=even)
        if not once:
            self.generators.append(loader.generator)
        return loader

    def feature_loader(self, features: torch.Tensor, labels: torch.Tensor, shuffle: bool) -> DataLoader:
        """Cached features are already this process's share, so no distributed sampler here."""
        loader = make_loader(torch.utils.data.TensorDataset(features, labels), self.args.batch_size, shuffle, 0,
                             device="cpu", seed=self.args.seed, shard=False)
        self.generators.append(loader.generator)
        return loader

    def distribute(self, module: nn.Module, find_unused: bool = False) -> nn.Module:
        """DDP around the trained module under torchrun, then torch.compile when asked (compiling the
        DDP module lets the compiler split its graph at the gradient buckets)."""
        if is_distributed():
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            # frozen BatchNorm statistics are identical on every rank: nothing to sync per forward
            sync = ({"forward_sync_buffers": False}
                    if "forward_sync_buffers" in inspect.signature(nn.parallel.DistributedDataParallel).parameters
                    else {"broadcast_buffers": False})
            module = nn.parallel.DistributedDataParallel(module, device_ids=device_ids, find_unused_parameters=find_unused,
                                                         **sync)
        if self.args.compile:
            module = torch.compile(module)
        return module

    def optimizer(self, module: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=self.args.lr)

    # --- training and outputs ------------------------------------------------------------
    def meta(self, epoch: int, metrics: dict[str, float]) -> dict[str, Any]:
        return {
            "head": self.head, "class_names": list(self.class_names), "image_size": self.args.image_size,
            "mean": list(config.MEAN), "std": list(config.STD), "epoch": epoch,
            "metrics": {k: float(v) for k, v in metrics.items()},
            "config": {k: v for k, v in vars(self.args).items() if isinstance(v, (str, int, float, bool, type(None)))},
        }

    def fixed_settings(self) -> dict[str, Any]:
        """What a resumed run must share with the run it continues."""
        args = self.args
        processes = world_size() if is_distributed() else int(os.environ.get("WORLD_SIZE", 1))
        return {"head": self.head, "class_names": list(self.class_names), "image_size": args.image_size,
                "weights": weights_identity(args.weights), "world_size": processes,
                "feature_cache": getattr(args, "feature_cache", None), "cache_views": getattr(args, "cache_views", None)}

    def fit(self, model: nn.Module, trained: nn.Module, train_loader: Iterable | Callable[[int], Iterable],
            val_loader: Iterable, *, feature_fn=None, freeze_epochs: int = 0) -> list[dict[str, float]]:
        """Train ``trained`` (the whole model, or just its head) and keep the best checkpoint of ``model``.

        After every epoch the resumable state goes beside --model; with --resume, training
        continues from it. ``freeze_epochs`` trains only the head for that many epochs first.
        """
        args = self.args
        loss_fn = nn.CrossEntropyLoss()
        optimizer = self.optimizer(trained)
        scaler = self.precision.scaler()
        schedule = LearningRate(args.lr_scheduler, args.lr, args.epochs, args.warmup_epochs)
        stopping = EarlyStopping(args.patience)
        body = [p for name, p in unwrap(trained).named_parameters() if p.requires_grad and not name.startswith("fc.")]
        # what training changes: only that goes into the resumable state, the rest comes from --weights
        # again (a fixed setting), so feature extraction's per-epoch state is the head, not 100 MB
        learning = {id(p) for p in unwrap(trained).parameters() if p.requires_grad}
        learned = [name for name, p in unwrap(model).named_parameters() if id(p) in learning]
        start = 0
        if self.resumed is not None:
            state = self.resumed["resume"]
            if sorted(self.resumed["model"]) != sorted(learned):
                raise UserError(f"--resume: '{resume_path(args.model)}' holds other trained layers than this run "
                                "trains; resume with the same script and settings.")
            unwrap(model).load_state_dict(self.resumed["model"], strict=False)
            optimizer.load_state_dict(state["optimizer"])
            if scaler is not None and state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            schedule.load_state_dict(state["schedule"])
            stopping.load_state_dict(state["stopping"])
            self.history, self.best_val_acc, start = list(state["history"]), state["best_val_acc"], state["epoch"]
            set_rng_state(state["rng"][rank()], self.generators)
            self.log(f"[INFO] resuming after epoch {start} of {args.epochs} from {resume_path(args.model)}")
        trained = self.distribute(trained, find_unused=freeze_epochs > 0)

        def on_epoch_start(epoch: int) -> None:
            for group in optimizer.param_groups:
                group["lr"] = schedule.at(epoch)
            if freeze_epochs:
                for parameter in body:  # the new head first, then everything but BatchNorm
                    parameter.requires_grad_(epoch >= freeze_epochs)
                if epoch == freeze_epochs:
                    self.log(f"[INFO] epoch {epoch + 1}: the body is unfrozen (BatchNorm stays frozen)")

        def on_epoch_end(record: dict[str, Any]) -> bool:
            record["trainable_params"] = sum(p.numel() for p in unwrap(trained).parameters() if p.requires_grad)
            if start and record["epoch"] == start + 1:
                record["resumed"] = True
            schedule.observe(record["val_loss"])
            stop = stopping.should_stop(record["val_loss"])
            if stop:
                record["stopped_early"] = True
            self.history.append(record)
            if is_main_process() and record["val_acc"] > self.best_val_acc:
                self.best_val_acc = record["val_acc"]
                checkpoint.save(best_model_path(args.model), model, self.meta(int(record["epoch"]), record))
            self.best_val_acc = max(self.best_val_acc, record["val_acc"])  # the same on every process
            rng = gather_objects(rng_state(self.generators))
            if is_main_process():
                checkpoint.save(resume_path(args.model), model, {**self.meta(int(record["epoch"]), record), "resume": {
                    "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict() if scaler else None,
                    "epoch": int(record["epoch"]), "history": self.history, "best_val_acc": self.best_val_acc,
                    "schedule": schedule.state_dict(), "stopping": stopping.state_dict(), "rng": rng,
                    "settings": self.fixed_settings()}}, only=learned)
            return stop

        self.log(f"[INFO] training the network for {args.epochs} epochs...")
        engine.fit(trained, train_loader, val_loader, loss_fn, optimizer, self.precision, args.epochs, start_epoch=start,
                   scaler=scaler, grad_accum_steps=args.grad_accum_steps, feature_fn=feature_fn,
                   on_epoch_start=on_epoch_start, on_epoch_end=on_epoch_end, progress=args.progress)
        return self.history

    def finish(self, model: nn.Module, history: list[dict[str, float]],
               val_predictions: Callable[[], tuple[torch.Tensor, torch.Tensor]] | None = None) -> None:
        """Final checkpoint, history JSON and plot, and the validation report (main process only).

        ``val_predictions`` gives (probabilities, labels) for the whole validation set when the
        run already has them (feature extraction's cached features); otherwise the model is
        evaluated again. The other processes leave the process group first, so none of them
        waits on a collective while the main process writes the report.
        """
        main = is_main_process()  # asked before leaving the group: afterwards every process is "rank 0"
        if main:
            epochs_time = sum(r["seconds"] for r in history)
            self.log(f"[INFO] total time taken to train the model: {time.perf_counter() - self.started:.2f}s "
                     f"(set-up, weights and feature caching included; the epochs alone: {epochs_time:.2f}s)")
            checkpoint.save(self.args.model, model, self.meta(len(history), history[-1]))
            fileio.write_text(history_path(self.args.plot), json.dumps(history, indent=2))
            columns = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "train_count", "val_count",
                       "trainable_params", "seconds", "resumed", "stopped_early"]
            fileio.write_csv(history_path(self.args.plot, ".csv"), columns,
                             ([record.get(c, "") for c in columns] for record in history))
            plots.plot_history(history, self.args.plot)
            best = max(history, key=lambda r: r["val_acc"])
            self.log(f"[INFO] saved {self.args.model} (final), {best_model_path(self.args.model)} "
                     f"(best val accuracy {best['val_acc']:.4f} at epoch {best['epoch']}), {self.args.plot}")
        distributed = is_distributed()
        shutdown_distributed()
        if not main or not self.args.report:
            return
        prefix = report.report_prefix(self.args.model)
        if val_predictions is not None and not distributed:
            probabilities, labels = val_predictions()
            report.publish(probabilities, labels, self.class_names, self.val_ds, prefix, config.MEAN, config.STD)
        else:
            val_loader = self.loader(self.val_ds, shuffle=False, once=True)  # the process group is gone: all of it
            report.evaluate_and_report(unwrap(model), val_loader, self.class_names, self.precision, prefix,
                                       config.MEAN, config.STD, progress=self.args.progress)
