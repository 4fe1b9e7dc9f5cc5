"""What --audit writes and prints: the suspects as CSV and JSON, a montage of the first ones, and
a terminal summary that stays short at a hundred classes."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from ..data.images import load_rgb
from ..utils import fileio
from ..utils.text import printable, shortened
from .drawing import GREEN, MONTAGE_TILE, RED, draw_lines, hershey, montage_tile, to_bgr, write_montage
from .label_issues import Suspects

MONTAGE_PHOTOS = 16
SUMMARY_CLASSES = 12  # classes listed by name in the summary; the rest are counted in one line
TOP = 10
CSV_COLUMNS = ("rank", "path", "given", "likely", "label_quality", "outlier_score", "kind")


def rows(suspects: Suspects, paths: Sequence[str], class_names: Sequence[str]) -> list[dict]:
    """Every photo, most suspect first, with its kind ("label", "outlier", "label+outlier", or "")."""
    return [{"rank": rank + 1, "path": paths[i], "given": class_names[suspects.given[i]],
             "likely": class_names[suspects.suggested[i]], "label_quality": round(float(suspects.label_quality[i]), 6),
             "outlier_score": round(float(suspects.outlier_score[i]), 6), "kind": suspects.kind(i)}
            for rank, i in enumerate(suspects.ranking.tolist())]


def write(all_rows: list[dict], prefix: str, summary: dict) -> list[str]:
    """<prefix>.csv: the flagged photos only, so that ``build_dataset.py --exclude`` given the file as
    it is leaves out exactly those; <prefix>.json: the summary and every photo's scores."""
    flagged = [row for row in all_rows if row["kind"]]
    fileio.write_csv(f"{prefix}.csv", CSV_COLUMNS, ([row[c] for c in CSV_COLUMNS] for row in flagged))
    fileio.write_text(f"{prefix}.json", json.dumps({**summary, "photos": all_rows}, indent=1))
    return [f"{prefix}.csv", f"{prefix}.json"]


def _tile_label(row: dict) -> list[str]:
    if row["kind"] == "outlier":
        return [f"{row['given']}: outlier", f"score {row['outlier_score']:.2f}"]
    return [f"{row['given']} -> {row['likely']}", f"quality {row['label_quality']:.2f}"]


def montage(flagged: list[dict], path: str) -> str | None:
    """The first flagged photos, each labelled "given -> likely" (or as an outlier) with OpenCV."""
    if not flagged:
        if os.path.isfile(path):
            os.remove(path)  # an earlier audit's picture would describe other photos
        return None
    tiles = []
    for row in flagged[:MONTAGE_PHOTOS]:
        frame = montage_tile(to_bgr(load_rgb(row["path"], MONTAGE_TILE[0])))
        lines = [shortened(line, 28) for line in _tile_label(row)]
        tiles.append(draw_lines(frame, [hershey(line) for line in lines],
                                RED if "label" in row["kind"] else GREEN))
    return write_montage(tiles, path)


def summary_lines(all_rows: list[dict], class_names: Sequence[str], header: str) -> list[str]:
    """The header, suspects per class (the classes with most, then one line for the rest), and the first ten."""
    counts = {name: (c["label"], c["outlier"]) for name, c in per_class_counts(all_rows, class_names).items()}
    busiest = sorted((c for c in counts.items() if sum(c[1])), key=lambda c: -sum(c[1]))
    lines = [header]
    if busiest:
        lines.append("suspects per class (label errors / outliers):")
        shown = [f"{printable(shortened(name, 24))} {labels}/{outliers}" for name, (labels, outliers) in
                 busiest[:SUMMARY_CLASSES]]
        lines += ["  " + ", ".join(shown[i:i + 4]) for i in range(0, len(shown), 4)]
        rest = busiest[SUMMARY_CLASSES:]
        if rest:
            lines.append(f"  and {len(rest)} more classes with {sum(sum(c[1]) for c in rest)} suspects")
    flagged = [row for row in all_rows if row["kind"]]
    for row in flagged[:TOP]:
        what = (f"outlier, score {row['outlier_score']:.3f}" if row["kind"] == "outlier" else
                f"likely {printable(row['likely'])}, label quality {row['label_quality']:.3f}")
        lines.append(f"  {row['rank']:>3}. {printable(row['path'])}: given {printable(row['given'])}, {what}")
    if len(flagged) > TOP:
        lines.append(f"  ... and {len(flagged) - TOP} more in the CSV")
    return lines


def per_class_counts(all_rows: list[dict], class_names: Sequence[str]) -> dict[str, dict[str, int]]:
    result = {name: {"photos": 0, "label": 0, "outlier": 0} for name in class_names}
    for row in all_rows:
        entry = result[row["given"]]
        entry["photos"] += 1
        entry["label"] += "label" in row["kind"]
        entry["outlier"] += "outlier" in row["kind"]
    return result

