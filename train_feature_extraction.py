"""Transfer learning by feature extraction: a frozen ImageNet ResNet50 body, a new linear head.

Usage:
    python train_feature_extraction.py
    python train_feature_extraction.py --epochs 5 --no-feature-cache      # tutorial-style per-epoch augmentation
    python train_feature_extraction.py --weights none --image-size 64     # offline smoke run
    python train_feature_extraction.py --resume                           # continue after an interruption

Writes output/warmup_model.pth (final), output/warmup_model_best.pth, output/warmup.png,
output/warmup_history.json/.csv, the validation report (output/warmup_model_report.*), the
resumable state (output/warmup_model_resume.pth) and the cached features (output/feature_cache/).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from pyimagesearch import config, engine, features
from pyimagesearch.cli import positive_int
from pyimagesearch.create_dataloaders import as_eval
from pyimagesearch.errors import run_cli
from pyimagesearch.model import Body, build_model, freeze_body
from pyimagesearch.training import TrainingRun, training_parser


def build_parser() -> argparse.ArgumentParser:
    parser = training_parser(__doc__, batch_size=config.FEATURE_EXTRACTION_BATCH_SIZE, lr=config.LR,
                             plot=config.WARMUP_PLOT, model=config.WARMUP_MODEL)
    parser.add_argument("--feature-cache", action=argparse.BooleanOptionalAction, default=config.FEATURE_CACHE,
                        help="run the frozen body once and train the head on cached features (default: %(default)s)")
    parser.add_argument("--cache-views", type=positive_int, default=config.FEATURE_CACHE_VIEWS,
                        help="cached views of the training set; 1 = un-augmented, N > 1 = N augmented views "
                             "(default: %(default)s)")
    parser.add_argument("--feature-cache-dir", default=config.FEATURE_CACHE_DIR,
                        help="where cached features persist between runs, keyed by weights, images, image size, "
                             "views and precision; auto = feature_cache/ beside --model, none = recompute every run "
                             "(default: %(default)s)")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    with TrainingRun(args, head="linear") as run:
        # ResNet50 with ImageNet weights; only the new Linear(2048, classes) head learns, and the
        # frozen body stays in eval mode so its BatchNorm statistics keep their ImageNet values
        model = build_model(len(run.class_names), head="linear", weights=run.weights())
        freeze_body(model)
        model = run.prepare(model)
        body, head = Body(model), model.fc

        if args.feature_cache:
            # the body's output does not change while the head trains: compute it once per view, or
            # find it on disk from an earlier run with the same weights, images and size
            views = args.cache_views
            if views == 1:
                as_eval(run.train_ds, args.image_size)  # one un-augmented view, decoded as validation is
            val_features, cached = features.body_features(run, body, views)
            val_loader = run.feature_loader(*val_features, shuffle=False)
            view_loaders = [run.feature_loader(*view, shuffle=True) for view in cached]
            history = run.fit(model, head, lambda epoch: view_loaders[epoch % views], val_loader)
        else:
            # the tutorial's way: a fresh augmentation of every training image in every epoch; the
            # validation images are never augmented, so their features are still computed only once
            val_features = engine.extract_features(body, run.loader(run.val_ds, shuffle=False, once=True),
                                                   run.precision, progress=args.progress, desc="features (val)")
            val_loader = run.feature_loader(*val_features, shuffle=False)
            history = run.fit(model, head, run.loader(run.train_ds, shuffle=True), val_loader, feature_fn=body)
        # the report reuses the validation features instead of running the body over the images again
        run.finish(model, history,
                   val_predictions=lambda: engine.predict(head, val_loader, run.precision, progress=False))


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
