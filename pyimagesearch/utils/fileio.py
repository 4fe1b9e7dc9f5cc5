"""Writing files safely: atomically, with the permissions the umask gives, and without leftovers.

Every temporary file or folder the project makes is named ``.<name>.<kind>-<pid>-<random>``
beside what it becomes, so a later run can tell its own leftovers from the user's files and
remove them once the process that made them is gone (a killed run, a closed laptop lid).
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import os
import pickle
import re
import secrets
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch

from .errors import UserError, first_line

try:  # POSIX; on Windows builds are not locked against each other
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None


# why a file named like an image (or a model, a video) was not opened
NOT_REGULAR = "not a regular file (a pipe, socket or device is never opened)"


def is_regular_file(path: str) -> bool:
    """A plain file (after following links): a FIFO, socket or device named like an image would
    block or stream forever when opened, so nothing else is ever opened as an image."""
    return os.path.isfile(path)


def walk_class_folders(root: str) -> Iterator[tuple[str, list[str]]]:
    """(folder, its files) below ``root``, as os.walk following symlinked folders, sorted; each
    real folder once, hidden folders (.ipynb_checkpoints, .git) left out. A class folder (one right
    below ``root``) and ``root`` itself are read only as themselves: reached again through a link
    inside a class (a loop such as ``a/loop -> ..``, or ``a/b -> ../b``), their photos would be
    filed under the wrong class."""
    classes = {os.path.realpath(entry.path) for entry in os.scandir(root)
               if not entry.name.startswith(".") and entry.is_dir()}
    seen: set[str] = set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        real, depth = os.path.realpath(folder), len(os.path.relpath(folder, root).split(os.sep))
        if real in seen or (depth > 1 and real in classes):  # root is seen first
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        yield folder, sorted(files)


def payload_bytes(value: Any) -> int:
    """About what torch.save writes for ``value``: its tensors' bytes (metadata is small)."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(payload_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(payload_bytes(v) for v in value)
    return 0


def _temp_path(folder: str, name: str, kind: str) -> str:
    return os.path.join(folder, f".{name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}")


def _leftover_pattern(name: str, kinds: tuple[str, ...]) -> re.Pattern:
    return re.compile(rf"^\.{re.escape(name)}\.({'|'.join(kinds)})-(\d+)-[0-9a-f]{{8}}$")


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


def leftovers(folder: str, name: str, kinds: tuple[str, ...]) -> list[str]:
    """Temporary files/folders for ``name`` in ``folder`` whose process no longer runs."""
    pattern = _leftover_pattern(name, kinds)
    try:
        entries = os.listdir(folder)
    except OSError:
        return []
    found = []
    for entry in sorted(entries):
        match = pattern.match(entry)
        if match and not _process_alive(int(match.group(2))):
            found.append(os.path.join(folder, entry))
    return found


def remove_leftovers(folder: str, name: str, kinds: tuple[str, ...] = ("tmp",)) -> list[str]:
    """Remove what a killed run left for ``name`` (see :func:`leftovers`); returns the paths."""
    removed = leftovers(folder, name, kinds)
    for path in removed:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.remove(path)
    return removed


def new_temp_file(folder: str, name: str, kind: str = "tmp") -> str:
    """An empty file beside ``folder/name``, created with mode 0666 less the umask (as open() does,
    unlike tempfile.mkstemp's 0600)."""
    while True:
        path = _temp_path(folder, name, kind)
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return path
        except FileExistsError:
            continue


def new_temp_folder(folder: str, name: str, kind: str) -> str:
    """An empty folder beside ``folder/name``, mode 0777 less the umask (as mkdir does)."""
    while True:
        path = _temp_path(folder, name, kind)
        try:
            os.mkdir(path, 0o777)
            return path
        except FileExistsError:
            continue


def fresh_temp_beside(path: str, kind: str = "tmp", folder: bool = False) -> str:
    """A new empty temporary file (or ``folder``) of ``kind`` beside ``path``, its folder created,
    after removing what a killed run left there for the same name and kind."""
    parent, name = os.path.split(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    remove_leftovers(parent, name, (kind,))
    return new_temp_folder(parent, name, kind) if folder else new_temp_file(parent, name, kind)


NO_ROOM = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}


