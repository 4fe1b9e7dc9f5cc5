"""Transfer learning by feature extraction: a frozen ImageNet ResNet50 body, a new linear head.

Usage:
    python train_feature_extraction.py
    python train_feature_extraction.py --epochs 5 --no-feature-cache      # tutorial-style per-epoch augmentation
    python train_feature_extraction.py --weights none --image-size 64     # offline smoke run
    python train_feature_extraction.py --resume                           # continue after an interruption

Writes output/warmup_model.pth (final), output/warmup_model_best.pth, output/warmup.png,
output/warmup_history.json/.csv, the validation report (output/warmup_model_report.*), the
resumable state (output/warmup_model_resume.pth) and the cached features (output/feature_cache/).
The saved models carry their calibration (a temperature) and what flags a photo as unlike every
class; the reliability diagram is output/warmup_model_calibration.png.
"""

from __future__ import annotations

import pyimagesearch.utils.ctrl_c_at_start  # noqa: F401  first: Ctrl-C while the rest loads exits quietly

# isort: split
import argparse
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from pyimagesearch import config
from pyimagesearch.arguments import training_parser
from pyimagesearch.freezing import fold_frozen_batchnorm, freeze_body
from pyimagesearch.schedule import EarlyStopping, LearningRate
from pyimagesearch.utils import cli
from pyimagesearch.utils.distributed import is_main_process, set_epoch
from pyimagesearch.utils.errors import run_cli

if TYPE_CHECKING:
    from pyimagesearch.feature_cache import Features
    from pyimagesearch.model import Body
    from pyimagesearch.session import TrainingSession


def build_parser() -> argparse.ArgumentParser:
    parser = training_parser(__doc__, batch_size=config.FEATURE_EXTRACTION_BATCH_SIZE, lr=config.LR,
                             plot=config.WARMUP_PLOT, model=config.WARMUP_MODEL)
    parser.add_argument("--feature-cache", action=argparse.BooleanOptionalAction, default=config.FEATURE_CACHE,
                        help="run the frozen body once and train the head on cached features (default: %(default)s)")
    parser.add_argument("--cache-views", type=cli.positive_int, default=config.FEATURE_CACHE_VIEWS,
                        help="cached views of the training set; 1 = un-augmented, N > 1 = N augmented views "
                             "(default: %(default)s)")
    parser.add_argument("--feature-cache-dir", type=cli.name, default=config.FEATURE_CACHE_DIR,
                        help="where cached features persist between runs, keyed by weights, images, image size, "
                             "views and precision; auto = feature_cache/ beside --model, none = recompute every run "
                             "(default: %(default)s)")
    return parser


