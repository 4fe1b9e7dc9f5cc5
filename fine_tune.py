"""Transfer learning by fine-tuning: the tutorial's MLP head on an unfrozen ResNet50 body
whose BatchNorm layers stay frozen.

Usage:
    python fine_tune.py
    python fine_tune.py --epochs 5 --batch-size 32 --lr 1e-4
    python fine_tune.py --weights none --image-size 64                   # offline smoke run
    python fine_tune.py --resume                                         # continue after an interruption
    python fine_tune.py --freeze-epochs 2 --lr-scheduler cosine --patience 3

Writes output/finetune_model.pth (final), output/finetune_model_best.pth, output/finetune.png,
output/finetune_history.json/.csv, the validation report (output/finetune_model_report.*) and
the resumable state (output/finetune_model_resume.pth). The saved models carry their calibration (a
temperature) and what flags a photo as unlike every class; the reliability diagram is
output/finetune_model_calibration.png.
"""

from __future__ import annotations

import pyimagesearch.utils.ctrl_c_at_start  # noqa: F401  first: Ctrl-C while the rest loads exits quietly

# isort: split
import argparse
import time
from collections.abc import Sequence

import torch
from torch import nn

from pyimagesearch import config
from pyimagesearch.arguments import training_parser
from pyimagesearch.freezing import fold_frozen_batchnorm, freeze_batchnorm, set_body_trainable
from pyimagesearch.schedule import EarlyStopping, LearningRate
from pyimagesearch.utils.cli import non_negative_int
from pyimagesearch.utils.distributed import is_main_process, set_epoch
from pyimagesearch.utils.errors import run_cli


def build_parser() -> argparse.ArgumentParser:
    parser = training_parser(__doc__, batch_size=config.FINETUNE_BATCH_SIZE, lr=config.LR_FINETUNE,
                             plot=config.FINETUNE_PLOT, model=config.FINETUNE_MODEL)
    parser.add_argument("--freeze-epochs", type=non_negative_int, default=config.FREEZE_EPOCHS,
                        help="train only the new head for this many epochs, then the whole body too (BatchNorm "
                             "stays frozen throughout), as fastai's fine_tune does (default: %(default)s)")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)  # every flag and config.py value checked, before the imports below
    # torchvision, matplotlib and OpenCV load only now: together they take longer than torch itself
    from pyimagesearch import plots
    from pyimagesearch.create_dataloaders import eval_transforms, get_dataloader, train_transforms
    from pyimagesearch.engine import check_finite, evaluate, train_one_epoch
    from pyimagesearch.model import build_model, trainable_parameters
    from pyimagesearch.session import EpochEnd, TrainingSession, class_weights
    from pyimagesearch.trust.fit import CheckpointTrust
    from pyimagesearch.tuning.lr_find import find_lr

    with TrainingSession(args, trains_body=True) as session:  # outputs checked; device, precision, seeds; torchrun
        compute = session.compute

        # the training and validation sets, through the tutorial's dataloader helper; on a GPU every photo
        # is decoded once, by every core, and transformed there in every epoch (--decode-once)
        reading = dict(decode_once=args.decode_once, progress=args.progress, **session.loader_options)
        train_ds, train_loader = get_dataloader(args.train, train_transforms(args.image_size), args.batch_size,
                                                shuffle=True, **reading)
        val_ds, val_loader = get_dataloader(args.val, eval_transforms(args.image_size), args.batch_size,
                                            shuffle=False, **reading)
        session.check_and_describe_data(train_ds, val_ds)
        checkpointer = session.checkpointer_for(train_ds, head="mlp")  # checks a --resume state now

        # ResNet50 whose body trains too, except its BatchNorm layers (parameters and running
        # statistics), under the tutorial's head: Linear 512 -> ReLU -> Dropout .25 -> Linear 256
        # -> ReLU -> Dropout .5 -> Linear N
        model = build_model(len(train_ds.classes), head="mlp", weights=session.backbone_weights())
        freeze_batchnorm(model)
        model = compute.prepare(model)  # device and memory format
        session.calibrate_stand_in(model)  # --weights none only
        if args.fold_bn:  # frozen BatchNorm folded into the convolutions: the same math, less work
            fold_frozen_batchnorm(model)
        session.reseed_per_process()

        # loss, optimizer, and the opt-in learning-rate schedule and early stopping
        loss_fn = nn.CrossEntropyLoss(weight=class_weights(train_ds, args.balanced, compute.device))  # --balanced
        optimizer = torch.optim.Adam(trainable_parameters(model), lr=args.lr)
        scaler = compute.scaler()
        if args.find_lr:  # the learning-rate range test on all of the above, instead of training
            find_lr(session, model, train_loader, loss_fn, optimizer, scaler=scaler, script="fine_tune.py")
            return
        schedule = LearningRate(args.lr_scheduler, args.lr, args.epochs, args.warmup_epochs)
        stopping = EarlyStopping(args.patience)
        checkpointer.track(model=model, trained=model, optimizer=optimizer, schedule=schedule, stopping=stopping,
                           generators=[train_loader.generator, val_loader.generator], scaler=scaler)
        history = checkpointer.restore()  # [] unless --resume
        epoch_end = EpochEnd(checkpointer, schedule, stopping, optimizer, model, history)
        trainer = session.ddp_and_compile(model, find_unused=args.freeze_epochs > 0)

        for epoch in session.epochs(len(history)):
            started = time.perf_counter()
            schedule.apply(optimizer, epoch)
            if args.freeze_epochs:  # the new head alone first, then everything but BatchNorm
                set_body_trainable(model, epoch >= args.freeze_epochs)
                if epoch == args.freeze_epochs:
                    session.log(f"[INFO] epoch {epoch + 1}: the body is unfrozen (BatchNorm stays frozen)")
            set_epoch(train_loader, epoch)

            # a training pass, then a validation pass
            train = train_one_epoch(trainer, train_loader, loss_fn, optimizer, compute, scaler=scaler,
                                    grad_accum_steps=args.grad_accum_steps, progress=args.progress, epoch=epoch + 1)
            val = evaluate(model, val_loader, loss_fn, compute, progress=args.progress)
            check_finite(train, val, epoch + 1)

            # bookkeeping (schedule, early stopping, history; the best model and the resumable state
            # saved), then the tutorial's three lines
            stop = epoch_end.record(epoch, train, val, time.perf_counter() - started)
            session.log(f"[INFO] EPOCH: {epoch + 1}/{args.epochs}\n"
                        f"Train loss: {train['loss']:.6f}, Train accuracy: {train['accuracy']:.4f}\n"
                        f"Val loss: {val['loss']:.6f}, Val accuracy: {val['accuracy']:.4f}")
            if stop:
                break

        # save the final model and plot the training history; then calibrate the saved models'
        # probabilities, keep what the training photos look like (to flag photos unlike every class),
        # and report on the validation set
        if is_main_process():
            session.log_end_of_training(history)
            checkpointer.save_final(history, args.plot)
            plots.plot_history(history, args.plot, best_key=checkpointer.best_key)
            session.log(f"[INFO] saved {checkpointer.describe(history)}, {args.plot}")
        trust = CheckpointTrust(session, checkpointer, model, train_ds, val_ds, body_frozen=False)
        session.leave_group_calibrate_and_report(model, val_ds, calibrate=trust)


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