def human_size(count: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024
    return ""  # pragma: no cover


def _file_size_limit() -> int | None:
    """This process's file-size limit (``ulimit -f``) in bytes, or None when there is none."""
    with contextlib.suppress(ImportError, OSError, ValueError):
        import resource

        soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        return None if soft == resource.RLIM_INFINITY else soft
    return None


def no_room(error: OSError, path: str, needed: int | None, written: int) -> UserError:
    """One paragraph for a write that ran out of room: the file, what it needs, what is free."""
    folder = os.path.dirname(os.path.abspath(path))
    need = f"about {human_size(needed)}" if needed else f"more than the {human_size(written)} written before it stopped"
    if error.errno == errno.EFBIG:
        soft = _file_size_limit()
        limit = f" ({human_size(soft)}, `ulimit -f`)" if soft is not None else ""
        why = f"the file-size limit of this shell{limit} stops it; it needs {need}"
        fix = "Raise the limit (ulimit -f unlimited) or write elsewhere"
    else:
        free = ""
        with contextlib.suppress(OSError):
            free = f", and {human_size(shutil.disk_usage(folder).free)} is free there"
        why = f"the disk is full: it needs {need}{free}"
        fix = "Free some space or choose another output folder"
    return UserError(f"Could not write '{path}': {why}. Nothing was replaced: an earlier '{os.path.basename(path)}' "
                     f"is intact. {fix}, then run again.")


def atomic_write(path: str, write: Callable[[str], object], needed: int | None = None) -> None:
    """Call ``write(temp_path)`` then rename over ``path``: readers never see half a file. A disk
    that fills up (or a file-size limit) is one paragraph naming the file and the ``needed`` bytes."""
    temp_path = fresh_temp_beside(path)
    try:
        write(temp_path)
        os.replace(temp_path, path)
    except BaseException as error:
        written = 0
        with contextlib.suppress(OSError):
            written = os.path.getsize(temp_path)
            os.remove(temp_path)
        if isinstance(error, OSError) and error.errno in NO_ROOM:
            raise no_room(error, path, needed, written) from None
        short = _room_short_of(os.path.dirname(temp_path), needed) if isinstance(error, Exception) else None
        if short is not None:  # torch.save says only "unexpected pos 704 vs 598" when the disk is full
            raise no_room(OSError(short, os.strerror(short)), path, needed, written) from None
        raise


def _room_short_of(folder: str, needed: int | None) -> int | None:
    """ENOSPC or EFBIG when ``needed`` bytes cannot fit in ``folder`` or under the file-size limit."""
    if not needed:
        return None
    limit = _file_size_limit()
    if limit is not None and limit < needed:
        return errno.EFBIG
    with contextlib.suppress(OSError):
        if shutil.disk_usage(folder).free < needed:
            return errno.ENOSPC
    return None


SPREADSHEET_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(cell: object) -> object:
    """A text cell that a spreadsheet would run as a formula (a class or file named "=cmd|..."),
    with an apostrophe in front, as OWASP advises. A cell that starts with an apostrophe gets one
    more, since a spreadsheet hides the first: a class "'=cmd" stays apart from a class "=cmd".
    Numbers and other text are unchanged."""
    if isinstance(cell, str) and cell.startswith((*SPREADSHEET_FORMULA, "'")):
        return "'" + cell
    return cell


def write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""

    def write(temp: str) -> None:
        with open(temp, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)

    atomic_write(path, write)


def write_csv(path: str, header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """Write a CSV table atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows([spreadsheet_safe(cell) for cell in row] for row in rows)
    write_text(path, buffer.getvalue())


def read_torch(path: str, missing: str, unreadable: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, or a UserError: ``missing`` when there is
    no such file, ``unreadable`` (with ``{reason}``) when it does not load as plain data."""
    import torch

    check_regular_or_absent(path, "")
    if os.path.isdir(path):
        raise UserError(f"'{path}' is a folder, not a file. Pass the path of the file itself.")
    if not os.path.isfile(path):
        raise UserError(missing)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # torch's own message suggests weights_only=False: for a file that asks to run code on
        # loading, that advice is the one thing not to follow
        match = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        reason = (f"it asks to run Python code ({match.group(1)}) when loaded, so it was refused unopened" if match
                  else "it is not plain tensors and numbers as torch.save writes them, or it was damaged")
        raise UserError(unreadable.replace("{reason}", reason)) from None
    except Exception as error:
        raise UserError(unreadable.replace("{reason}", first_line(error))) from None  # paths may hold braces


def check_regular_or_absent(path: str, what: str) -> None:
    """``path`` is a regular file or does not exist: a FIFO or device is never opened (it would
    block forever, or stream without end), nor replaced."""
    if os.path.exists(path) and not os.path.isfile(path) and not os.path.isdir(path):
        raise UserError(f"{what + ': ' if what else ''}'{path}' is {NOT_REGULAR}. Pass the path of a regular file.")


def check_writable_folder(folder: str, what: str) -> None:
    """Create ``folder`` if needed and prove that a file can be written there, or say why not."""
    folder = folder or "."
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise UserError(f"{what}: '{folder}' is a file, not a folder. Pass a folder path, or move the file away.")
    try:
        os.makedirs(folder, exist_ok=True)
        os.remove(new_temp_file(folder, "write-test"))
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise UserError(f"{what}: cannot write in '{folder}' ({reason}). Choose a folder you can write to, "
                        "or fix its permissions.") from None


def check_writable_file(path: str, what: str) -> None:
    """``path`` can be (re)written: not a folder, and its folder is writable."""
    if os.path.isdir(path):
        raise UserError(f"{what}: '{path}' is a folder; pass a file name such as '{os.path.join(path, 'out')}'.")
    check_writable_folder(os.path.dirname(path), what)


@contextlib.contextmanager
def exclusive(path: str, what: str) -> Iterator[None]:
    """Hold a lock on the hidden file ``.<name>.lock`` beside ``path`` for the block, and remove
    the file afterwards; a second process asking for it is refused at once (nothing waits forever)."""
    folder, name = os.path.split(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    if fcntl is None:  # pragma: no cover
        yield
        return
    lock_path = os.path.join(folder, f".{name}.lock")
    for _ in range(10):
        handle = open(lock_path, "a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            handle.close()
            if error.errno in (errno.EAGAIN, errno.EACCES):
                raise UserError(f"Another {what} is writing '{path}' right now. Wait for it to finish, "
                                "or choose another output folder.") from None
            raise
        try:
            same = os.stat(lock_path).st_ino == os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:
            same = False
        if same:  # not a file its last holder removed while we opened it
            break
        handle.close()
    else:  # pragma: no cover
        raise UserError(f"Could not lock '{lock_path}'; run again.")
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.remove(lock_path)
        handle.close()
