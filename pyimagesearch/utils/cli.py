"""Checked argument types for argparse, a parser that checks its defaults (config.py's values) as
it checks typed values, and the plot-path check every training script shares.

A bad value stops argparse at once (exit 2, a one-line message naming the flag), before any
dataset is scanned or model built.
"""

from __future__ import annotations

import argparse
import math
import os

from .errors import UserError

MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 16, 4096  # pixels a side, for --image-size and a checkpoint's image_size
MAX_SEED = 2**32 - 1  # numpy's and scikit-learn's seeds are 32-bit, unsigned
# what matplotlib's Agg canvas writes (pgf would need LaTeX, raw/rgba are not pictures)
PLOT_FORMATS = ("png", "jpg", "jpeg", "pdf", "svg", "svgz", "eps", "ps", "tif", "tiff", "webp")


def positive_int(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, not {text!r}")
    return value


def non_negative_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text!r}")
    return value


def int_between(low: int, high: int):
    """An argparse type: a whole number from ``low`` to ``high``."""
    def parse(text: str) -> int:
        value = _int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be a whole number from {low} to {high}, not {text!r}")
        return value
    return parse


seed = int_between(0, MAX_SEED)  # --seed: what numpy and scikit-learn accept


def image_size(text: str) -> int:
    value = _int(text)
    if not MIN_IMAGE_SIZE <= value <= MAX_IMAGE_SIZE:
        raise argparse.ArgumentTypeError(f"use {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE} pixels (the tutorial uses 224), "
                                         f"not {text!r}")
    return value


def name(text: str) -> str:
    """A name that must not be empty (a layer, a class)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def workers(text: str) -> int | str:
    """``auto`` or a worker count of 0 or more."""
    return "auto" if text.strip().lower() == "auto" else non_negative_int(text)


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, not {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number greater than 0, not {text!r}")
    return value


def float_between(low: float, high: float):
    """An argparse type: a number from ``low`` to ``high``."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number from {low:g} to {high:g}, not {text!r}") from None
        if not (math.isfinite(value) and low <= value <= high):
            raise argparse.ArgumentTypeError(f"must be a number from {low:g} to {high:g}, not {text!r}")
        return value
    return parse


percentile = float_between(50, 100)  # --unlike-percentile: below the median, most known photos would be flagged


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, not {text!r}") from None


def check_plot_path(path: str, flag: str = "--plot") -> None:
    """The picture's extension must be one matplotlib can write (checked before training, not after)."""
    extension = os.path.splitext(path)[1].lower().lstrip(".")
    if extension and extension not in PLOT_FORMATS:
        raise UserError(f"{flag} {path}: matplotlib cannot write '.{extension}' pictures. "
                        f"Use one of {', '.join('.' + f for f in PLOT_FORMATS)} (for example '.png').")


class CheckedParser(argparse.ArgumentParser):
    """An ArgumentParser whose defaults, config.py's values, go through each flag's own check
    (argparse checks a value typed on the command line, but not a default that is not a string):
    ``NUM_WORKERS = -1`` is refused as ``--num-workers -1`` is, before any work starts."""

    def parse_known_args(self, args=None, namespace=None):
        for action in self._actions:
            problem = _default_problem(action)
            if problem:
                self.error(f"{'/'.join(action.option_strings)}: its default {action.default!r}, from "
                           f"pyimagesearch/config.py, {problem}; fix the value there or pass the flag")
        return super().parse_known_args(args, namespace)


def _default_problem(action: argparse.Action) -> str | None:
    """What is wrong with a flag's default, or None. argparse converts a string default with the
    flag's type (its message would not name config.py), but checks neither its choices nor a
    default of another type."""
    default = action.default
    if not action.option_strings or default is argparse.SUPPRESS:
        return None
    if default is None:  # no value; a flag that must name something says so with its type
        return "must be text in quotes" if action.type is name else None
    if isinstance(action, argparse.BooleanOptionalAction):
        return None if isinstance(default, bool) else "must be True or False"
    if action.choices is not None and default not in action.choices:
        return f"must be one of {', '.join(map(str, action.choices))}"
    if action.nargs == 0:  # store_true and the like: no value to check
        return None
    if action.type in (None, str, name) and not isinstance(default, str):
        return "must be text in quotes"
    if action.type is None:
        return None
    if isinstance(default, bool):
        return "must be a number, not True or False"
    try:
        action.type(str(default))
    except (argparse.ArgumentTypeError, ValueError, TypeError) as error:
        return str(error)
    return None
