"""OpenCV around the edges: its log lines held back, and whether a window can open."""

from __future__ import annotations

import contextlib
import os


@contextlib.contextmanager
def quiet_opencv(level: str = "LOG_LEVEL_ERROR"):
    """OpenCV's own log lines (a missing camera, "setPreferableTarget" on every ONNX run) held back
    for the block: they would bury the one message that matters."""
    import cv2  # here, not when a script starts: OpenCV is for the modes that use it

    logging = getattr(cv2, "utils", None) and getattr(cv2.utils, "logging", None)
    if not logging:
        yield
        return
    previous = logging.getLogLevel()
    logging.setLogLevel(getattr(logging, level))
    try:
        yield
    finally:
        logging.setLogLevel(previous)


def has_display() -> bool:
    """Whether a window can open (--show): a desktop session, or Windows."""
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or os.name == "nt")
