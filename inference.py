"""Predict with a trained checkpoint: a random validation batch, your own photos, or a full report.

Usage:
    python inference.py --model output/finetune_model.pth                    # random val batch -> picture
    python inference.py --model output/warmup_model.pth --show               # ... and open a window
    python inference.py --model output/finetune_model.pth --images my.jpg photos/   # top-k per image
    python inference.py --model output/finetune_model.pth --evaluate dataset/val    # metrics + confusion matrix

The model is rebuilt from the checkpoint alone (architecture, head, class names, image size,
mean/std); nothing needs to match config.py.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from pyimagesearch import cli, config, fileio, predict
from pyimagesearch.errors import run_cli
from pyimagesearch.runtime import seed_everything


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     parents=[cli.runtime_parser()])
    parser.add_argument("-m", "--model", required=True, help="path to a trained checkpoint (.pth)")
    parser.add_argument("--images", nargs="+", metavar="PATH", help="image files and/or folders to classify")
    parser.add_argument("--evaluate", metavar="DIR", help="class-folder tree to evaluate (e.g. dataset/val)")
    parser.add_argument("--val", default=config.VAL, help="folder the random batch comes from (default: %(default)s)")
    parser.add_argument("--batch-size", type=cli.positive_int, default=config.PRED_BATCH_SIZE,
                        help="images in the random batch (default: %(default)s)")
    parser.add_argument("--eval-batch-size", type=cli.positive_int, default=64,
                        help="batch size for --images and --evaluate (default: %(default)s)")
    parser.add_argument("--top-k", type=cli.positive_int, default=config.TOP_K,
                        help="classes printed per image (default: %(default)s)")
    parser.add_argument("--output", default=config.OUTPUT_PATH, help="folder for pictures and tables (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=None, help="seed for the random batch (default: a new one each run)")
    parser.add_argument("--show", action="store_true", help="also open a window (needs a display)")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    fileio.check_writable_folder(args.output, "--output")
    if args.seed is not None:
        seed_everything(args.seed)
    predictor = predict.load_predictor(args)
    if args.images:
        predict.classify_files(predictor, args.images, args.output, top_k=args.top_k,
                               batch_size=args.eval_batch_size, model_path=args.model)
    if args.evaluate:
        predict.evaluate_folder(predictor, args.evaluate, args.output, batch_size=args.eval_batch_size,
                                progress=args.progress)
    if not args.images and not args.evaluate:
        path = predict.random_batch(predictor, args.val, args.batch_size, args.output)
        if args.show:
            predict.show(path)


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