def body_features(args: argparse.Namespace, session: TrainingSession, body: Body, train_ds, val_ds, train_loader,
                  val_loader) -> tuple[Features, list[Features]]:
    """The validation features and, with --feature-cache, every cached view of the training images
    (from feature_cache/ when an earlier run left them); without it, no training view: the
    tutorial's way, a fresh augmentation of every training image in every epoch."""
    from pyimagesearch import feature_cache
    from pyimagesearch.engine import extract_features

    def extract(loader, desc):
        return extract_features(body, loader, session.compute, progress=args.progress, desc=desc)

    if not args.feature_cache:
        return extract(val_loader, "features (val)"), []
    cache = feature_cache.cache_for(feature_cache.cache_folder(args.feature_cache_dir, args.model), weights=args.weights,
                                    train_ds=train_ds, val_ds=val_ds, image_size=args.image_size,
                                    views=args.cache_views, seed=args.seed, compute=session.compute,
                                    fold_bn=args.fold_bn, width=body.width)
    return feature_cache.body_features(extract, train_loader, val_loader, args.cache_views, cache, log=session.log)


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)  # every flag and config.py value checked, before the imports below
    # torchvision, matplotlib and OpenCV load only now: together they take longer than torch itself
    from pyimagesearch import plots
    from pyimagesearch.create_dataloaders import eval_transforms, feature_loader, get_dataloader, train_transforms
    from pyimagesearch.engine import check_finite, evaluate, predict, train_one_epoch
    from pyimagesearch.model import Body, build_model
    from pyimagesearch.session import EpochEnd, TrainingSession, class_weights
    from pyimagesearch.trust.fit import CheckpointTrust
    from pyimagesearch.tuning.lr_find import find_lr

    with TrainingSession(args) as session:  # outputs checked; device, precision, seeds; torchrun
        compute, size, batch_size = session.compute, args.image_size, args.batch_size

        # the training and validation images, through the tutorial's dataloader helper; with the feature
        # cache, training images are read in order, un-augmented when there is one cached view. On a GPU
        # every photo is decoded once, by every core, and transformed there (--decode-once)
        augment = not args.feature_cache or args.cache_views > 1
        reading = dict(decode_once=args.decode_once, progress=args.progress, **session.loader_options)
        train_ds, train_loader = get_dataloader(args.train, train_transforms(size) if augment else eval_transforms(size),
                                                batch_size, shuffle=not args.feature_cache,
                                                equal_shares=args.feature_cache, **reading)
        val_ds, val_loader = get_dataloader(args.val, eval_transforms(size), batch_size, shuffle=False, **reading)
        session.check_and_describe_data(train_ds, val_ds)
        checkpointer = session.checkpointer_for(train_ds, head="linear")  # checks a --resume state now

        # ResNet50 with ImageNet weights; only the new Linear(2048, classes) head learns, and the
        # frozen body stays in eval mode so its BatchNorm statistics keep their ImageNet values
        model = build_model(len(train_ds.classes), head="linear", weights=session.backbone_weights())
        freeze_body(model)
        model = compute.prepare(model)  # device and memory format
        session.calibrate_stand_in(model)  # --weights none only
        if args.fold_bn:  # frozen BatchNorm folded into the convolutions: the same math, less work
            fold_frozen_batchnorm(model)
        session.reseed_per_process()
        body, head = Body(model), model.fc

        # the frozen body's output does not change while the head trains: compute it once (per cached
        # view) or find it on disk from an earlier run with the same weights, images and size
        val_features, view_features = body_features(args, session, body, train_ds, val_ds, train_loader, val_loader)
        view_loaders = [feature_loader(*view, batch_size, shuffle=True, seed=args.seed) for view in view_features]
        val_feature_loader = feature_loader(*val_features, batch_size, shuffle=False, seed=args.seed)

        # loss, optimizer, and the opt-in learning-rate schedule and early stopping
        loss_fn = nn.CrossEntropyLoss(weight=class_weights(train_ds, args.balanced, compute.device))  # --balanced
        optimizer = torch.optim.Adam(head.parameters(), lr=args.lr)
        scaler = compute.scaler()
        if args.find_lr:  # the learning-rate range test on all of the above (the cached features), instead of training
            find_lr(session, head, view_loaders[0] if view_loaders else train_loader, loss_fn, optimizer, scaler=scaler,
                    feature_fn=None if view_loaders else body, script="train_feature_extraction.py")
            return
        schedule = LearningRate(args.lr_scheduler, args.lr, args.epochs, args.warmup_epochs)
        stopping = EarlyStopping(args.patience)
        generators = [val_feature_loader.generator] + [v.generator for v in view_loaders or [train_loader]]
        checkpointer.track(model=model, trained=head, optimizer=optimizer, schedule=schedule, stopping=stopping,
                           generators=generators, scaler=scaler)
        history = checkpointer.restore()  # [] unless --resume
        epoch_end = EpochEnd(checkpointer, schedule, stopping, optimizer, head, history)
        trainer = session.ddp_and_compile(head)

        for epoch in session.epochs(len(history)):
            started = time.perf_counter()
            schedule.apply(optimizer, epoch)
            epoch_loader = view_loaders[epoch % len(view_loaders)] if view_loaders else train_loader
            set_epoch(epoch_loader, epoch)

            # a training pass, then a validation pass (over the head alone when features are cached)
            train = train_one_epoch(trainer, epoch_loader, loss_fn, optimizer, compute, scaler=scaler,
                                    grad_accum_steps=args.grad_accum_steps, feature_fn=None if view_loaders else body,
                                    progress=args.progress, epoch=epoch + 1)
            val = evaluate(head, val_feature_loader, loss_fn, compute, progress=args.progress)
            check_finite(train, val, epoch + 1)

            # bookkeeping (schedule, early stopping, history; the best model and the resumable state
            # saved), then the tutorial's three lines
            stop = epoch_end.record(epoch, train, val, time.perf_counter() - started)
            session.log(f"[INFO] EPOCH: {epoch + 1}/{args.epochs}\n"
                        f"Train loss: {train['loss']:.6f}, Train accuracy: {train['accuracy']:.4f}\n"
                        f"Val loss: {val['loss']:.6f}, Val accuracy: {val['accuracy']:.4f}")
            if stop:
                break

        # save the final model and plot the history; then calibrate the saved models' probabilities,
        # keep what the training photos look like (to flag photos unlike every class), and report on
        # the validation set (from its features)
        if is_main_process():
            session.log_end_of_training(history)
            checkpointer.save_final(history, args.plot)
            plots.plot_history(history, args.plot, best_key=checkpointer.best_key)
            session.log(f"[INFO] saved {checkpointer.describe(history)}, {args.plot}")
        trust = CheckpointTrust(session, checkpointer, model, train_ds, val_ds, body_frozen=True,
                                cached_val=val_features, cached_train=None if augment else view_features[0])
        session.leave_group_calibrate_and_report(model, val_ds, calibrate=trust,
                                                 val_predictions=lambda: predict(head, val_feature_loader, compute,
                                                                                 progress=False))


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
