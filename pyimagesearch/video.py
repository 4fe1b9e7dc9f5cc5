"""Classify the frames of a video file or a camera, with OpenCV reading and writing the frames.

Each frame goes BGR -> RGB -> the checkpoint's own evaluation transform, exactly as a photo
given to ``--images`` does, then the label, its probability and the frames per second (imutils'
FPS counter) are drawn on it. The annotated video and a per-frame CSV are written as the frames
come, so Ctrl-C leaves both playable and complete up to the last frame.
"""

from __future__ import annotations

import csv
import os
import time
from collections.abc import Callable, Sequence

import cv2
import torch
from imutils.video import FPS
from PIL import Image
from torch import nn
from tqdm import tqdm

from . import engine
from .annotate import draw_lines, has_display
from .errors import UserError
from .runtime import Compute

CODECS = (("mp4v", ".mp4"), ("MJPG", ".avi"))  # the first this OpenCV build can write wins


def _open(source: str | int) -> cv2.VideoCapture:
    logging = getattr(cv2, "utils", None) and getattr(cv2.utils, "logging", None)
    level = logging.getLogLevel() if logging else None
    if logging:  # OpenCV's own warnings for a missing camera would bury the one message that matters
        logging.setLogLevel(logging.LOG_LEVEL_SILENT)
    try:
        capture = cv2.VideoCapture(source)
    finally:
        if logging:
            logging.setLogLevel(level)
    if not capture.isOpened():
        capture.release()
        if isinstance(source, int):
            raise UserError(f"--camera {source}: no camera could be opened at index {source}. Check that it is "
                            "connected and not used by another program, or try another index (0, 1, ...).")
        why = "no such file" if not os.path.exists(source) else "OpenCV cannot read it as a video"
        raise UserError(f"--video '{source}': {why}. Pass a video file OpenCV can read (.mp4, .avi, .mov, ...).")
    return capture


def _writer(stem: str, fps: float, size: tuple[int, int]) -> tuple[cv2.VideoWriter, str]:
    for fourcc, extension in CODECS:
        path = stem + extension
        writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*fourcc), fps, size)
        if writer.isOpened():
            return writer, path
        writer.release()
        if os.path.exists(path):
            os.remove(path)
    raise UserError("OpenCV cannot write video here (neither mp4v nor MJPG); install opencv-contrib-python from PyPI.")


def classify_stream(model: nn.Module, compute: Compute, transform: Callable[[Image.Image], torch.Tensor],
                    class_names: Sequence[str], stem: str, source: str | int, output: str, *, top_k: int,
                    show: bool = False, progress: bool = True, max_frames: int | None = None) -> dict:
    """Classify every frame of ``source`` (a path, or a camera index) with ``model`` after
    ``transform`` (the checkpoint's evaluation transform); writes <output>/<stem>_video.mp4 (or
    _camera) and a per-frame CSV, and returns what was written."""
    capture = _open(source)
    camera = isinstance(source, int)
    source_fps = capture.get(cv2.CAP_PROP_FPS) or 0.0
    if not 1 <= source_fps <= 240:
        source_fps = 30.0
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if not camera else 0
    name = f"{stem}_{'camera' if camera else 'video'}"
    csv_path = os.path.join(output, f"{name}.csv")
    top_k = max(1, min(top_k, len(class_names)))
    if show and not has_display():
        print("[WARN] --show: no display found; writing the annotated video only")
        show = False
    writer, video_path, frames, interrupted = None, None, 0, False
    started = time.perf_counter()
    fps = FPS().start()
    bar = tqdm(total=total or None, desc="frames", unit="frame", disable=not progress, leave=False)
    with open(csv_path, "w", newline="", encoding="utf-8") as handle:
        table = csv.writer(handle)
        table.writerow(["frame", "time_s"] + [f"{kind}_{k + 1}" for k in range(top_k) for kind in ("class", "probability")])
        try:
            while max_frames is None or frames < max_frames:
                ok, frame = capture.read()
                if not ok:
                    break
                rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                probabilities = engine.probabilities(model, transform(Image.fromarray(rgb))[None], compute)[0]
                values, indices = probabilities.topk(top_k)
                fps.update()
                fps.stop()
                seconds = time.perf_counter() - started if camera else frames / source_fps
                label = f"{class_names[int(indices[0])]}: {float(values[0]) * 100:.1f}%"
                draw_lines(frame, [label, f"FPS: {fps.fps():.1f}"])
                if writer is None:
                    writer, video_path = _writer(os.path.join(output, name), source_fps, (frame.shape[1], frame.shape[0]))
                writer.write(frame)
                table.writerow([frames, f"{seconds:.3f}"] + [v for p, i in zip(values, indices)
                                                              for v in (class_names[int(i)], f"{float(p):.6f}")])
                handle.flush()
                frames += 1
                bar.update()
                if show:
                    cv2.imshow("flowers-transfer", frame)
                    if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                        break
        except KeyboardInterrupt:
            interrupted = True
        finally:
            bar.close()
            capture.release()
            if writer is not None:
                writer.release()  # finishes the container: what was written so far plays
            if show:
                cv2.destroyAllWindows()
    if frames == 0:
        os.remove(csv_path)
        raise UserError(f"No frame could be read from {'camera ' + str(source) if camera else repr(source)}.")
    print(f"[INFO] {frames} frame(s) classified at {fps.fps():.1f} frames/s"
          f"{' (interrupted)' if interrupted else ''}; wrote {video_path}, {csv_path}")
    return {"frames": frames, "video": video_path, "csv": csv_path, "interrupted": interrupted}
