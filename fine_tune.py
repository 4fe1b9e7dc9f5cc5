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
the resumable state (output/finetune_model_resume.pth).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from pyimagesearch import config
from pyimagesearch.cli import non_negative_int
from pyimagesearch.errors import run_cli
from pyimagesearch.model import build_model, freeze_batchnorm
from pyimagesearch.training import TrainingRun, training_parser


def build_parser() -> argparse.ArgumentParser:
    parser = training_parser(__doc__, batch_size=config.FINETUNE_BATCH_SIZE, lr=config.LR_FINETUNE,
                             plot=config.FINETUNE_PLOT, model=config.FINETUNE_MODEL)
    parser.add_argument("--freeze-epochs", type=non_negative_int, default=config.FREEZE_EPOCHS,
                        help="train only the new head for this many epochs, then the whole body too (BatchNorm "
                             "stays frozen throughout), as fastai's fine_tune does (default: %(default)s)")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    with TrainingRun(args, head="mlp") as run:
        # Linear 512 -> ReLU -> Dropout .25 -> Linear 256 -> ReLU -> Dropout .5 -> Linear N on top of
        # a body that trains too, except its BatchNorm layers (parameters and running statistics)
        model = build_model(len(run.class_names), head="mlp", weights=run.weights())
        freeze_batchnorm(model)
        model = run.prepare(model)

        history = run.fit(model, model, run.loader(run.train_ds, shuffle=True), run.loader(run.val_ds, shuffle=False),
                          freeze_epochs=args.freeze_epochs)
        run.finish(model, history)


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
