"""What both training scripts share: flags, set-up, data, checkpoints, plots and the report.

The scripts themselves say only what differs: the head, what is frozen, batch size and LR.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from . import checkpoint, config, engine, plots, report
from .create_dataloaders import eval_transforms, image_folder, make_loader, train_transforms
from .errors import UserError
from .model import fold_frozen_batchnorm, load_backbone_weights
from .runtime import (
    Precision,
    init_distributed,
    is_distributed,
    is_main_process,
    resolve_amp,
    resolve_device,
    seed_everything,
    shutdown_distributed,
    unwrap,
)


def training_parser(description: str, *, batch_size: int, lr: float, plot: str, model: str) -> argparse.ArgumentParser:
    """Flags shared by both training scripts; every default comes from config.py."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", default=config.TRAIN, help="training image folder (default: %(default)s)")
    parser.add_argument("--val", default=config.VAL, help="validation image folder (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=config.EPOCHS, help="epochs (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=batch_size,
                        help="images per batch, per process under torchrun (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=lr, help="Adam learning rate (default: %(default)s)")
    parser.add_argument("--grad-accum-steps", type=int, default=config.GRAD_ACCUM_STEPS,
                        help="batches per optimizer step (default: %(default)s)")
    parser.add_argument("--image-size", type=int, default=config.IMAGE_SIZE, help="input size (default: %(default)s)")
    parser.add_argument("--device", default=config.DEVICE, help="cuda, cuda:N, mps or cpu (default: %(default)s)")
    parser.add_argument("--weights", default=config.WEIGHTS,
                        help="IMAGENET1K_V1, IMAGENET1K_V2, DEFAULT, a .pth state dict, or none (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=config.SEED, help="random seed (default: %(default)s)")
    parser.add_argument("--num-workers", type=int, default=config.NUM_WORKERS,
                        help="DataLoader worker processes (default: %(default)s)")
    parser.add_argument("--amp", default=config.AMP, help="mixed precision: auto, off, bf16, fp16 (default: %(default)s)")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=config.CHANNELS_LAST,
                        help="channels_last memory format (default: %(default)s)")
    parser.add_argument("--fold-bn", action=argparse.BooleanOptionalAction, default=config.FOLD_BN,
                        help="fold frozen BatchNorm layers into their convolutions (default: %(default)s)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=config.COMPILE,
                        help="torch.compile the trained part (default: %(default)s)")
    parser.add_argument("--plot", default=plot, help="training-history plot (default: %(default)s)")
    parser.add_argument("--model", default=model, help="final checkpoint; the best one goes beside it (default: %(default)s)")
    parser.add_argument("--report", action=argparse.BooleanOptionalAction, default=True,
                        help="write the validation report after training (default: %(default)s)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                        help="tqdm progress bars (default: %(default)s)")
    return parser


def best_model_path(model_path: str) -> str:
    stem, ext = os.path.splitext(model_path)
    return f"{stem}_best{ext or '.pth'}"


def history_path(plot_path: str) -> str:
    return f"{os.path.splitext(plot_path)[0]}_history.json"


class TrainingRun:
    """One training script's run: device, seeds, torchrun, data and outputs."""

    def __init__(self, args: argparse.Namespace, head: str) -> None:
        for name in ("epochs", "batch_size", "grad_accum_steps", "image_size"):
            if getattr(args, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1, not {getattr(args, name)}.")
        if args.num_workers < 0:
            raise UserError("--num-workers must be 0 or more.")
        self.args = args
        self.head = head
        self.device = resolve_device(args.device)
        init_distributed(self.device)
        # the same seed on every process: a randomly initialised body must be identical everywhere
        seed_everything(args.seed)
        self.precision = Precision(self.device, resolve_amp(args.amp, self.device), args.channels_last)
        self.train_ds = image_folder(args.train, train_transforms(args.image_size), draft_size=args.image_size)
        self.val_ds = image_folder(args.val, eval_transforms(args.image_size), draft_size=args.image_size)
        if self.train_ds.classes != self.val_ds.classes:
            raise UserError(
                f"The class folders differ between '{args.train}' {self.train_ds.classes} and "
                f"'{args.val}' {self.val_ds.classes}. Rebuild both with python build_dataset.py."
            )
        self.class_names: list[str] = self.train_ds.classes
        self.best_val_acc = -1.0
        self.log(f"[INFO] {len(self.train_ds)} training and {len(self.val_ds)} validation images, "
                 f"{len(self.class_names)} classes; running on {self.precision.describe()}")

    # --- building blocks ---------------------------------------------------------------
    def log(self, message: str) -> None:
        if is_main_process():
            print(message, flush=True)

    def weights(self) -> dict[str, Any] | None:
        if self.args.weights.lower() == "none":
            self.log("[WARN] --weights none: the backbone starts from random weights (smoke runs only)")
        return load_backbone_weights(self.args.weights)

    def prepare(self, model: nn.Module) -> nn.Module:
        """Fold frozen BatchNorm layers (call after freezing), move to the device and memory format."""
        if self.args.fold_bn:
            fold_frozen_batchnorm(model)
        return self.precision.prepare(model)

    def loader(self, dataset, shuffle: bool, even: bool = False) -> DataLoader:
        return make_loader(dataset, self.args.batch_size, shuffle, self.args.num_workers,
                           device=str(self.device), seed=self.args.seed, even=even)

    def feature_loader(self, features: torch.Tensor, labels: torch.Tensor, shuffle: bool) -> DataLoader:
        """Cached features are already this process's share, so no distributed sampler here."""
        generator = torch.Generator().manual_seed(self.args.seed)
        return DataLoader(torch.utils.data.TensorDataset(features, labels), batch_size=self.args.batch_size,
                          shuffle=shuffle, generator=generator)

    def distribute(self, module: nn.Module) -> nn.Module:
        """DDP around the trained module under torchrun, torch.compile when asked."""
        if self.args.compile:
            module = torch.compile(module)
        if is_distributed():
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            # frozen BatchNorm statistics are identical on every rank: nothing to sync per forward
            sync = ({"forward_sync_buffers": False}
                    if "forward_sync_buffers" in inspect.signature(nn.parallel.DistributedDataParallel).parameters
                    else {"broadcast_buffers": False})
            module = nn.parallel.DistributedDataParallel(module, device_ids=device_ids, **sync)
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

    def fit(self, model: nn.Module, trained: nn.Module, train_loader: Iterable | Callable[[int], Iterable],
            val_loader: Iterable, *, feature_fn=None) -> list[dict[str, float]]:
        """Train ``trained`` (the whole model, or just its head) and keep the best checkpoint of ``model``."""
        loss_fn = nn.CrossEntropyLoss()
        optimizer = self.optimizer(trained)
        trained = self.distribute(trained)

        def keep_best(record: dict[str, float]) -> None:
            if is_main_process() and record["val_acc"] > self.best_val_acc:
                self.best_val_acc = record["val_acc"]
                checkpoint.save(best_model_path(self.args.model), model, self.meta(int(record["epoch"]), record))

        self.log(f"[INFO] training the network for {self.args.epochs} epochs...")
        return engine.fit(trained, train_loader, val_loader, loss_fn, optimizer, self.precision, self.args.epochs,
                          grad_accum_steps=self.args.grad_accum_steps, feature_fn=feature_fn,
                          on_epoch_end=keep_best, progress=self.args.progress)

    def finish(self, model: nn.Module, history: list[dict[str, float]]) -> None:
        """Final checkpoint, history JSON and plot, and the validation report (main process only)."""
        if is_main_process():
            total = sum(r["seconds"] for r in history)
            self.log(f"[INFO] total time taken to train the model: {total:.2f}s")
            checkpoint.save(self.args.model, model, self.meta(len(history), history[-1]))
            checkpoint.write_text(history_path(self.args.plot), json.dumps(history, indent=2))
            plots.plot_history(history, self.args.plot)
            best = max(history, key=lambda r: r["val_acc"])
            self.log(f"[INFO] saved {self.args.model} (final), {best_model_path(self.args.model)} "
                     f"(best val accuracy {best['val_acc']:.4f} at epoch {best['epoch']}), {self.args.plot}")
            if self.args.report:
                val_loader = DataLoader(self.val_ds, batch_size=self.args.batch_size, shuffle=False,
                                        num_workers=self.args.num_workers)
                report.evaluate_and_report(unwrap(model), val_loader, self.class_names, self.precision,
                                           report.report_prefix(self.args.model), config.MEAN, config.STD,
                                           progress=self.args.progress)
        shutdown_distributed()
