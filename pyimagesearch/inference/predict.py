"""What inference.py does with a trained checkpoint: the tutorial's random-batch picture, top-k
for the user's own photos, and a full evaluation report.

Every mode decodes a file the same way (Pillow, EXIF orientation applied, drafted to the image
size, squash-resized, normalised with the checkpoint's own mean/std), so one photo becomes one
input tensor whichever mode sees it.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from .. import checkpoint, engine
from ..arguments import is_onnx
from ..create_dataloaders import eval_decoder, eval_image_folder, eval_transforms, make_loader
from ..data.images import is_image_file
from ..freezing import fold_frozen_batchnorm
from ..utils import fileio
from ..utils.errors import UserError
from ..utils.figures import denormalize, image_grid
from ..utils.fileio import NOT_REGULAR, is_regular_file
from ..utils.opencv import has_display
from ..utils.runtime import Compute, resolve_device, resolve_workers
from ..utils.text import drawable, printable
from . import deploy
from .output_folder import OUTPUTS_MANIFEST, annotated_names, check_targets, explained_names, written_here


@dataclass
class Predictor:
    """A checkpoint ready to predict: the model on its device, its metadata, and how to run it."""

    model: nn.Module
    meta: dict[str, Any]
    compute: Compute
    num_workers: int
    stem: str  # output names start with the checkpoint's name: finetune_model_predictions.png

    @property
    def class_names(self) -> list[str]:
        return self.meta["class_names"]

    def transform(self):
        return eval_transforms(self.meta["image_size"], self.meta["mean"], self.meta["std"])

    def pixels(self, images: torch.Tensor):
        return denormalize(images, self.meta["mean"], self.meta["std"])


def load_predictor(args: argparse.Namespace, forward_chunk: int | str) -> Predictor:
    """The model rebuilt from the checkpoint alone, frozen, folded and on the device; or an
    exported ``.onnx`` file, run by OpenCV's DNN module on the CPU. ``forward_chunk`` is
    settings.FORWARD_CHUNK."""
    stem = os.path.splitext(os.path.basename(args.model))[0]
    print("[INFO] loading the model...")
    if is_onnx(args.model):
        model, meta = deploy.load_onnx(args.model)
        cpu = torch.device("cpu")
        print("[INFO] running the exported model with OpenCV's DNN module on the CPU")
        return Predictor(model, meta, Compute(cpu), resolve_workers(args.num_workers, cpu), stem)
    device = resolve_device(args.device)
    compute = Compute.from_settings(device, args.amp, args.channels_last, forward_chunk)
    model, meta = checkpoint.load(args.model)
    model.requires_grad_(False)
    if args.fold_bn:
        fold_frozen_batchnorm(model)
    model = compute.prepare(model).eval()
    return Predictor(model, meta, compute, resolve_workers(args.num_workers, device), stem)


# --- the tutorial's picture ----------------------------------------------------------------

def plot_predictions(predictor: Predictor, images: torch.Tensor, truths: Sequence[str], output: str) -> str:
    """The tutorial's picture of a batch: each image with its ground truth and the prediction
    (green when right, red when wrong), as <output>/<model>_predictions.png."""
    predictions = engine.probabilities(predictor.model, images, predictor.compute)
    titles, colors = [], []
    for truth, probabilities in zip(truths, predictions):
        predicted = predictor.class_names[int(probabilities.argmax())]
        titles.append(f"Ground Truth: {truth}\nPredicted: {predicted} ({float(probabilities.max()):.2f})")
        colors.append("green" if predicted == truth else "red")
    path = os.path.join(output, f"{predictor.stem}_predictions.png")
    image_grid(predictor.pixels(images), titles, path, colors=colors)
    print(f"[INFO] wrote {path}")
    return path


# --- the user's own photos ---------------------------------------------------------------------

class ImageFiles(Dataset):
    """User-given files; a file that fails to decode yields a reason instead of stopping the run."""

    def __init__(self, paths: list[str], transform, image_size: int) -> None:
        self.paths, self.transform, self.loader = paths, transform, eval_decoder(image_size)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        try:
            return self.transform(self.loader(self.paths[index])), index, ""
        except Exception as error:
            return torch.zeros(3, 1, 1), index, f"{type(error).__name__}: {error}"


def collate_readable(batch):
    """ImageFiles' items as (images that decoded, their indices, (index, reason) of the others)."""
    good = [item for item in batch if not item[2]]
    images = torch.stack([item[0] for item in good]) if good else torch.empty(0)
    return images, [item[1] for item in good], [(item[1], item[2]) for item in batch if item[2]]


def expand_paths(paths: Sequence[str], skip: Sequence[str] = ()) -> tuple[list[str], list[tuple[str, str]], list[str]]:
    """Files given by name, and image files found in given folders; what cannot be read is listed.
    Folders in ``skip`` (this run's --annotate and --explain) and the pictures --annotate or
    --explain wrote anywhere are outputs, not inputs: the third list names the folders where only
    outputs were met. A user's own photos beside such pictures are classified as any others."""
    files, problems, outputs_met = [], [], []
    outputs = {os.path.realpath(folder) for folder in skip}
    for path in paths:
        if os.path.isdir(path):
            for folder, dirs, names in os.walk(path):
                if os.path.realpath(folder) in outputs:
                    print(f"[INFO] not classifying the photos in {printable(folder)}: it is the --annotate or "
                          "--explain folder")
                    outputs_met.append(folder)
                    dirs[:] = []
                    continue
                theirs = set(names) - written_here(folder) - {OUTPUTS_MANIFEST}
                if len(theirs) < len(names):
                    print(f"[INFO] not classifying the pictures in {printable(folder)} that --annotate or --explain "
                          "wrote")
                    if not any(is_image_file(name) for name in theirs):
                        outputs_met.append(folder)
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(theirs):
                    full = os.path.join(folder, name)
                    if not is_image_file(name):
                        continue
                    if is_regular_file(full):
                        files.append(full)
                    else:
                        problems.append((full, NOT_REGULAR))
        elif is_regular_file(path):
            files.append(path)
        elif os.path.lexists(path):
            problems.append((path, NOT_REGULAR if os.path.exists(path) else "a link to nothing"))
        else:
            problems.append((path, "no such file or folder"))
    return files, problems, outputs_met


