"""Classify the frames of a video file or a camera, with OpenCV reading and writing the frames.

Each frame goes BGR -> RGB -> the checkpoint's own evaluation transform, exactly as a photo
given to ``--images`` does, then the label, its probability and the frames per second (imutils'
FPS counter) are drawn on it. The annotated video and a per-frame CSV are written as the frames
come, into a hidden folder beside their final names, and moved there when the stream ends: on
Ctrl-C (exit 0, the way to stop a camera) or SIGTERM (exit 143) both are finished, playable and
complete up to the last frame; a run that fails or is killed leaves the previous run's files as
they were.
"""

from __future__ import annotations

import csv
import os
import shutil
import time
from collections.abc import Callable

import cv2
import torch
from imutils.video import FPS
from PIL import Image
from tqdm import tqdm

from ..utils import fileio
from ..utils.errors import Terminated, UserError
from ..utils.opencv import has_display, quiet_opencv
from .drawing import draw_lines
from .predict import Predictor

CODECS = (("mp4v", ".mp4"), ("MJPG", ".avi"))  # the first this OpenCV build can write wins


def _open(source: str | int) -> cv2.VideoCapture:
    if isinstance(source, str):
        fileio.check_regular_or_absent(source, "--video")  # a FIFO would block OpenCV forever
    with quiet_opencv():  # OpenCV's own warnings for a missing camera would bury the one message that matters
        capture = cv2.VideoCapture(source)
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


def check_outputs(source: str | int, output: str, name: str) -> None:
    """What the run will write replaces no input and no special file: checked before any frame."""
    for path in [os.path.join(output, f"{name}.csv")] + [os.path.join(output, name + ext) for _, ext in CODECS]:
        fileio.check_regular_or_absent(path, "--output")
        if isinstance(source, str) and os.path.exists(path) and os.path.samefile(path, source):
            raise UserError(f"--video '{source}' is where this run would write its annotated video. Copy or rename "
                            "the video, or pass another --output folder; nothing was written.")


def _publish(staging: str, output: str) -> None:
    """Move the finished files from the staging folder to their final names, then drop it."""
    for entry in sorted(os.listdir(staging)):
        os.replace(os.path.join(staging, entry), os.path.join(output, entry))
    shutil.rmtree(staging, ignore_errors=True)


def _top_classes(predictor: Predictor, transform: Callable[[Image.Image], torch.Tensor], frame,
                 top_k: int) -> list[tuple[str, float]]:
    """A BGR frame's ``top_k`` (class name, probability), best first, as --images would give."""
    rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    class_names = predictor.class_names
    probabilities = predictor.probabilities(predictor.forward(transform(Image.fromarray(rgb))[None])[0])[0]
    values, indices = probabilities.topk(top_k)
    return [(class_names[int(i)], float(p)) for p, i in zip(values, indices)]


def classify_stream(predictor: Predictor, source: str | int, output: str, *, top_k: int, show: bool = False,
                    progress: bool = True, max_frames: int | None = None) -> dict:
    """Classify every frame of ``source`` (a path, or a camera index) with the predictor's model
    after its evaluation transform; writes <output>/<stem>_video.mp4 (or _camera) and a per-frame
    CSV, and returns what was written."""
    transform, class_names, stem = predictor.transform(), predictor.class_names, predictor.stem
    camera = isinstance(source, int)
    check_outputs(source, output, f"{stem}_{'camera' if camera else 'video'}")
    capture = _open(source)
    source_fps = capture.get(cv2.CAP_PROP_FPS) or 0.0
    if not 1 <= source_fps <= 240:
        source_fps = 30.0
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if not camera else 0
    name = f"{stem}_{'camera' if camera else 'video'}"
    staging = fileio.fresh_temp_beside(os.path.join(output, name), "video", folder=True)  # a killed run's removed
    csv_path = os.path.join(staging, f"{name}.csv")
    top_k = max(1, min(top_k, len(class_names)))
    if show and not has_display():
        print("[WARN] --show: no display found; writing the annotated video only")
        show = False
    writer, video_path, frames, interrupted = None, None, 0, None
    started = time.perf_counter()
    fps = FPS().start()
    bar = tqdm(total=total or None, desc="frames", unit="frame", disable=not progress, leave=False)
    try:
        handle = open(csv_path, "w", newline="", encoding="utf-8")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    with handle:
        table = csv.writer(handle)
        table.writerow(["frame", "time_s"] + [f"{kind}_{k + 1}" for k in range(top_k) for kind in ("class", "probability")])
        try:
            while max_frames is None or frames < max_frames:
                ok, frame = capture.read()
                if not ok:
                    break
                top = _top_classes(predictor, transform, frame, top_k)
                fps.update()
                fps.stop()
                seconds = time.perf_counter() - started if camera else frames / source_fps
                draw_lines(frame, [f"{top[0][0]}: {top[0][1] * 100:.1f}%", f"FPS: {fps.fps():.1f}"])
                if writer is None:
                    writer, video_path = _writer(os.path.join(staging, name), source_fps, (frame.shape[1], frame.shape[0]))
                writer.write(frame)
                table.writerow([frames, f"{seconds:.3f}"] + [cell for c, p in top
                                                              for cell in (fileio.spreadsheet_safe(c), f"{p:.6f}")])
                handle.flush()
                frames += 1
                bar.update()
                if show:
                    cv2.imshow("flowers-transfer", frame)
                    if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                        break
        except KeyboardInterrupt as stop:  # Ctrl-C, or SIGTERM (Terminated): finish the files first
            interrupted = stop
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        finally:
            bar.close()
            capture.release()
            if writer is not None:
                writer.release()  # finishes the container: what was written so far plays
            if show:
                cv2.destroyAllWindows()
    if frames == 0:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(interrupted, Terminated):
            raise interrupted
        raise UserError(f"No frame could be read from {'camera ' + str(source) if camera else repr(source)}.")
    video_path, csv_path = (os.path.join(output, os.path.basename(p)) for p in (video_path, csv_path))
    _publish(staging, output)
    print(f"[INFO] {frames} frame(s) classified at {fps.fps():.1f} frames/s"
          f"{' (interrupted)' if interrupted else ''}; wrote {video_path}, {csv_path}")
    if isinstance(interrupted, Terminated):
        raise interrupted  # exit 143, as everywhere: the files are finished
    return {"frames": frames, "video": video_path, "csv": csv_path, "interrupted": interrupted is not None}
