"""User-facing errors: one paragraph, a non-zero exit code, no traceback wall."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable, Sequence


class UserError(Exception):
    """Something the user can fix (a missing folder, an offline download, a bad file).

    The message says what went wrong, naming the file, and what to do about it.
    """

    exit_code = 2


def run_cli(main: Callable[[Sequence[str] | None], object], argv: Sequence[str] | None = None) -> int:
    """Run a script's ``main`` and turn user errors into a short message and an exit code."""
    try:
        main(argv)
    except UserError as error:
        text = str(error)
        message = text if "\n" in text else textwrap.fill(" ".join(text.split()), width=100, break_long_words=False,
                                                          break_on_hyphens=False)
        print(f"[ERROR] {message}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("[ERROR] interrupted", file=sys.stderr)
        return 130
    return 0
