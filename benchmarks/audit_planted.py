"""How well does inference.py --audit find photos filed under the wrong class, and what does it cost?

Usage:
    python benchmarks/audit_planted.py                       # 3,670 generated flowers, 5 % moved, 224 px
    python benchmarks/audit_planted.py --per-class 60 --image-size 64 --output /tmp/audit.json   # a quick look

It generates the demo's flowers (--per-class per class), moves --share of them into another class
folder (seeded), trains feature extraction offline (--weights none: the stand-in body), then runs
the audit twice on the source folder: once computing the features, once reusing them. It reports:
  - found: the share of moved photos among the audit's first 2 x (moved) rows;
  - precision: the share of those rows that were really moved;
  - the same two for the photos the audit flags (the CSV's rows);
  - seconds: the feature extraction, each audit run as a whole, and the audit's work after the features.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))


def plant(root: str, share: float, seed: int) -> set[str]:
    """Move ``share`` of the photos into another class folder; returns their new paths."""
    rng = random.Random(seed)
    classes = sorted(os.listdir(root))
    photos = [(label, name) for label in classes for name in sorted(os.listdir(os.path.join(root, label)))]
    moved = set()
    for label, name in rng.sample(photos, round(share * len(photos))):
        target = rng.choice([other for other in classes if other != label])
        destination = os.path.join(root, target, f"moved_from_{label}_{name}")
        shutil.move(os.path.join(root, label, name), destination)
        moved.add(destination)
    return moved


def timed(function, *args) -> float:
    started = time.perf_counter()
    function(*args)
    return round(time.perf_counter() - started, 2)


def scores(rows: list[dict], moved: set[str]) -> dict:
    first = [row["path"] for row in rows[:2 * len(moved)]]
    flagged = [row["path"] for row in rows if row["kind"]]
    return {"moved": len(moved), "photos": len(rows),
            "found_in_first_2x": round(len(moved & set(first)) / len(moved), 4),
            "precision_of_first_2x": round(len(moved & set(first)) / len(first), 4),
            "flagged": len(flagged), "found_among_flagged": round(len(moved & set(flagged)) / len(moved), 4),
            "precision_of_flagged": round(len(moved & set(flagged)) / max(1, len(flagged)), 4),
            "chance_found_in_first_2x": round(2 * len(moved) / len(rows), 4)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-class", type=int, default=734, help="photos per class (734 x 5 = 3,670)")
    parser.add_argument("--share", type=float, default=0.05)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=os.path.join(ROOT, "benchmarks", "results", "audit_planted.json"))
    args = parser.parse_args(argv)

    from bench_training import machine, write_result
    from make_images import DISTINCT_CLASSES, make_flowers

    import inference
    import train_feature_extraction

    work = tempfile.mkdtemp(prefix="audit-bench-")
    try:
        photos = make_flowers(os.path.join(work, "flower_photos"), args.per_class, 160, args.seed, DISTINCT_CLASSES)
        moved = plant(photos, args.share, args.seed)
        val = make_flowers(os.path.join(work, "val"), 10, 160, args.seed + 1, DISTINCT_CLASSES)  # training's own check
        out = os.path.join(work, "output")
        model = os.path.join(out, "warmup_model.pth")
        training = timed(train_feature_extraction.main, [
            "--train", photos, "--val", val, "--weights", "none", "--image-size", str(args.image_size),
            "--epochs", "1", "--no-progress", "--no-report", "--plot", os.path.join(out, "warmup.png"), "--model", model])
        audit = ["--model", model, "--audit", photos, "--output", out, "--no-progress"]
        first = timed(inference.main, audit)
        second = timed(inference.main, audit)
        report = json.load(open(os.path.join(out, "warmup_model_audit.json")))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {"command": "python benchmarks/audit_planted.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "machine": machine("cpu"), "image_size": args.image_size, "share_moved": args.share,
              **scores(report["photos"], moved), "out_of_fold_accuracy": round(report["out_of_fold_accuracy"], 4),
              "seconds": {"feature_extraction_training": training, "audit_computing_features": first,
                          "audit_with_cached_features": second,
                          "audit_after_features": report["seconds_after_features"]}}
    write_result(result, args.output)


if __name__ == "__main__":
    main()
