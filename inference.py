"""Predict with a trained checkpoint: a random validation batch, your own photos, a full report,
video and camera frames, or an export that runs without PyTorch.

Usage:
    python inference.py --model output/finetune_model.pth                    # random val batch -> picture
    python inference.py --model output/warmup_model.pth --show               # ... and open a window
    python inference.py --model output/finetune_model.pth --images my.jpg photos/   # top-k per image
    python inference.py --model output/finetune_model.pth --images photos/ --annotate output/annotated
    python inference.py --model output/finetune_model.pth --images photos/ --explain output/explained  # heatmaps
    python inference.py --model output/finetune_model.pth --evaluate dataset/val    # metrics + confusion matrix
    python inference.py --model output/warmup_model.pth --audit dataset/train       # likely label errors, outliers
    python inference.py --model output/finetune_model.pth --video garden.mp4        # annotated video + CSV
    python inference.py --model output/finetune_model.pth --camera 0 --show         # live, Ctrl-C or q to stop
    python inference.py --model output/finetune_model.pth --export output/finetune_model.onnx
    python inference.py --model output/finetune_model.onnx --images my.jpg          # OpenCV DNN, no PyTorch model

The modes combine: --images (with --annotate and --explain), --evaluate, --audit and --video or
--camera each run, in that order, on the model loaded once. With none of them, inference.py does
what the tutorial's does: a random validation batch, ground truth against prediction. --export
writes the ONNX model and stops. The whole command line is checked before anything runs.

The model is rebuilt from the checkpoint alone (architecture, head, class names, image size,
mean/std); nothing needs to match config.py.
"""

from __future__ import annotations

import pyimagesearch.utils.ctrl_c_at_start  # noqa: F401  first: Ctrl-C while the rest loads exits quietly

# isort: split
import argparse
import os
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pyimagesearch import config
from pyimagesearch.arguments import is_onnx, runtime_parser
from pyimagesearch.inference.audit_check import check_audit
from pyimagesearch.utils import cli, settings
from pyimagesearch.utils.cli import CheckedParser
from pyimagesearch.utils.errors import UserError, run_cli
from pyimagesearch.utils.memory import keep_allocator_memory
from pyimagesearch.utils.runtime import seed_everything

if TYPE_CHECKING:
    from pyimagesearch.inference.predict import Predictor


def build_parser() -> argparse.ArgumentParser:
    parser = CheckedParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                           parents=[runtime_parser()])
    parser.add_argument("-m", "--model", required=True,
                        help="a trained checkpoint (.pth), or a model exported with --export (.onnx)")
    parser.add_argument("--images", nargs="+", metavar="PATH", help="image files and/or folders to classify")
    parser.add_argument("--annotate", metavar="DIR",
                        help="with --images: write each photo with its label drawn on it, and a montage, to DIR")
    parser.add_argument("--explain", metavar="DIR",
                        help="with --images: write each photo with a Grad-CAM heatmap of what the model looked at, a "
                             "montage, and the raw maps (.npz), to DIR")
    parser.add_argument("--explain-class", metavar="NAME",
                        help="--explain: map this class instead of each photo's top class")
    parser.add_argument("--explain-layer", type=cli.name, default=config.EXPLAIN_LAYER, metavar="NAME",
                        help="the layer Grad-CAM reads, for --explain and --evaluate's mistakes "
                             "(default: %(default)s, ResNet50's last block)")
    parser.add_argument("--evaluate", metavar="DIR", help="class-folder tree to evaluate (e.g. dataset/val)")
    parser.add_argument("--audit", metavar="DIR",
                        help="class-folder tree whose photos to audit: likely label errors and outliers, ranked")
    parser.add_argument("--folds", type=cli.int_between(2, 100), default=config.AUDIT_FOLDS,
                        help="--audit: folds of the cross-validated head (default: %(default)s)")
    parser.add_argument("--feature-cache-dir", type=cli.name, default=config.FEATURE_CACHE_DIR,
                        help="--audit: where the body's features persist, auto = feature_cache/ beside --model, "
                             "none = not kept (default: %(default)s)")
    parser.add_argument("--video", metavar="PATH", help="classify the frames of a video file")
    parser.add_argument("--camera", type=cli.non_negative_int, metavar="N", help="classify a camera's frames (index N)")
    parser.add_argument("--export", metavar="PATH.onnx",
                        help="write the checkpoint as ONNX, with its metadata beside it as PATH.json, and stop")
    parser.add_argument("--val", default=config.VAL, help="folder the random batch comes from (default: %(default)s)")
    parser.add_argument("--batch-size", type=cli.positive_int, default=config.PRED_BATCH_SIZE,
                        help="images in the random batch (default: %(default)s)")
    parser.add_argument("--eval-batch-size", type=cli.positive_int, default=64,
                        help="batch size for --images and --evaluate (default: %(default)s)")
    parser.add_argument("--top-k", type=cli.positive_int, default=config.TOP_K,
                        help="classes printed per image (default: %(default)s)")
    parser.add_argument("--calibration", action=argparse.BooleanOptionalAction, default=config.CALIBRATION,
                        help="divide the logits by the temperature fitted at the end of training, so that the "
                             "probabilities match how often the model is right; --no-calibration gives the raw "
                             "softmax (default: %(default)s)")
    parser.add_argument("--unlike-percentile", type=cli.percentile, default=config.UNLIKE_PERCENTILE, metavar="P",
                        help="flag a photo as unlike every class beyond this percentile of the validation photos' "
                             "novelty, 50 to 100 (default: %(default)s: about 5 %% of photos like them are flagged)")
    parser.add_argument("--output", default=config.OUTPUT_PATH, help="folder for pictures and tables (default: %(default)s)")
    parser.add_argument("--seed", type=cli.seed, default=None, help="seed for the random batch (default: a new one each run)")
    parser.add_argument("--show", action="store_true", help="also open a window (needs a display)")
    parser.add_argument("--max-frames", type=cli.positive_int, help="stop --video/--camera after this many frames")
    return parser


