"""Names from users' files (photos, class folders) as they are shown: on a terminal line, with no
control character that would break the line, and in a picture, with no character its font lacks
(matplotlib would print a warning for each, in the middle of the run's output)."""

from __future__ import annotations

import functools


def printable(text: object) -> str:
    """``text`` with its control characters (a newline, a tab, an escape) written as escapes, the
    way Python writes them in a string: ``a\\nb.jpg`` stays on one line."""
    text = str(text)
    if all(ch.isprintable() for ch in text):
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


@functools.lru_cache(maxsize=1)
def _font_characters() -> frozenset[int]:
    """The code points matplotlib's default font can draw."""
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font

    return frozenset(FT2Font(font_manager.findfont(font_manager.FontProperties())).get_charmap())


def drawable(text: object) -> str:
    """``printable(text)`` with each character the picture's font lacks replaced by its Unicode
    escape (``\\u4e2d``), so a picture shows every name, and matplotlib warns about none."""
    text = printable(text)
    characters = _font_characters()
    if all(ord(ch) in characters or ch in "\n" for ch in text):
        return text
    return "".join(ch if ord(ch) in characters else _escape(ch) for ch in text)


def _escape(ch: str) -> str:
    code = ord(ch)
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def shortened(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters in the middle, where long class names that share a
    beginning or an end still differ: ``daisy_..._garden_2``."""
    if len(text) <= width:
        return text
    head = (width - 1) // 2
    return f"{text[:head]}\u2026{text[len(text) - (width - 1 - head):]}"
