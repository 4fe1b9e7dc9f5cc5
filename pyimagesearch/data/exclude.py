"""build_dataset.py --exclude FILE: the photos a user decided to leave out.

FILE is a list of paths, one per line (blank lines and lines starting with # are ignored), or a
CSV with a ``path`` column, such as the audit's CSV after the user kept the rows they agree with.
A path names a photo under --data, or its copy in the dataset the last build wrote (whose
split.json says where each copy came from), so an audit of dataset/train leads back to the source.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field

from ..utils.errors import UserError
from ..utils.fileio import NOT_REGULAR, is_regular_file
from .dataset import SPLIT_MANIFEST, destination_name


@dataclass
class Exclusions:
    """The photos to leave out, relative to --data, and the lines of FILE that name none."""

    file: str
    photos: set[str] = field(default_factory=set)
    unmatched: list[str] = field(default_factory=list)

    def as_json(self) -> dict:
        return {"file": os.path.abspath(self.file), "photos": sorted(self.photos), "unmatched": self.unmatched}


def check_file(path: str) -> None:
    """Before any image is read: FILE exists and is a regular file."""
    if not os.path.lexists(path):
        raise UserError(f"--exclude '{path}' does not exist. Pass a file that lists the photos to leave out, one "
                        "path per line, or an audit CSV from `inference.py --audit` (output/<model>_audit.csv).")
    if not is_regular_file(path):
        raise UserError(f"--exclude '{path}' is {NOT_REGULAR}; pass a text or CSV file listing the photos to leave out.")


def _unspreadsheet(cell: str) -> str:
    """A CSV cell as the project wrote it: the apostrophe fileio.spreadsheet_safe put in front is dropped."""
    return cell[1:] if cell.startswith("'") else cell


def listed_paths(path: str) -> list[str]:
    """The paths FILE lists, in its order."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"--exclude '{path}' cannot be read as text ({error}); pass a UTF-8 text or CSV file.") from None
    lines = text.splitlines()
    try:  # a spreadsheet may save the audit's CSV with ';' or tabs between the cells
        dialect = csv.Sniffer().sniff(lines[0], delimiters=",;\t") if lines else csv.excel
    except csv.Error:
        dialect = csv.excel
    header = next(csv.reader(lines[:1], dialect), []) if lines else []
    if "path" in header:
        return [_unspreadsheet(row["path"]) for row in csv.DictReader(lines, dialect=dialect) if row.get("path")]
    first = lines[0].strip() if lines else ""
    if len(header) > 2 and not first.startswith("#") and not os.path.lexists(first):
        raise UserError(f"--exclude '{path}' looks like a table ({len(header)} columns: "
                        f"{', '.join(repr(cell) for cell in header[:6])}) with no 'path' column. Keep the audit CSV's "
                        "header row, or list one photo path per line.")
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def _copies(output: str) -> dict[str, str]:
    """Each photo of the dataset the last build wrote (its absolute path) -> its path below --data.
    The photos that build left out count too, at the place their copy had in train/ or val/: the
    same --exclude run again matches what it matched the first time, and gives the same split."""
    try:
        with open(os.path.join(output, SPLIT_MANIFEST), encoding="utf-8") as handle:
            manifest = json.load(handle)
        copies = {os.path.abspath(os.path.join(output, part, label, destination_name(relative))): relative
                  for part in ("train", "val") for label, relatives in manifest[part].items() for relative in relatives}
        for relative in (manifest.get("excluded") or {}).get("photos", []):
            label = relative.split(os.sep)[0]
            for part in ("train", "val"):
                copies.setdefault(os.path.abspath(os.path.join(output, part, label, destination_name(relative))), relative)
        return copies
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def _below(path: str, root: str) -> str | None:
    for candidate, base in ((os.path.abspath(path), os.path.abspath(root)), (os.path.realpath(path), os.path.realpath(root))):
        if candidate.startswith(base + os.sep):
            return os.path.relpath(candidate, base)
    return None


def read_exclusions(path: str, data: str, output: str) -> Exclusions:
    """Match every path FILE lists to a photo of ``data``; a photo is matched by its own path or by
    its copy in ``output``."""
    result, copies = Exclusions(path), _copies(output)
    for listed in listed_paths(path):
        relative = _below(listed, data) or copies.get(os.path.abspath(listed))
        if relative and os.path.dirname(relative) and is_regular_file(os.path.join(data, relative)):
            result.photos.add(relative)
        else:
            result.unmatched.append(listed)
    if result.unmatched and not result.photos:
        raise UserError(f"--exclude '{path}': none of its {len(result.unmatched)} path(s) names a photo of '{data}' "
                        f"or its copy in '{output}' (the first: '{result.unmatched[0]}'). List the photos by their "
                        "path under --data or in the dataset the last build wrote, as the audit's CSV does.")
    return result
