"""User-facing errors: one paragraph, a non-zero exit code, no traceback wall."""

from __future__ import annotations

import contextlib
import signal
import sys
import textwrap
import threading
from collections.abc import Callable, Sequence


class UserError(Exception):
    """Something the user can fix (a missing folder, an offline download, a bad file).

    The message says what went wrong, naming the file, and what to do about it.
    """

    exit_code = 2


def first_line(error: BaseException) -> str:
    """An exception's first line of text, or its type's name when it has none."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


class Terminated(KeyboardInterrupt):
    """SIGTERM (a killed job, a closed session): unwinds like Ctrl-C, so staging folders and
    temporary files are removed on the way out."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


@contextlib.contextmanager
def terminate_like_interrupt():
    """While the block runs, SIGTERM raises :class:`Terminated` (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_cli(main: Callable[[Sequence[str] | None], object], argv: Sequence[str] | None = None) -> int:
    """Run a script's ``main`` and turn user errors into a short message and an exit code."""
    try:
        with terminate_like_interrupt():
            main(argv)
    except UserError as error:
        text = str(error).strip() or type(error).__name__
        message = text if "\n" in text else textwrap.fill(" ".join(text.split()), width=100, break_long_words=False,
                                                          break_on_hyphens=False)
        print(f"[ERROR] {message}", file=sys.stderr)
        return error.exit_code
    except Terminated:
        print("[ERROR] terminated (SIGTERM); nothing half-written was left behind", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("[ERROR] interrupted", file=sys.stderr)
        return 130
    return 0
