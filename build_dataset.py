"""Split the flower photos into dataset/train and dataset/val for ImageFolder.

Usage:
    python build_dataset.py                      # flower_photos/ -> dataset/{train,val}
    python build_dataset.py --download           # fetch and unpack the flowers archive first
    python build_dataset.py --data ~/photos --output dataset --val-split 0.2
    python build_dataset.py --exclude output/finetune_model_audit.csv   # leave out photos an audit flagged

Each image's class is its first folder below --data. Every image is decoded once; unreadable
files are skipped and listed. Copies of one photo (identical files, or re-encoded and rescaled
ones, found by a perceptual hash) are listed when they sit in different classes, and each group
of copies stays on one side of the split (--no-find-duplicates: split them like any image). The
split is seeded and per class, and dataset/ is rebuilt in a new folder swapped in at the end, so a
second run replaces the first instead of adding to it.
"""

from __future__ import annotations

import pyimagesearch.utils.ctrl_c_at_start  # noqa: F401  first: Ctrl-C while the rest loads exits quietly

# isort: split
import argparse
import os
from collections.abc import Sequence

from pyimagesearch import config
from pyimagesearch.data import exclude
from pyimagesearch.data.dataset import SPLIT_MANIFEST, check_target, scan, write_splits
from pyimagesearch.data.download import FLOWER_CLASSES, DownloadLimits, fetch_dataset
from pyimagesearch.data.duplicates import describe, find_duplicates
from pyimagesearch.data.split import check_val_split, count_table, imbalance_warning, share_warnings, split
from pyimagesearch.utils import cli, settings
from pyimagesearch.utils.cli import CheckedParser, int_between
from pyimagesearch.utils.errors import UserError, run_cli
from pyimagesearch.utils.text import printable


def build_parser() -> argparse.ArgumentParser:
    parser = CheckedParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=config.DATA_PATH, help="source folder of class folders (default: %(default)s)")
    parser.add_argument("--output", default=config.BASE_PATH, help="where train/ and val/ go (default: %(default)s)")
    parser.add_argument("--val-split", type=float, default=config.VAL_SPLIT,
                        help="fraction of each class for validation (default: %(default)s)")
    parser.add_argument("--seed", type=cli.seed, default=config.SEED, help="split seed (default: %(default)s)")
    parser.add_argument("--find-duplicates", action=argparse.BooleanOptionalAction, default=config.FIND_DUPLICATES,
                        help="find exact and near-duplicate images, list those in more than one class, and keep each "
                             "group of copies on one side of the split (default: %(default)s)")
    parser.add_argument("--duplicate-distance", type=int_between(0, 64), default=config.DUPLICATE_DISTANCE,
                        help="how many of the 64 perceptual-hash bits near duplicates may differ in; 0 still finds "
                             "re-encoded copies, higher finds more and risks calling different photos copies "
                             "(default: %(default)s)")
    parser.add_argument("--exclude", metavar="FILE",
                        help="leave out the photos FILE lists: one path per line, or a CSV with a path column such "
                             "as inference.py --audit's; recorded in split.json")
    parser.add_argument("--download", action=argparse.BooleanOptionalAction, default=config.DOWNLOAD,
                        help="download the archive when --data is missing (default: %(default)s)")
    parser.add_argument("--url", default=config.DATASET_URL, help="archive URL (default: %(default)s)")
    parser.add_argument("--cache-dir", default=config.DOWNLOAD_CACHE,
                        help="where the downloaded archive is kept (default: %(default)s)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                        help="progress bars (default: %(default)s)")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if os.path.exists(args.data) and not os.path.isdir(args.data):
        raise UserError(f"--data '{args.data}' is a file; it should be the folder of class folders "
                        "(flower_photos/daisy/*.jpg, ...). Point --data (or DATA_PATH) at that folder.")
    # the settings and the output are checked before any image is read or downloaded: a refusal costs seconds
    check_val_split(args.val_split)
    check_target(args.data, args.output)
    if args.exclude:
        exclude.check_file(args.exclude)
    if not os.path.isdir(args.data):
        if not args.download:
            raise UserError(
                f"The source folder '{args.data}' does not exist. Run `python build_dataset.py --download` to "
                f"fetch the flowers archive ({args.url}, about 218 MiB) into it, or download it yourself and "
                f"unpack it here so that '{args.data}/daisy/*.jpg' and the other class folders exist "
                "(or point --data / DATA_PATH in pyimagesearch/config.py at your own class folders)."
            )
        default = args.url == config.DATASET_URL
        limits = DownloadLimits(settings.DOWNLOAD_MIN_SPEED, settings.DOWNLOAD_SPEED_WINDOW, settings.DOWNLOAD_DEADLINE,
                                settings.EXTRACT_MAX_BYTES, settings.EXTRACT_MAX_MEMBERS)
        fetch_dataset(args.url, args.data, args.cache_dir, limits,
                      expected_size=settings.DATASET_ARCHIVE_SIZE if default else None,
                      expected_classes=FLOWER_CLASSES if default else None, progress=args.progress)

    left_out = exclude.read_exclusions(args.exclude, args.data, args.output) if args.exclude else None
    if left_out:
        describe_exclusions(left_out, args.data)
    print("[INFO] loading image paths...")
    found = scan(args.data, progress=args.progress, fingerprints=args.find_duplicates,
                 leave_out=left_out.photos if left_out else ())
    for path, reason in found.skipped:
        print(f"[WARN] skipped {printable(os.path.join(args.data, path))}: {reason}")
    groups = find_duplicates(found.fingerprints, args.duplicate_distance, args.progress) if args.find_duplicates else []
    train, val = split(found.images, args.val_split, args.seed, groups)
    for line in share_warnings(train, val, args.val_split):
        print(line)
    for line in describe(groups, os.path.join(args.output, SPLIT_MANIFEST)):
        print(line)

    print("[INFO] copying training and validation images...")
    write_splits(args.data, args.output, train, val, progress=args.progress,
                 info={"source": os.path.abspath(args.data), "val_split": args.val_split, "seed": args.seed,
                       "skipped": found.skipped, "excluded": left_out.as_json() if left_out else None,
                       "duplicates": {"distance": args.duplicate_distance,
                                      "groups": [group.as_json() for group in groups]} if args.find_duplicates else None})
    print(count_table(train, val))
    warning = imbalance_warning({label: len(train[label]) + len(val[label]) for label in train})
    if warning:
        print(warning)
    print(f"[INFO] wrote {os.path.join(args.output, 'train')} and {os.path.join(args.output, 'val')}"
          + (f"; skipped {len(found.skipped)} file(s), listed above" if found.skipped else ""))


def describe_exclusions(left_out: exclude.Exclusions, data: str) -> None:
    print(f"[INFO] leaving out {len(left_out.photos)} photo(s) that {printable(left_out.file)} lists")
    if left_out.unmatched:
        listed = ", ".join(f"'{printable(path)}'" for path in left_out.unmatched[:5])
        more = f" and {len(left_out.unmatched) - 5} more" if len(left_out.unmatched) > 5 else ""
        print(f"[WARN] --exclude: {len(left_out.unmatched)} path(s) in {printable(left_out.file)} match no photo of "
              f"{printable(data)}: {listed}{more}. A path should name a photo under {printable(data)}, or its copy "
              "in the dataset the last build wrote; these are not left out, and split.json lists them.")


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
