"""What --explain writes: each photo at its own size with its Grad-CAM heatmap and label, a
montage of them all, and the raw maps in one .npz; and --evaluate's montage of the most
confident mistakes with their heatmaps."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence

import numpy as np
import torch
from tqdm import tqdm

from ..create_dataloaders import eval_decoder
from ..data.images import load_rgb
from ..utils import fileio
from ..utils.text import printable
from .drawing import (
    MONTAGE_LIMIT,
    MONTAGE_TILE,
    RED,
    draw_lines,
    hershey,
    montage_tile,
    to_bgr,
    write_image,
    write_montage,
)
from .gradcam import Explainer, at_size, overlay
from .output_folder import Written, check_targets, claim, explained_names
from .predict import Predictor

MISTAKES_SUFFIX = "_mistakes_explained.png"  # beside the report's <model>_mistakes.png


def _add_map(archive: zipfile.ZipFile, key: str, cam: np.ndarray) -> None:
    """One array of the .npz, streamed into it (a 4,000 px map is 32 MB; they are never all in memory)."""
    with archive.open(f"{key}.npy", "w", force_zip64=True) as member:
        np.lib.format.write_array(member, cam)


def explain_files(predictor: Predictor, paths: Sequence[str], folder: str, *, layer: str, class_name: str | None,
                  batch_size: int, progress: bool = True) -> Written:
    """Write <name>_explained.<ext> per photo, <model>_explained_montage.jpg and
    <model>_explained.npz (keyed by the path as given, float16 maps in [0, 1] at the photo's size)
    into ``folder``."""
    explainer = Explainer(predictor.model, predictor.compute, layer, predictor.temperature)
    chosen = None if class_name is None else predictor.class_names.index(class_name)
    names = explained_names(paths, predictor.stem)
    check_targets(folder, names, "--explain")
    claim(folder, names)
    size = predictor.meta["image_size"]
    transform, decode = predictor.transform(), eval_decoder(size)
    written, tiles, keys = [], [], set()

    def write_all(npz_temp: str) -> None:
        with zipfile.ZipFile(npz_temp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            bar = tqdm(total=len(paths), desc="explaining", unit="photo", disable=not progress, leave=False)
            for start in range(0, len(paths), batch_size):
                batch = list(paths[start:start + batch_size])
                images = torch.stack([transform(decode(path)) for path in batch])
                cams, probabilities = explainer.maps(images, None if chosen is None else [chosen] * len(batch))
                for path, name, cam, p in zip(batch, names[start:], cams, probabilities):
                    photo = to_bgr(load_rgb(path))
                    k = int(p.argmax()) if chosen is None else chosen
                    lines = [f"{predictor.class_names[k]}: {float(p[k]) * 100:.1f}%", f"Grad-CAM {layer}"]
                    placed = at_size(cam, photo.shape[1], photo.shape[0], size)  # once: the picture's and the .npz's
                    frame = draw_lines(overlay(photo, placed), [hershey(line) for line in lines])
                    write_image(os.path.join(folder, name), frame)
                    written.append(os.path.join(folder, name))
                    if len(tiles) < MONTAGE_LIMIT:
                        tiles.append(montage_tile(frame))
                    if path not in keys:
                        keys.add(path)
                        _add_map(archive, path, placed.astype(np.float16))
                bar.update(len(batch))
            bar.close()

    npz = os.path.join(folder, names[-1])
    fileio.atomic_write(npz, write_all)
    return Written(written, write_montage(tiles, os.path.join(folder, names[-2])), npz)


def explain_mistakes(predictor: Predictor, mistakes: Sequence[dict], prefix: str, *, layer: str,
                     limit: int = 16) -> str | None:
    """The most confident mistakes (the report's, most confident first), each with the heatmap of
    the class it was taken for and "true -> predicted": <prefix>_mistakes_explained.png."""
    path = f"{prefix}{MISTAKES_SUFFIX}"
    shown = [m for m in mistakes if m.get("path")][:limit]
    if not shown:
        if os.path.isfile(path):
            os.remove(path)  # an old picture would describe another model
        return None
    explainer = Explainer(predictor.model, predictor.compute, layer, predictor.temperature)
    size = predictor.meta["image_size"]
    transform, decode = predictor.transform(), eval_decoder(size)
    images = torch.stack([transform(decode(m["path"])) for m in shown])
    cams, _ = explainer.maps(images, [predictor.class_names.index(m["predicted"]) for m in shown])
    tiles = []
    for mistake, cam in zip(shown, cams):
        photo = montage_tile(to_bgr(load_rgb(mistake["path"], MONTAGE_TILE[0])))
        lines = [f"{mistake['true']} -> {mistake['predicted']}", f"({mistake['probability']:.2f})"]
        placed = at_size(cam, photo.shape[1], photo.shape[0], size)
        tiles.append(draw_lines(overlay(photo, placed), [hershey(line) for line in lines], RED))
    print(f"[INFO] wrote {printable(path)}: the {len(shown)} most confident mistakes with what the model looked at")
    return write_montage(tiles, path)

