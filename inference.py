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
import csv
import io
import json
import os
import random
import time
from collections.abc import Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from pyimagesearch import checkpoint, config, plots, report
from pyimagesearch.create_dataloaders import eval_transforms, image_folder
from pyimagesearch.errors import UserError, run_cli
from pyimagesearch.images import is_image_file, load_rgb
from pyimagesearch.model import fold_frozen_batchnorm
from pyimagesearch.runtime import Precision, resolve_amp, resolve_device, seed_everything


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-m", "--model", required=True, help="path to a trained checkpoint (.pth)")
    parser.add_argument("--images", nargs="+", metavar="PATH", help="image files and/or folders to classify")
    parser.add_argument("--evaluate", metavar="DIR", help="class-folder tree to evaluate (e.g. dataset/val)")
    parser.add_argument("--val", default=config.VAL, help="folder the random batch comes from (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=config.PRED_BATCH_SIZE,
                        help="images in the random batch (default: %(default)s)")
    parser.add_argument("--eval-batch-size", type=int, default=64,
                        help="batch size for --images and --evaluate (default: %(default)s)")
    parser.add_argument("--top-k", type=int, default=config.TOP_K, help="classes printed per image (default: %(default)s)")
    parser.add_argument("--output", default=config.OUTPUT_PATH, help="folder for pictures and tables (default: %(default)s)")
    parser.add_argument("--device", default=config.DEVICE, help="cuda, mps or cpu (default: %(default)s)")
    parser.add_argument("--amp", default=config.AMP, help="auto, off, bf16, fp16 (default: %(default)s)")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=config.CHANNELS_LAST)
    parser.add_argument("--num-workers", type=int, default=config.NUM_WORKERS)
    parser.add_argument("--seed", type=int, default=None, help="seed for the random batch (default: a new one each run)")
    parser.add_argument("--show", action="store_true", help="also open a window (needs a display)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
    return parser


class ImageFiles(Dataset):
    """User-given files; a file that fails to decode yields a reason instead of stopping the run."""

    def __init__(self, paths: list[str], transform) -> None:
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        try:
            return self.transform(load_rgb(self.paths[index])), index, ""
        except Exception as error:
            return torch.zeros(3, 1, 1), index, f"{type(error).__name__}: {error}"


def _collate(batch):
    good = [item for item in batch if not item[2]]
    images = torch.stack([item[0] for item in good]) if good else torch.empty(0)
    return images, [item[1] for item in good], [(item[1], item[2]) for item in batch if item[2]]


def expand_paths(paths: Sequence[str]) -> tuple[list[str], list[tuple[str, str]]]:
    files, problems = [], []
    for path in paths:
        if os.path.isdir(path):
            for folder, dirs, names in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                files += [os.path.join(folder, n) for n in sorted(names) if is_image_file(n)]
        elif os.path.isfile(path):
            files.append(path)
        else:
            problems.append((path, "no such file or folder"))
    return files, problems


def classify_files(model, meta: dict, precision: Precision, args: argparse.Namespace, stem: str) -> list[dict]:
    files, problems = expand_paths(args.images)
    if not files:
        raise UserError(f"No image files found in {args.images}. Pass .jpg/.jpeg/.png/.bmp/.webp files or folders.")
    transform = eval_transforms(meta["image_size"], meta["mean"], meta["std"])
    loader = DataLoader(ImageFiles(files, transform), batch_size=args.eval_batch_size, shuffle=False,
                        num_workers=args.num_workers, collate_fn=_collate)
    class_names, top_k = meta["class_names"], max(1, min(args.top_k, len(meta["class_names"])))
    rows, shown = [], []
    started = time.perf_counter()
    with torch.inference_mode():
        for images, indices, failures in loader:
            problems += [(files[i], reason) for i, reason in failures]
            if not indices:
                continue
            with precision.autocast():
                probabilities = model(precision.to_device(images)).float().softmax(1).cpu()
            values, classes = probabilities.topk(top_k, dim=1)
            for row, i in enumerate(indices):
                top = [{"class": class_names[int(c)], "probability": float(p)} for p, c in zip(values[row], classes[row])]
                rows.append({"path": files[i], "top": top})
                print(f"{files[i]}: " + ", ".join(f"{t['class']} {t['probability']:.3f}" for t in top))
                if len(shown) < 16:
                    title = f"{os.path.basename(files[i])[:28]}\n{top[0]['class']} ({top[0]['probability']:.2f})"
                    shown.append((images[row], title))
    seconds = time.perf_counter() - started
    for path, reason in problems:
        print(f"[WARN] skipped {path}: {reason}")
    json_path, csv_path = os.path.join(args.output, f"{stem}_images.json"), os.path.join(args.output, f"{stem}_images.csv")
    payload = {"model": args.model, "predictions": rows, "skipped": [{"path": p, "reason": r} for p, r in problems]}
    checkpoint.write_text(json_path, json.dumps(payload, indent=2))
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["path"] + [f"{kind}_{k + 1}" for k in range(top_k) for kind in ("class", "probability")])
    for row in rows:
        writer.writerow([row["path"]] + [v for t in row["top"] for v in (t["class"], f"{t['probability']:.6f}")])
    checkpoint.write_text(csv_path, buffer.getvalue())
    if shown:
        picture = os.path.join(args.output, f"{stem}_images.png")
        plots.image_grid(plots.denormalize(torch.stack([s[0] for s in shown]), meta["mean"], meta["std"]),
                         [s[1] for s in shown], picture, suptitle="Predictions")
        print(f"[INFO] {len(rows)} image(s) classified in {seconds:.1f}s ({len(rows) / max(seconds, 1e-9):.1f} images/s), "
              f"{len(problems)} skipped; wrote {json_path}, {csv_path}, {picture}")
    return rows


