"""Do inference.py --explain's heatmaps point at the object, and what do they cost per photo?

Usage:
    python benchmarks/explain_discs.py                           # 4 classes, 224 px, ResNet50 stand-in
    python benchmarks/explain_discs.py --per-class 40 --image-size 128 --output /tmp/discs.json

Each photo holds one coloured disc (its class) at a random place on grey noise
(make_images.make_discs). A model is trained briefly and offline (--weights none, fine-tuning for
--epochs), then --explain maps the validation photos. Reported:
  - inside: the share of photos whose heatmap peak falls inside the disc, against chance (the
    mean share of the photo the disc covers);
  - seconds per photo for --images alone and for --images --explain, run side by side (alternated,
    --rounds times, the fastest of each kept).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))


def peak_inside(npz_path: str, discs: dict[str, list]) -> list[bool]:
    """For each photo of the archive, whether its map's highest point lies inside its disc."""
    inside = []
    with np.load(npz_path) as maps:
        for path in maps.files:
            cam = maps[path].astype(np.float32)
            y, x = np.unravel_index(int(cam.argmax()), cam.shape)
            cx, cy, radius = discs[path]
            inside.append(bool((x + 0.5 - cx) ** 2 + (y + 0.5 - cy) ** 2 <= radius ** 2))
    return inside


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-class", type=int, default=60, help="training photos per class (a quarter more for val)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--layer", default="layer4")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--output", default=os.path.join(ROOT, "benchmarks", "results", "explain_discs.json"))
    parser.add_argument("--montage", help="also keep the montage of the explained photos here (a .jpg)")
    args = parser.parse_args(argv)

    import torch
    from bench_training import machine, write_result
    from make_images import make_discs

    import fine_tune
    import inference

    work = tempfile.mkdtemp(prefix="explain-bench-")
    try:
        size = args.image_size
        make_discs(os.path.join(work, "train"), args.per_class, size, seed=0)
        discs = make_discs(os.path.join(work, "val"), max(4, args.per_class // 4), size, seed=1)
        out = os.path.join(work, "output")
        model = os.path.join(out, "finetune_model.pth")
        fine_tune.main(["--train", os.path.join(work, "train"), "--val", os.path.join(work, "val"), "--weights", "none",
                        "--image-size", str(size), "--epochs", str(args.epochs), "--batch-size", "16", "--no-progress",
                        "--plot", os.path.join(out, "finetune.png"), "--model", model])
        plain = ["--model", model, "--images", os.path.join(work, "val"), "--output", out, "--no-progress"]
        explained = [*plain, "--explain", os.path.join(out, "explained"), "--explain-layer", args.layer]
        seconds = {"images": [], "images_explain": []}
        for _ in range(args.rounds):
            for name, argv_ in (("images", plain), ("images_explain", explained)):
                started = time.perf_counter()
                inference.main(argv_)
                seconds[name].append(time.perf_counter() - started)
        inside = peak_inside(os.path.join(out, "explained", "finetune_model_explained.npz"), discs)
        if args.montage:
            shutil.copyfile(os.path.join(out, "explained", "finetune_model_explained_montage.jpg"), args.montage)
        history = json.load(open(os.path.join(out, "finetune_history.json")))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    photos = len(discs)
    chance = float(np.mean([np.pi * r ** 2 / size ** 2 for _, _, r in discs.values()]))
    per_photo = {name: round(min(values) / photos, 4) for name, values in seconds.items()}
    result = {"command": "python benchmarks/explain_discs.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "machine": machine("cuda" if torch.cuda.is_available() else "cpu"), "image_size": size,
              "layer": args.layer, "photos": photos,
              "val_acc": history[-1]["val_acc"], "peak_inside_disc": round(sum(inside) / len(inside), 4),
              "chance": round(chance, 4), "seconds_per_photo": per_photo,
              "explain_over_images": round(per_photo["images_explain"] / per_photo["images"], 2),
              "seconds_all_rounds": {name: [round(v, 2) for v in values] for name, values in seconds.items()}}
    write_result(result, args.output)


if __name__ == "__main__":
    main()