def _nothing_classified(paths: Sequence[str], problems: list, outputs_met: list[str]) -> UserError:
    if outputs_met and not problems:
        folder = outputs_met[0]
        return UserError(f"No image could be classified: '{printable(folder)}' holds only what --annotate or "
                         "--explain wrote, and those pictures are never classified (they would be read back as they "
                         "are written). Pass the folder of your own photos to --images.")
    return UserError(f"No image could be classified: {len(problems)} path(s) skipped (listed above), none "
                     f"usable among {[printable(p) for p in paths]}. Pass .jpg/.jpeg/.png/.bmp/.webp files or folders "
                     "holding them.")


def classify_files(predictor: Predictor, paths: Sequence[str], output: str, *, top_k: int, batch_size: int,
                   model_path: str, annotate: str | None = None, explain: str | None = None) -> list[dict]:
    """Top-k classes for each file; writes <stem>_images.json/.csv/.png. Raises UserError when
    nothing could be classified. With ``annotate`` or ``explain`` (folders), what --annotate and
    --explain will write there is checked first, and their photos are never inputs."""
    files, problems, outputs_met = expand_paths(paths, skip=[folder for folder in (annotate, explain) if folder])
    if annotate:
        check_targets(annotate, [*annotated_names(files), f"{predictor.stem}_montage.jpg"])
    if explain:
        check_targets(explain, explained_names(files, predictor.stem), "--explain")
    class_names = predictor.class_names
    top_k = max(1, min(top_k, len(class_names)))
    loader = make_loader(ImageFiles(files, predictor.transform(), predictor.meta["image_size"]), batch_size,
                         shuffle=False, num_workers=min(predictor.num_workers, len(files)),
                         device=str(predictor.compute.device), collate_fn=collate_readable)
    rows, shown = [], []
    started = time.perf_counter()
    for images, indices, failures in loader:
        problems += [(files[i], reason) for i, reason in failures]
        if not indices:
            continue
        values, classes = engine.probabilities(predictor.model, images, predictor.compute).topk(top_k, dim=1)
        for row, i in enumerate(indices):
            top = [{"class": class_names[int(c)], "probability": float(p)} for p, c in zip(values[row], classes[row])]
            rows.append({"path": files[i], "top": top})
            print(f"{printable(files[i])}: " + ", ".join(f"{printable(t['class'])} {t['probability']:.3f}" for t in top))
            if len(shown) < 16:
                title = f"{drawable(os.path.basename(files[i]))[:28]}\n{drawable(top[0]['class'])} ({top[0]['probability']:.2f})"
                shown.append((images[row], title))
    seconds = time.perf_counter() - started
    for path, reason in problems:
        print(f"[WARN] skipped {printable(path)}: {reason}")
    if not rows:
        raise _nothing_classified(paths, problems, outputs_met)
    stem = os.path.join(output, f"{predictor.stem}_images")
    payload = {"model": model_path, "predictions": rows, "skipped": [{"path": p, "reason": r} for p, r in problems]}
    fileio.write_text(f"{stem}.json", json.dumps(payload, indent=2))
    fileio.write_csv(f"{stem}.csv", ["path"] + [f"{kind}_{k + 1}" for k in range(top_k) for kind in ("class", "probability")],
                     ([row["path"]] + [v for t in row["top"] for v in (t["class"], f"{t['probability']:.6f}")]
                      for row in rows))
    image_grid(predictor.pixels(torch.stack([s[0] for s in shown])), [s[1] for s in shown], f"{stem}.png",
                     suptitle="Predictions")
    print(f"[INFO] {len(rows)} image(s) classified in {seconds:.1f}s ({len(rows) / max(seconds, 1e-9):.1f} images/s), "
          f"{len(problems)} skipped; wrote {stem}.json, {stem}.csv, {stem}.png")
    return rows


# --- a full report ------------------------------------------------------------------------------

def evaluate_folder(predictor: Predictor, folder: str, output: str, *, batch_size: int, progress: bool) -> dict:
    """Metrics, confusion matrix and mistakes for a class-folder tree (e.g. dataset/val)."""
    meta = predictor.meta
    ds = eval_image_folder(folder, meta["image_size"], meta["mean"], meta["std"])
    for path in ds.skipped:
        print(f"[WARN] skipped {printable(path)}: {NOT_REGULAR}")
    unknown = [c for c in ds.classes if c not in predictor.class_names]
    if unknown:
        raise UserError(f"'{folder}' has class folders the model does not know: {unknown}. "
                        f"The model's classes are {predictor.class_names}.")
    label_map = [predictor.class_names.index(c) for c in ds.classes]
    loader = make_loader(ds, batch_size, shuffle=False, num_workers=predictor.num_workers,
                         device=str(predictor.compute.device))
    return engine.evaluate_and_report(predictor.model, loader, predictor.class_names, predictor.compute,
                                      os.path.join(output, predictor.stem), meta["mean"], meta["std"],
                                      progress=progress, label_map=label_map)


def show(path: str) -> None:
    """Open the picture in a window when there is a display; say where it is otherwise."""
    if not has_display():
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
