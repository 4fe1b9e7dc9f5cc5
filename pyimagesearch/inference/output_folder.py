"""The pictures --annotate and --explain write into a folder: their names, and the folder's record
of what this project wrote there, so that a user's own file is never replaced and a written picture
is never read back as a photo."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass

from ..utils import fileio
from ..utils.errors import UserError
from .drawing import WRITABLE

OUTPUTS_MANIFEST = ".annotated.json"  # in an --annotate or --explain folder: the files they wrote there


@dataclass
class Written:
    """What --annotate or --explain wrote: one picture per photo, the montage, and (--explain) the maps."""

    photos: list[str]
    montage: str | None
    maps: str | None = None


def annotated_names(paths: Sequence[str], suffix: str = "_annotated") -> list[str]:
    """``<name><suffix>.<ext>`` for each photo (``_annotated``, or ``_explained`` for --explain),
    numbered where two folders hold the same name."""
    names, used = [], set()
    for path in paths:
        stem, extension = os.path.splitext(os.path.basename(path))
        extension = extension.lower() if extension.lower() in WRITABLE else ".jpg"
        name, n = f"{stem}{suffix}{extension}", 1
        while name in used:
            n += 1
            name = f"{stem}{suffix}_{n}{extension}"
        used.add(name)
        names.append(name)
    return names


def explained_names(paths: Sequence[str], stem: str) -> list[str]:
    """What --explain writes into its folder: one picture per photo, the montage, the maps."""
    return [*annotated_names(paths, "_explained"), f"{stem}_explained_montage.jpg", f"{stem}_explained.npz"]


def written_here(folder: str) -> set[str]:
    """The files --annotate or --explain wrote in ``folder`` (its manifest): outputs, never inputs."""
    try:
        with open(os.path.join(folder, OUTPUTS_MANIFEST), encoding="utf-8") as handle:
            return set(json.load(handle)["written"])
    except (OSError, ValueError, KeyError, TypeError):
        return set()


def check_targets(folder: str, names: Sequence[str], flag: str = "--annotate") -> None:
    """No file --annotate (or --explain) would write replaces one it did not write itself (the
    user's own ``p_annotated.jpg``): checked before any photo is classified."""
    fileio.check_writable_folder(folder, flag)
    ours = written_here(folder)
    theirs = [name for name in names if os.path.lexists(os.path.join(folder, name)) and name not in ours]
    if theirs:
        listed = ", ".join(f"'{os.path.join(folder, name)}'" for name in theirs[:3])
        raise UserError(f"{flag}: {listed}{f' and {len(theirs) - 3} more' if len(theirs) > 3 else ''} already "
                        f"exist and were not written by --annotate or --explain; they would be overwritten. Choose "
                        f"another {flag} folder, or move them away.")


def claim(folder: str, names: Sequence[str]) -> None:
    """List ``names`` in the folder's manifest before writing them, so that even a killed run's
    files are known as ours."""
    fileio.write_text(os.path.join(folder, OUTPUTS_MANIFEST),
                      json.dumps({"written": sorted(written_here(folder) | set(names))}, indent=1))