def check_paths(args: argparse.Namespace) -> None:
    """--model is a file and --audit a folder, and --output lies outside the audited folder (its
    files would become a class of their own): checked before anything is created."""
    if os.path.isdir(args.model):
        models = sorted(name for name in os.listdir(args.model) if name.endswith((".pth", ".onnx")))
        raise UserError(f"--model '{args.model}' is a folder; pass a model file"
                        f"{', such as ' + repr(os.path.join(args.model, models[0])) if models else ''} (a .pth "
                        "checkpoint that a training script wrote, or a .onnx file that --export wrote).")
    if args.audit and not os.path.isdir(args.audit):
        what = "is a file, not a folder" if os.path.lexists(args.audit) else "does not exist"
        raise UserError(f"--audit '{args.audit}' {what}. --audit reads a folder of class folders, such as "
                        "dataset/train.")
    if args.audit:
        audited = os.path.realpath(args.audit)
        folders = [("--output", args.output)]
        if args.feature_cache_dir.lower() not in ("auto", "none"):
            folders.append(("--feature-cache-dir", args.feature_cache_dir))
        for flag, folder in folders:
            if os.path.realpath(folder) == audited or os.path.realpath(folder).startswith(audited + os.sep):
                raise UserError(f"{flag} '{folder}' is inside the audited folder '{args.audit}': what the audit "
                                f"writes there would be read as a class of photos. Choose a {flag} outside it.")


def check_flags(args: argparse.Namespace) -> None:
    """The flags that go together, and config.py's SEED where --audit uses it: checked with the
    flags, before the modes' libraries load."""
    for flag, value, own in (("--annotate", args.annotate, "annotated"), ("--explain", args.explain, "explained")):
        if value and not args.images:
            raise UserError(f"{flag} draws on the photos given with --images; add --images PATH...")
        if value and os.path.realpath(value) in {os.path.realpath(path) for path in args.images}:
            raise UserError(f"{flag} '{value}' is also a folder given to --images: the pictures {flag} writes would "
                            f"sit among the photos it reads. Give {flag} a folder of its own, such as "
                            f"'{os.path.join(value, own)}'.")
    if args.explain_class and not args.explain:
        raise UserError("--explain-class chooses the class --explain maps; add --explain DIR.")
    if args.explain and is_onnx(args.model):
        raise UserError(f"--explain reads the model's gradients, and '{args.model}', an exported ONNX model run by "
                        "OpenCV, has none. Pass the checkpoint it was exported from (a .pth file).")
    if args.video and args.camera is not None:
        raise UserError("--video and --camera: choose one source of frames.")
    if args.audit and args.seed is None:
        try:
            cli.seed(str(config.SEED))
        except argparse.ArgumentTypeError as error:
            raise UserError(f"SEED = {config.SEED!r} in pyimagesearch/config.py, which --audit uses for its folds "
                            f"without --seed: it {error}. Fix the value there or pass --seed.") from None


def chosen_modes(args: argparse.Namespace) -> list[str]:
    """The modes this command line runs, in the order they run; none: the tutorial's random batch."""
    return [flag for flag, chosen in (("--images", args.images), ("--evaluate", args.evaluate), ("--audit", args.audit),
                                      ("--video", args.video), ("--camera", args.camera is not None)) if chosen]


