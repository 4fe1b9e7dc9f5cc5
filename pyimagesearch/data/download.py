"""Fetch and unpack the flowers archive: resumable by reuse, verified, extracted safely."""

from __future__ import annotations

import http.client
import os
import shutil
import tarfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from tqdm import tqdm

from ..utils.errors import UserError
from ..utils.fileio import fresh_temp_beside

FLOWER_CLASSES = ("daisy", "dandelion", "roses", "sunflowers", "tulips")


@dataclass(frozen=True)
class DownloadLimits:
    """When a download is given up, and how large an archive may unpack (utils/settings.py): a
    server that trickles bytes would otherwise keep it alive forever, since the socket timeout only
    catches a server that says nothing at all."""

    min_bytes_per_s: float
    window_s: float
    deadline_s: float
    max_bytes: int
    max_members: int

    def __post_init__(self) -> None:
        names = {"min_bytes_per_s": "DOWNLOAD_MIN_SPEED", "window_s": "DOWNLOAD_SPEED_WINDOW",
                 "deadline_s": "DOWNLOAD_DEADLINE", "max_bytes": "EXTRACT_MAX_BYTES", "max_members": "EXTRACT_MAX_MEMBERS"}
        for field, name in names.items():
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
                raise UserError(f"{name} {value!r}: expected a number greater than 0 (pyimagesearch/utils/settings.py).")


def _abandoned(url: str, archive: str, why: str) -> UserError:
    return UserError(f"The download from {url} {why} and was abandoned. Try again later, or fetch the archive "
                     f"another way and put it at '{archive}'.")


def download(url: str, archive: str, limits: DownloadLimits, expected_size: int | None = None, timeout_s: float = 60.0,
             progress: bool = True) -> str:
    """Download ``url`` to ``archive`` unless a complete copy is already there.

    The bytes go to a temporary name that is renamed only once the size checks out, so an
    interrupted download never passes for a finished one. A transfer slower than
    ``limits.min_bytes_per_s`` over ``limits.window_s``, or longer than ``limits.deadline_s``
    in all, is abandoned.
    """
    if os.path.isfile(archive) and (expected_size is None or os.path.getsize(archive) == expected_size):
        print(f"[INFO] reusing the downloaded archive {archive}")
        return archive
    partial = fresh_temp_beside(archive, "part")
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response, open(partial, "wb") as out:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else expected_size
            started = window_start = time.monotonic()
            received = window_bytes = 0
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="downloading",
                      disable=not progress) as bar:
                while chunk := response.read1(1 << 16):  # what has arrived, without waiting for a full buffer
                    out.write(chunk)
                    bar.update(len(chunk))
                    received += len(chunk)
                    now = time.monotonic()
                    if now - started > limits.deadline_s:
                        raise _abandoned(url, archive, f"took longer than {limits.deadline_s:.0f}s ({received} bytes "
                                                       "so far)")
                    if now - window_start >= limits.window_s:
                        speed = (received - window_bytes) / (now - window_start)
                        if speed < limits.min_bytes_per_s:
                            raise _abandoned(url, archive, f"slowed to {speed:.0f} bytes/s (under "
                                                           f"{limits.min_bytes_per_s:.0f} bytes/s for {limits.window_s:.0f}s)")
                        window_start, window_bytes = now, received
        size = os.path.getsize(partial)
        if total is not None and size != total:
            raise UserError(f"The download from {url} stopped after {size} of {total} bytes. Run again to retry.")
        os.replace(partial, archive)
    except UserError:
        raise
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as error:
        reason = f"HTTP {error.code} {error.reason}" if isinstance(error, urllib.error.HTTPError) else (
            getattr(error, "reason", None) or error)
        raise UserError(
            f"Could not download {url} ({reason}). Download it on a machine with internet access and "
            f"either put it at '{archive}' (it is then reused), or unpack it yourself so that the class "
            f"folders sit in DATA_PATH (for example flower_photos/daisy/*.jpg)."
        ) from None
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    return archive


def _refuse(archive: str, member: tarfile.TarInfo, why: str) -> UserError:
    return UserError(f"Refusing to extract '{archive}': member '{member.name}' {why}. The archive may be "
                     "corrupt or malicious; delete it and download it again.")


