"""Keeping the C allocator's memory between batches (Linux with glibc).

glibc serves every allocation above its mmap threshold (128 KiB, adapting up to 32 MiB) with a
fresh ``mmap`` and unmaps it on ``free``. A batch's activation buffers are tens to hundreds of
MiB, so on every batch the kernel hands out and zeroes new pages for them: a minor page fault
per 4 KiB and, measured on feature extraction, a fifth of the CPU time spent in the kernel.
``mallopt(M_MMAP_MAX, 0)`` serves large blocks from the heap instead, and a trim threshold
larger than any heap keeps freed blocks there for the next batch, which reuses the same pages.

Set at the start of a script, before the first large allocation; DataLoader workers forked from
the process inherit it. On macOS, Windows and musl it does nothing.

Where it is used was decided by measurement (docs/speed.md): ``settings.KEEP_ALLOCATOR_MEMORY =
"auto"`` keeps the memory everywhere (feature extraction, fine-tuning, inference) as long as the
DataLoader workers do not fork from the training process (``settings.WORKER_START_METHOD``, which
starts them from a fork server on Linux): forked workers share the kept pages, and every page a
backward pass then writes is copied, which measured slower than glibc's fresh pages. True keeps
it everywhere, False nowhere. ``benchmarks/bench_allocator.py`` and the ``+glibc-default`` /
``+keep-memory`` rows of ``benchmarks/bench_training.py`` measure it.
"""

from __future__ import annotations

import ctypes
import platform
import sys

from .errors import UserError

M_TRIM_THRESHOLD = -1  # glibc's malloc.h
M_MMAP_MAX = -4
NEVER_TRIM = 2**31 - 1  # mallopt takes an int; larger than any heap this process grows

_applied = False


def glibc():
    """The C library when it is glibc (the one mallopt is meant for), else None."""
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def keep_allocator_memory(setting: bool | str = True, *, backward: bool = False, workers_fork: bool = False) -> bool:
    """Tell glibc not to return large freed blocks to the kernel; True when it is in effect.
    ``setting`` is settings.KEEP_ALLOCATOR_MEMORY; with "auto", unless the network trains
    (``backward``) in a process its DataLoader workers are forked from (``workers_fork``): the kept
    pages would be shared with the workers, and each page the backward pass writes copied."""
    global _applied
    if setting != "auto" and not isinstance(setting, bool):
        raise UserError(f"KEEP_ALLOCATOR_MEMORY {setting!r}: expected \"auto\", True or False "
                        "(pyimagesearch/utils/settings.py).")
    enabled = not (backward and workers_fork) if setting == "auto" else setting
    if not enabled:
        return False
    if _applied:
        return True
    libc = glibc()
    if libc is None:
        return False
    _applied = bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, NEVER_TRIM))
    return _applied
