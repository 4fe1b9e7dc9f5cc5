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
    """SIGTERM (a killed job) or SIGHUP (its terminal closed): unwinds like Ctrl-C, so staging
    folders and temporary files are removed on the way out, and a training run keeps the
    resumable state of its last complete epoch."""

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__()
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention: 143 for SIGTERM, 129 for SIGHUP


def _raise_terminated(signum, frame) -> None:
    raise Terminated(signum)


# SIGHUP only where it would end the process (its default): under nohup it is ignored, and stays so
STOPS = (signal.SIGTERM, *((signal.SIGHUP,) if hasattr(signal, "SIGHUP") else ()))


@contextlib.contextmanager
def terminate_like_interrupt():
    """While the block runs, SIGTERM and SIGHUP raise :class:`Terminated` (main thread only),
    unless the process inherited them ignored (nohup ignores SIGHUP)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in STOPS}
    for signum, handler in previous.items():
        if handler is not signal.SIG_IGN:
            signal.signal(signum, _raise_terminated)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def run_cli(main: Callable[[Sequence[str] | None], object], argv: Sequence[str] | None = None) -> int:
    """Run a script's ``main`` and turn user errors into a short message and an exit code."""
    if threading.current_thread() is threading.main_thread() and \
            getattr(signal.getsignal(signal.SIGINT), "__module__", "").endswith("ctrl_c_at_start"):
        signal.signal(signal.SIGINT, signal.default_int_handler)  # the imports are done: Ctrl-C unwinds again
    try:
        with terminate_like_interrupt():
            main(argv)
    except UserError as error:
        text = str(error).strip() or type(error).__name__
        message = text if "\n" in text else textwrap.fill(" ".join(text.split()), width=100, break_long_words=False,
                                                          break_on_hyphens=False)
        print(f"[ERROR] {message}", file=sys.stderr)
        return error.exit_code
    except Terminated as stopped:
        print(f"[ERROR] terminated ({signal.Signals(stopped.signum).name}); nothing half-written was left behind",
              file=sys.stderr)
        return stopped.exit_code
    except KeyboardInterrupt:
        print("[ERROR] interrupted", file=sys.stderr)
        return 130
    return 0