def read_members(archive: str, tar: tarfile.TarFile, max_bytes: int, max_members: int) -> list[tarfile.TarInfo]:
    """The archive's member list, read header by header and given up as soon as the declared
    sizes pass ``max_bytes`` or the count passes ``max_members``: a small .tgz that unpacks to
    gigabytes (a gzip bomb) is refused before it is decompressed, let alone written."""
    members, total = [], 0
    for member in tar:
        members.append(member)
        total += member.size
        if total > max_bytes:
            raise UserError(f"Refusing to extract '{archive}': its members add up to more than {max_bytes} bytes "
                            "(EXTRACT_MAX_BYTES in pyimagesearch/utils/settings.py). It may be corrupt or malicious; delete it "
                            "and download it again.")
        if len(members) > max_members:
            raise UserError(f"Refusing to extract '{archive}': it holds more than {max_members} members "
                            "(EXTRACT_MAX_MEMBERS in pyimagesearch/utils/settings.py). It may be corrupt or malicious; "
                            "delete it and download it again.")
    return members


def check_members(archive: str, members: list[tarfile.TarInfo]) -> None:
    """No member may land outside the target: absolute paths, '..', links pointing out and
    device files refuse the whole archive, before anything is written."""
    for member in members:
        name = member.name
        parts = name.replace("\\", "/").split("/")
        if name.startswith(("/", "\\")) or os.path.isabs(name) or (len(name) > 1 and name[1] == ":"):
            raise _refuse(archive, member, "has an absolute path")
        if ".." in parts:
            raise _refuse(archive, member, "climbs out with '..'")
        if member.ischr() or member.isblk() or member.isfifo() or member.isdev():
            raise _refuse(archive, member, "is a device or pipe")
        if member.issym() or member.islnk():
            target = member.linkname
            resolved = os.path.normpath(os.path.join(os.path.dirname(name), target) if member.issym() else target)
            if os.path.isabs(target) or resolved.startswith(".."):
                raise _refuse(archive, member, f"links outside the archive ('{target}')")


def extract(archive: str, target: str, limits: DownloadLimits, top_folder: str = "flower_photos",
            expected_classes: tuple[str, ...] | None = None) -> str:
    """Unpack ``archive`` and move its ``top_folder`` (or its only folder) to ``target``, via a
    temporary folder beside it: an interrupted run leaves no half-extracted dataset."""
    staging = fresh_temp_beside(target, "extract", folder=True)
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                members = read_members(archive, tar, max_bytes=limits.max_bytes, max_members=limits.max_members)
                check_members(archive, members)
                tar.extractall(staging, members=members, filter="data")
        except (tarfile.TarError, EOFError, OSError) as error:
            raise UserError(f"'{archive}' is not a readable .tgz archive ({error}); delete it and download "
                            "it again.") from None
        entries = [e for e in os.listdir(staging) if not e.startswith(".")]
        if top_folder in entries:
            unpacked = os.path.join(staging, top_folder)
        elif len(entries) == 1 and os.path.isdir(os.path.join(staging, entries[0])):
            unpacked = os.path.join(staging, entries[0])
        else:
            unpacked = staging
        verify_extracted(unpacked, archive, expected_classes)
        if unpacked == staging:
            os.replace(staging, target)
        else:
            os.replace(unpacked, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def verify_extracted(folder: str, archive: str, expected_classes: tuple[str, ...] | None = None) -> None:
    classes = {d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)) and not d.startswith(".")}
    with_images = {c for c in classes if any(not f.startswith(".") for f in os.listdir(os.path.join(folder, c)))}
    wanted = set(expected_classes) if expected_classes else None
    if (wanted and not wanted <= with_images) or len(with_images) < 2:
        missing = sorted((wanted or set()) - with_images)
        raise UserError(f"'{archive}' does not hold the expected class folders with images "
                        f"(found {sorted(with_images)}{', missing ' + str(missing) if missing else ''}). "
                        "Delete it and download it again.")


def fetch_dataset(url: str, data_path: str, cache_dir: str, limits: DownloadLimits, expected_size: int | None = None,
                  expected_classes: tuple[str, ...] | None = None, progress: bool = True) -> str:
    """Make ``data_path`` hold the dataset (download, verify, extract); reuse what is there."""
    if os.path.isdir(data_path):
        return data_path
    archive = os.path.join(cache_dir, os.path.basename(url.split("?")[0]) or "dataset.tgz")
    download(url, archive, limits, expected_size=expected_size, progress=progress)
    print(f"[INFO] extracting {archive} to {data_path}")
    return extract(archive, data_path, limits, top_folder=os.path.basename(os.path.normpath(data_path)),
                   expected_classes=expected_classes)
