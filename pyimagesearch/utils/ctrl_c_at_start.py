"""Imported first by each script, before torch and the rest load (a second or more): Ctrl-C in
that time exits 130 with one line instead of a traceback through the import machinery.

``run_cli`` puts Python's own Ctrl-C handler back before the script's work starts. A process that
inherited SIGINT ignored (started in the background) keeps it ignored.
"""

from __future__ import annotations

import signal
import sys


def _exit_quietly(signum, frame) -> None:
    print("[ERROR] interrupted", file=sys.stderr)
    raise SystemExit(130)


if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
    signal.signal(signal.SIGINT, _exit_quietly)
