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
from functools import cached_property
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from .. import checkpoint
from ..arguments import is_onnx
from ..create_dataloaders import eval_decoder, eval_transforms, make_loader
from ..data.images import is_image_file
from ..freezing import fold_frozen_batchnorm
from ..model import Body
from ..trust.novelty import Novelty
from ..utils import fileio
from ..utils.errors import UserError
from ..utils.figures import denormalize, image_grid
from ..utils.fileio import NOT_REGULAR, is_regular_file
from ..utils.opencv import has_display
from ..utils.runtime import Compute, resolve_device, resolve_workers
from ..utils.text import drawable, printable
from . import deploy
from .output_folder import OUTPUTS_MANIFEST, annotated_names, check_targets, explained_names, written_here
from .trust_settings import trust_settings


@dataclass
class Predictor:
    """A checkpoint ready to predict: the model on its device, its metadata, and how to run it;
    the temperature its probabilities are divided by (1: raw), and its novelty reference (None:
    no photo is flagged)."""

    model: nn.Module
    meta: dict[str, Any]
    compute: Compute
    num_workers: int
    stem: str  # output names start with the checkpoint's name: finetune_model_predictions.png
    temperature: float = 1.0
    novelty: Novelty | None = None

    @property
    def class_names(self) -> list[str]:
        return self.meta["class_names"]

    @cached_property
    def body(self) -> nn.Module:
        return Body(self.model)

    @torch.inference_mode()
    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, np.ndarray | None]:
        """A batch's raw logits (float32, on the CPU) and, with a novelty reference, each photo's
        novelty, from the same pass: the body's features, then the head."""
        if self.novelty is None:
            return self.compute.infer(self.model, images).float().cpu(), None
        features = self.compute.infer(self.body, images)
        logits = self.compute.infer(self.model.fc, features).float().cpu()
        return logits, self.novelty.score(features)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Softmax of the logits divided by the temperature: calibrated, unless --no-calibration."""
        return (logits / self.temperature).softmax(1)

    def unlike(self, novelty: np.ndarray | None) -> np.ndarray | None:
        """Which photos are unlike every class, from ``forward``'s novelty (None without a reference)."""
        return None if novelty is None else self.novelty.flags(novelty)

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
        temperature, _ = trust_settings(args, meta)
        return Predictor(model, meta, Compute(cpu), resolve_workers(args.num_workers, cpu), stem, temperature)
    device = resolve_device(args.device)
    compute = Compute.from_settings(device, args.amp, args.channels_last, forward_chunk)
    model, meta = checkpoint.load(args.model)
    model.requires_grad_(False)
    if args.fold_bn:
        fold_frozen_batchnorm(model)
    model = compute.prepare(model).eval()
    temperature, reference = trust_settings(args, meta, feature_width=Body(model).width)
    return Predictor(model, meta, compute, resolve_workers(args.num_workers, device), stem, temperature, reference)


# --- the tutorial's picture ----------------------------------------------------------------

def plot_predictions(predictor: Predictor, images: torch.Tensor, truths: Sequence[str], output: str) -> str:
    """The tutorial's picture of a batch: each image with its ground truth and the prediction
    (green when right, red when wrong), as <output>/<model>_predictions.png."""
    predictions = predictor.probabilities(predictor.forward(images)[0])
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
        logits, novelty = predictor.forward(images)
        values, classes = predictor.probabilities(logits).topk(top_k, dim=1)
        unlike = predictor.unlike(novelty)
        for row, i in enumerate(indices):
            top = [{"class": class_names[int(c)], "probability": float(p)} for p, c in zip(values[row], classes[row])]
            rows.append({"path": files[i], "top": top, "novelty": None if novelty is None else float(novelty[row]),
                         "unlike_every_class": unlike is not None and bool(unlike[row])})
            print(f"{printable(files[i])}: " + ", ".join(f"{printable(t['class'])} {t['probability']:.3f}" for t in top)
                  + (f"  [unlike every class: novelty {novelty[row]:.2f}]" if rows[-1]["unlike_every_class"] else ""))
            if len(shown) < 16:
                title = f"{drawable(os.path.basename(files[i]))[:28]}\n{drawable(top[0]['class'])} ({top[0]['probability']:.2f})"
                shown.append((images[row], title + ("\nunlike every class" if rows[-1]["unlike_every_class"] else "")))
    seconds = time.perf_counter() - started
    for path, reason in problems:
        print(f"[WARN] skipped {printable(path)}: {reason}")
    if not rows:
        raise _nothing_classified(paths, problems, outputs_met)
    stem = os.path.join(output, f"{predictor.stem}_images")
    _write_tables(predictor, rows, problems, stem, model_path, top_k)
    image_grid(predictor.pixels(torch.stack([s[0] for s in shown])), [s[1] for s in shown], f"{stem}.png",
               colors=["red" if title.endswith("unlike every class") else "black" for _, title in shown],
               suptitle="Predictions")
    print(f"[INFO] {len(rows)} image(s) classified in {seconds:.1f}s ({len(rows) / max(seconds, 1e-9):.1f} images/s), "
          f"{len(problems)} skipped; wrote {stem}.json, {stem}.csv, {stem}.png")
    if predictor.novelty is not None:
        print(unlike_summary(predictor, sum(row["unlike_every_class"] for row in rows), len(rows)))
    return rows


def unlike_summary(predictor: Predictor, flagged: int, total: int, photos: str = "photo(s)") -> str:
    """One line: how many photos are unlike every class, and where that begins."""
    reference = predictor.novelty
    line = (f"[INFO] {flagged} of {total} {photos} ({flagged / max(total, 1):.1%}) unlike every class the model knows "
            f"(more unusual than {reference.percentile:g} % of the validation photos, novelty beyond "
            f"{reference.threshold:.2f}; --unlike-percentile moves it)")
    return line + (": their classes are guesses among the model's own" if flagged else "")


def _write_tables(predictor: Predictor, rows: list[dict], problems: list, stem: str, model_path: str,
                  top_k: int) -> None:
    """<stem>.json and <stem>.csv: each photo's top classes, novelty and flag; the skipped files."""
    reference = predictor.novelty
    payload = {"model": model_path, "temperature": predictor.temperature,
               "novelty_threshold": None if reference is None else reference.threshold,
               "novelty_percentile": None if reference is None else reference.percentile,
               "predictions": rows, "skipped": [{"path": p, "reason": r} for p, r in problems]}
    fileio.write_text(f"{stem}.json", json.dumps(payload, indent=2))
    header = ["path"] + [f"{kind}_{k + 1}" for k in range(top_k) for kind in ("class", "probability")]
    fileio.write_csv(f"{stem}.csv", [*header, "novelty", "unlike_every_class"],
                     ([row["path"]] + [v for t in row["top"] for v in (t["class"], f"{t['probability']:.6f}")]
                      + ["" if row["novelty"] is None else f"{row['novelty']:.4f}", int(row["unlike_every_class"])]
                      for row in rows))


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
