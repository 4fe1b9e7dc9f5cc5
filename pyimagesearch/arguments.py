"""Every script's flags, with their defaults from config.py: a flag overrides a value for one run.

A bad value stops argparse at once (exit 2, a one-line message naming the flag), before any
dataset is scanned or model built, and before torchvision, matplotlib or OpenCV load: this module
imports none of them, so --help and a mistyped flag answer in about the time torch takes to import.
"""

from __future__ import annotations

import argparse

from . import config
from .schedule import SCHEDULES
from .utils import cli
from .utils.cli import CheckedParser
from .utils.stand_in import STAND_IN


def is_onnx(model_path: str) -> bool:
    """Whether --model names an exported model (run by OpenCV's DNN module) rather than a checkpoint."""
    return model_path.lower().endswith(".onnx")


def runtime_parser() -> argparse.ArgumentParser:
    """Flags the training scripts and inference share, with one help text each (a parent parser)."""
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("runtime")
    group.add_argument("--device", default=config.DEVICE, help="cuda, cuda:N, mps or cpu (default: %(default)s)")
    group.add_argument("--amp", default=config.AMP, help="mixed precision: auto, off, bf16, fp16 (default: %(default)s)")
    group.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=config.CHANNELS_LAST,
                       help="channels_last memory format (default: %(default)s)")
    group.add_argument("--fold-bn", action=argparse.BooleanOptionalAction, default=config.FOLD_BN,
                       help="fold frozen BatchNorm layers into their convolutions (default: %(default)s)")
    group.add_argument("--num-workers", type=cli.workers, default=config.NUM_WORKERS,
                       help="DataLoader worker processes, or auto: every core but one on CUDA or MPS (the GPU outruns a "
                            "few workers), at most 4 on CPU (the workers would take the cores the math needs) "
                            "(default: %(default)s)")
    group.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                       help="tqdm progress bars (default: %(default)s)")
    return parser


class TrainingParser(CheckedParser):
    """The training scripts' parser: their flags that cannot go together are refused with the rest."""

    def parse_known_args(self, args=None, namespace=None):
        parsed, extras = super().parse_known_args(args, namespace)
        if getattr(parsed, "find_lr", False) and getattr(parsed, "resume", False):
            self.error("--find-lr with --resume: the range test trains nothing that is kept, so there is no run to "
                       "continue; run --find-lr on its own, then train (or --resume) with the --lr it suggests")
        return parsed, extras


def training_parser(description: str, *, batch_size: int, lr: float, plot: str, model: str) -> argparse.ArgumentParser:
    """Flags shared by both training scripts; every default comes from config.py."""
    parser = TrainingParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
                            parents=[runtime_parser()])
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
    add("--image-size", type=cli.image_size, default=config.IMAGE_SIZE, help="input size (default: %(default)s)")
    add("--weights", default=config.WEIGHTS,
        help=f"IMAGENET1K_V1, IMAGENET1K_V2, DEFAULT, a .pth state dict, or none: {STAND_IN}, an offline stand-in "
             "for smoke runs and the demo, never applied to real weights (default: %(default)s)")
    add("--decode-once", choices=("auto", "on", "off"), default=config.DECODE_ONCE,
        help="decode each photo once, keep it as uint8 on the device and augment whole batches there "
             "(memory: 3 bytes a pixel, about 1.3 GiB for the tutorial's flowers); auto: on a CUDA GPU "
             "when the photos take at most half of its free memory (default: %(default)s)")
    add("--seed", type=cli.seed, default=config.SEED, help="random seed (default: %(default)s)")
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
    add("--find-lr", action="store_true",
        help="run the learning-rate range test (fastai's lr_find) on this model and data instead of training: "
             "writes <model>_lr_find.png and .json and suggests a --lr; no checkpoint is written")
    return parser

