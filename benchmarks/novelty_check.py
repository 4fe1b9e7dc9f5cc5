"""Are the calibrated probabilities better, and does "unlike every class" find photos of no class,
on data nobody tuned either on?

Usage:
    python benchmarks/novelty_check.py
    python benchmarks/novelty_check.py --held-out tulips roses daisy --per-class 100 --image-size 96

Offline by default (--weights none: the ResNet50 stand-in). For each class held out in turn, the generated
flowers of the other four are split by build_dataset.py and trained on by both scripts, as a user
runs them. inference.py --images then sees photos nobody fitted anything on: fresh photos of the
four known classes, and photos of no known class (the held-out flowers, noise, flat colour). The
share of each flagged, the AUROC of the novelty score, and the expected calibration error of the
fresh known photos, raw and calibrated (inference.py --evaluate), are recorded per script.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))


def quietly(script, argv: list[str]) -> str:
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        script.main(argv)
    return buffer.getvalue()


def no_class_photos(root: str, count: int, size: int, seed: int) -> dict[str, list[str]]:
    """Noise and flat-colour pictures: what a camera roll holds besides flowers, at its extremes."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    made: dict[str, list[str]] = {"noise": [], "flat colour": []}
    os.makedirs(root, exist_ok=True)
    for i in range(count):
        noise, flat = os.path.join(root, f"noise_{i}.jpg"), os.path.join(root, f"flat_{i}.jpg")
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(noise, quality=90)
        Image.new("RGB", (size, size), tuple(int(c) for c in rng.integers(0, 256, 3))).save(flat, quality=90)
        made["noise"].append(noise)
        made["flat colour"].append(flat)
    return made


def files(folder: str) -> list[str]:
    return sorted(os.path.join(d, n) for d, _, names in os.walk(folder) for n in names if n.endswith(".jpg"))


def measure(model: str, stem: str, kinds: dict[str, list[str]], fresh: str, out: str) -> dict:
    """Flags and novelty of every photo, by kind; calibration on the fresh known photos."""
    from sklearn.metrics import roc_auc_score

    import inference

    every = [path for paths in kinds.values() for path in paths]
    common = ["--model", model, "--output", out, "--no-progress"]
    quietly(inference, [*common, "--images", *every])
    rows = {r["path"]: r for r in json.loads(open(os.path.join(out, f"{stem}_images.json")).read())["predictions"]}
    shares = {kind: float(np.mean([rows[p]["unlike_every_class"] for p in paths])) for kind, paths in kinds.items()}
    unknown = [p for kind, paths in kinds.items() if kind != "known" for p in paths]
    scores = [rows[p]["novelty"] for p in kinds["known"] + unknown]
    quietly(inference, [*common, "--evaluate", fresh])
    calibration = json.loads(open(os.path.join(out, f"{stem}_report.json")).read())["calibration"]
    return {"flagged": shares, "recall": float(np.mean([rows[p]["unlike_every_class"] for p in unknown])),
            "false_alarm": shares["known"],
            "auroc": float(roc_auc_score([0] * len(kinds["known"]) + [1] * len(unknown), scores)),
            # the usual stand-in for a novelty score: a low top probability
            "auroc_max_softmax": float(roc_auc_score([0] * len(kinds["known"]) + [1] * len(unknown),
                                                     [-rows[p]["top"][0]["probability"] for p in kinds["known"] + unknown])),
            "temperature": calibration["temperature"], "ece_raw": calibration["ece_raw"],
            # a declined temperature leaves the probabilities raw: calibrated is raw then
            "ece_calibrated": calibration.get("ece_calibrated", calibration["ece_raw"]),
            "fresh_photos": calibration["photos"]}