def evaluate_folder(model, meta: dict, precision: Precision, args: argparse.Namespace, stem: str) -> dict:
    ds = image_folder(args.evaluate, eval_transforms(meta["image_size"], meta["mean"], meta["std"]),
                      draft_size=meta["image_size"])
    unknown = [c for c in ds.classes if c not in meta["class_names"]]
    if unknown:
        raise UserError(f"'{args.evaluate}' has class folders the model does not know: {unknown}. "
                        f"The model's classes are {meta['class_names']}.")
    label_map = [meta["class_names"].index(c) for c in ds.classes]
    loader = DataLoader(ds, batch_size=args.eval_batch_size, shuffle=False, num_workers=args.num_workers)
    return report.evaluate_and_report(model, loader, meta["class_names"], precision,
                                      os.path.join(args.output, stem), meta["mean"], meta["std"],
                                      progress=args.progress, label_map=label_map)


def random_batch(model, meta: dict, precision: Precision, args: argparse.Namespace, stem: str) -> str:
    """The tutorial's picture: a random batch of validation images, ground truth vs prediction."""
    print("[INFO] loading the dataset...")
    ds = image_folder(args.val, eval_transforms(meta["image_size"], meta["mean"], meta["std"]))
    indices = random.sample(range(len(ds)), min(args.batch_size, len(ds)))
    images = torch.stack([ds[i][0] for i in indices])
    truths = [ds.classes[ds.targets[i]] for i in indices]  # the label without decoding the image again
    print("[INFO] performing inference...")
    with torch.inference_mode(), precision.autocast():
        predictions = model(precision.to_device(images)).float().softmax(1).cpu()
    titles, colors = [], []
    for truth, probabilities in zip(truths, predictions):
        predicted = meta["class_names"][int(probabilities.argmax())]
        titles.append(f"Ground Truth: {truth}\nPredicted: {predicted} ({float(probabilities.max()):.2f})")
        colors.append("green" if predicted == truth else "red")
    path = os.path.join(args.output, f"{stem}_predictions.png")
    plots.image_grid(plots.denormalize(images, meta["mean"], meta["std"]), titles, path, colors=colors)
    print(f"[INFO] wrote {path}")
    return path


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.seed is not None:
        seed_everything(args.seed)
    device = resolve_device(args.device)
    precision = Precision(device, resolve_amp(args.amp, device), args.channels_last)
    print("[INFO] loading the model...")
    model, meta = checkpoint.load(args.model)
    model.requires_grad_(False)
    if config.FOLD_BN:
        fold_frozen_batchnorm(model)
    model = precision.prepare(model).eval()
    stem = os.path.splitext(os.path.basename(args.model))[0]
    os.makedirs(args.output, exist_ok=True)
    if args.images:
        classify_files(model, meta, precision, args, stem)
    if args.evaluate:
        evaluate_folder(model, meta, precision, args, stem)
    if not args.images and not args.evaluate:
        path = random_batch(model, meta, precision, args, stem)
        if args.show:
            show(path)


def show(path: str) -> None:
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or os.name == "nt"):
        print(f"[WARN] --show: no display found; the picture is at {path}")
        return
    import matplotlib

    try:
        matplotlib.use("TkAgg", force=True)
    except Exception:
        print(f"[WARN] --show: no interactive matplotlib backend; the picture is at {path}")
        return
    import matplotlib.image as mpimg
    import matplotlib.pyplot as plt

    plt.figure("Results")
    plt.imshow(mpimg.imread(path))
    plt.axis("off")
    plt.show()


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