def check_command_line(args: argparse.Namespace) -> None:
    """The whole command line, once: the flags that go together, the paths, config.py's SEED where
    --audit uses it, and the audited folder's classes. Nothing is loaded or created before."""
    check_flags(args)
    check_paths(args)
    if args.audit:
        check_audit(args.model, args.audit, args.folds)


def check_explain(args: argparse.Namespace, predictor: Predictor) -> None:
    """--explain-class names a class of the model, and --explain-layer one of its layers."""
    from pyimagesearch.inference import gradcam

    if args.explain_class and args.explain_class not in predictor.class_names:
        raise UserError(f"--explain-class '{args.explain_class}' is not a class of {args.model}; its classes are "
                        f"{predictor.class_names}.")
    if args.explain or (args.evaluate and not is_onnx(args.model)):
        gradcam.check_layer(predictor.model, args.explain_layer)


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    check_command_line(args)  # every flag, path and config.py value, before anything below loads
    # torchvision, OpenCV, matplotlib, scikit-learn, cleanlab and torchcam load only now: together
    # they take longer than torch itself, and a mistyped flag should not wait for them
    from pyimagesearch import feature_cache
    from pyimagesearch.create_dataloaders import get_dataloader
    from pyimagesearch.inference import annotate, audit, deploy, evaluate, explain, predict, video
    from pyimagesearch.utils import fileio

    if args.export:  # alone: the checkpoint as ONNX, then stop
        meta = deploy.export_onnx(args.model, args.export)
        print(f"[INFO] wrote {args.export} and {deploy.metadata_path(args.export)} "
              f"({len(meta['class_names'])} classes, {meta['image_size']} px)")
        return
    cache_dir = feature_cache.cache_folder(args.feature_cache_dir, args.model) if args.audit else None
    for flag, folder in (("--output", args.output), ("--feature-cache-dir", cache_dir), ("--annotate", args.annotate),
                         ("--explain", args.explain)):
        if folder:
            fileio.check_writable_folder(folder, flag)
    if args.seed is not None:
        seed_everything(args.seed)
    keep_allocator_memory(settings.KEEP_ALLOCATOR_MEMORY)  # before the first large allocation

    # the model, loaded once for every mode of this command line
    predictor = predict.load_predictor(args, settings.FORWARD_CHUNK)
    check_explain(args, predictor)
    if args.images:
        rows = predict.classify_files(predictor, args.images, args.output, top_k=args.top_k,
                                      batch_size=args.eval_batch_size, model_path=args.model, annotate=args.annotate,
                                      explain=args.explain)
        if args.annotate:
            annotated = annotate.annotate_files(rows, args.annotate, f"{predictor.stem}_montage.jpg",
                                                progress=args.progress)
            print(f"[INFO] wrote {len(annotated.photos)} annotated photo(s) and {annotated.montage}")
        if args.explain:
            explained = explain.explain_files(predictor, [row["path"] for row in rows], args.explain,
                                              layer=args.explain_layer, class_name=args.explain_class,
                                              batch_size=args.eval_batch_size, progress=args.progress)
            print(f"[INFO] wrote {len(explained.photos)} explained photo(s), {explained.montage} and {explained.maps}")
    if args.evaluate:
        result = evaluate.evaluate_folder(predictor, args.evaluate, args.output, batch_size=args.eval_batch_size,
                                         progress=args.progress)
        if not is_onnx(args.model):
            explain.explain_mistakes(predictor, result["mistakes"], os.path.join(args.output, predictor.stem),
                                     layer=args.explain_layer)
    if args.audit:
        audit.audit_folder(predictor, args.model, args.audit, args.output, folds=args.folds,
                           seed=config.SEED if args.seed is None else args.seed, batch_size=args.eval_batch_size,
                           cache_dir=cache_dir, progress=args.progress)
    if args.video or args.camera is not None:
        video.classify_stream(predictor, args.video if args.video else args.camera, args.output, top_k=args.top_k,
                              show=args.show, progress=args.progress, max_frames=args.max_frames)
    if not chosen_modes(args):
        # the tutorial's inference: the validation set through the dataloader helper, one random
        # batch of it (decoded here: workers would take longer to start than the batch to read), the
        # model's predictions, and the picture of ground truth against prediction
        print("[INFO] loading the dataset...")
        val_ds, val_loader = get_dataloader(args.val, predictor.transform(), args.batch_size, shuffle=True,
                                            num_workers=0, device=str(predictor.compute.device),
                                            seed=random.randrange(2**32) if args.seed is None else args.seed)
        images, labels = next(iter(val_loader))
        print("[INFO] performing inference...")
        path = predict.plot_predictions(predictor, images, [val_ds.classes[int(i)] for i in labels], args.output)
        if args.show:
            predict.show(path)


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