def one_held_out(held_out: str, args: argparse.Namespace, work: str, seed: int) -> dict:
    import torch
    from make_images import DISTINCT_CLASSES, make_flowers

    import build_dataset
    import fine_tune
    import train_feature_extraction
    from pyimagesearch.trust import novelty

    known = {name: value for name, value in DISTINCT_CLASSES.items() if name != held_out}
    photos = make_flowers(os.path.join(work, "photos"), args.per_class, 2 * args.image_size, seed, known)
    fresh = make_flowers(os.path.join(work, "fresh"), args.test_per_class, 2 * args.image_size, seed + 100, known)
    unseen = make_flowers(os.path.join(work, "unseen"), args.test_per_class * 2, 2 * args.image_size, seed + 200,
                          {held_out: DISTINCT_CLASSES[held_out]})
    kinds = {"known": files(fresh), f"held-out {held_out}": files(unseen),
             **no_class_photos(os.path.join(work, "other"), args.test_per_class, 2 * args.image_size, seed + 300)}
    dataset = os.path.join(work, "dataset")
    quietly(build_dataset, ["--data", photos, "--output", dataset, "--val-split", "0.2", "--no-progress"])
    common = ["--train", os.path.join(dataset, "train"), "--val", os.path.join(dataset, "val"), "--weights", args.weights,
              "--image-size", str(args.image_size), "--no-progress", "--seed", str(seed)]
    result = {}
    for script, stem, extra in ((train_feature_extraction, "warmup", ["--epochs", str(args.fe_epochs)]),
                                (fine_tune, "finetune", ["--epochs", str(args.ft_epochs), "--batch-size", "16"])):
        out = os.path.join(work, stem)
        log = quietly(script, [*common, *extra, "--plot", os.path.join(out, f"{stem}.png"),
                               "--model", os.path.join(out, f"{stem}_model.pth")])
        model = os.path.join(out, f"{stem}_model.pth")
        measured = measure(model, f"{stem}_model", kinds, fresh, os.path.join(out, "inference"))
        measured["validation_ece"] = next(line for line in log.splitlines() if line.startswith("[INFO] calibration"))
        reference = torch.load(model, weights_only=True)["novelty"]
        measured["novelty_mib"] = novelty.extra_bytes(reference) / 2**20
        measured["checkpoint_mib"] = os.path.getsize(model) / 2**20
        result[script.__name__] = measured
        print(f"  {held_out:10s} {script.__name__:24s} recall {measured['recall']:.2f} false alarm "
              f"{measured['false_alarm']:.2f} AUROC {measured['auroc']:.3f} (max softmax "
              f"{measured['auroc_max_softmax']:.3f}) | ECE {measured['ece_raw']:.3f} -> "
              f"{measured['ece_calibrated']:.3f} (T {measured['temperature']:.2f}) | "
              + ", ".join(f"{k} {v:.2f}" for k, v in measured["flagged"].items()), flush=True)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--held-out", nargs="+", default=["tulips", "roses", "daisy"])
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--test-per-class", type=int, default=40)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--weights", default="none", help="none: the offline stand-in; IMAGENET1K_V1 where it can load")
    parser.add_argument("--fe-epochs", type=int, default=15)
    parser.add_argument("--ft-epochs", type=int, default=4)
    parser.add_argument("--output", default=os.path.join(ROOT, "benchmarks", "results", "novelty_check.json"))
    args = parser.parse_args(argv)

    from bench_training import machine, write_result

    from pyimagesearch import config
    from pyimagesearch.utils.runtime import Compute, resolve_device

    result = {"machine": machine("cpu"), "precision": Compute.from_settings(resolve_device(config.DEVICE), "auto", True,
                                                                             "auto").describe(),
              "settings": vars(args), "runs": {}}
    for index, held_out in enumerate(args.held_out):
        with tempfile.TemporaryDirectory(prefix="novelty-") as work:
            result["runs"][held_out] = one_held_out(held_out, args, work, seed=index)
    for script in ("train_feature_extraction", "fine_tune"):
        runs = [run[script] for run in result["runs"].values()]
        result[script] = {key: [min(r[key] for r in runs), max(r[key] for r in runs)]
                          for key in ("recall", "false_alarm", "auroc", "auroc_max_softmax", "ece_raw", "ece_calibrated")}
        print(f"{script}: " + ", ".join(f"{k} {lo:.3f}-{hi:.3f}" for k, (lo, hi) in result[script].items()))
    write_result(result, args.output)


if __name__ == "__main__":
    main()
