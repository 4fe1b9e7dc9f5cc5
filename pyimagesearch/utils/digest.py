"""SHA-256 digests of files and of image folders: what tells a run that its inputs changed."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence


def file_sha256(path: str) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def folder_digest(samples: Sequence[tuple[str, int]], root: str, *, content: bool) -> str:
    """One digest of an ImageFolder's ``samples``: each file's name below ``root`` and label, and
    with ``content`` the SHA-256 of its bytes (the feature cache: an edit that keeps a file's size
    and time still counts), without it its size and modification time (--resume's cheap check:
    no image is read)."""
    digest = hashlib.sha256()
    for path, label in samples:
        if content:
            identity = file_sha256(path)
        else:
            info = os.stat(path)
            identity = f"{info.st_size}\0{info.st_mtime_ns}"
        digest.update(f"{os.path.relpath(path, root)}\0{label}\0{identity}\n".encode())
    return digest.hexdigest()
