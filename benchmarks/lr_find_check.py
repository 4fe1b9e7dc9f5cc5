"""Does --find-lr's suggestion train well, on data nobody tuned it on? And what does it cost?

Usage:
    python benchmarks/lr_find_check.py
    python benchmarks/lr_find_check.py --per-class 60 --image-size 96 --output /tmp/lr_find.json

Offline (--weights none: the ResNet50 stand-in), on generated flowers split by build_dataset.py,
for each training script: --find-lr, then four runs to the end at the suggested rate, a tenth of
it, ten times it, and the tutorial's rate; the validation accuracy of each (final and best), and
the range test's seconds against one training epoch's.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))


def run(script, argv: list[str]) -> None:
    with contextlib.redirect_stdout(io.StringIO()):
        script.main(argv)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-class", type=int, default=60)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--fe-epochs", type=int, default=20)
    parser.add_argument("--ft-epochs", type=int, default=5)
    parser.add_argument("--output", default=os.path.join(ROOT, "benchmarks", "results", "lr_find_check.json"))
    args = parser.parse_args(argv)

    from bench_training import machine, write_result
    from make_images import DISTINCT_CLASSES, make_flowers

    import build_dataset
    import fine_tune
    import train_feature_extraction
    from pyimagesearch import config

    scripts = {"train_feature_extraction.py": (train_feature_extraction, "warmup", config.LR, args.fe_epochs, 32),
               "fine_tune.py": (fine_tune, "finetune", config.LR_FINETUNE, args.ft_epochs, 16)}
    result = {"machine": machine("cpu"), "settings": vars(args), "scripts": {}}
    with tempfile.TemporaryDirectory(prefix="lr-find-") as work:
        photos = make_flowers(os.path.join(work, "photos"), args.per_class, 2 * args.image_size, 0, DISTINCT_CLASSES)
        dataset = os.path.join(work, "dataset")
        with contextlib.redirect_stdout(io.StringIO()):
            build_dataset.main(["--data", photos, "--output", dataset, "--val-split", "0.25", "--no-progress"])
        for name, (script, stem, tutorial_lr, epochs, batch) in scripts.items():
            out = os.path.join(work, stem)

            common = ["--train", os.path.join(dataset, "train"), "--val", os.path.join(dataset, "val"), "--weights",
                      "none", "--image-size", str(args.image_size), "--batch-size", str(batch), "--epochs", str(epochs),
                      "--no-progress", "--no-report"]

            def flags(tag: str, *extra: str, common=common, out=out, stem=stem) -> list[str]:
                return [*common, "--model", os.path.join(out, tag, f"{stem}_model.pth"),
                        "--plot", os.path.join(out, tag, f"{stem}.png"), *extra]

            run(script, flags("find", "--find-lr"))
            found = json.load(open(os.path.join(out, "find", f"{stem}_model_lr_find.json")))
            row = {"suggested": found["suggested"], "valley": found.get("valley"), "steepest": found.get("steepest"),
                   "range_test_s": round(found["seconds"], 2), "runs": {}}
            if found["suggested"] is not None:
                rates = {"suggested": found["suggested"], "suggested / 10": found["suggested"] / 10,
                         "suggested x 10": found["suggested"] * 10, "tutorial": tutorial_lr}
                for tag, rate in rates.items():
                    folder = tag.replace(" ", "").replace("/", "div")
                    run(script, flags(folder, "--lr", f"{rate:.6g}"))
                    history = json.load(open(os.path.join(out, folder, f"{stem}_history.json")))
                    row["runs"][tag] = {"lr": rate, "val_acc": history[-1]["val_acc"],
                                        "best_val_acc": max(r["val_acc"] for r in history),
                                        "epoch_s": round(sum(r["seconds"] for r in history) / len(history), 2)}
                best = max(r["val_acc"] for r in row["runs"].values())
                row["suggested_within_0.05_of_best"] = row["runs"]["suggested"]["val_acc"] >= best - 0.05
                row["range_test_over_one_epoch"] = round(row["range_test_s"] / row["runs"]["tutorial"]["epoch_s"], 2)
            result["scripts"][name] = row
            print(name, json.dumps(row), flush=True)
    write_result(result, args.output)


if __name__ == "__main__":
    main()
