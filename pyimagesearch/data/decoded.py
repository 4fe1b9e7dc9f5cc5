"""Photos decoded once and kept as uint8 where the model runs, instead of decoded in every epoch.

A GPU trains ResNet50 on thousands of photos a second; a few CPU cores decode and augment a few
hundred. Decoded once, a photo costs its pixels in memory (3 bytes each) and nothing more per
epoch: the batches are augmented on the device (batch_augment.py).

- A photo to be augmented is kept whole, its short side at most ``train_keep_side(size)``: the
  smallest crop RandomResizedCrop draws then still has ``size`` pixels a side, as it has on a photo
  decoded in full (the 240-500 px flowers are kept as they are; a 4032 x 3024 photo at 915 x 1220).
- A photo to be evaluated is kept as the tutorial's validation transform leaves it before
  ToTensor: squash-resized to ``size`` x ``size`` by Pillow, the same bytes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from ..utils.errors import UserError
from ..utils.fileio import human_size
from .images import load_rgb, train_draft_size

TRAIN, EVAL = "train", "eval"


def train_keep_side(size: int) -> int:
    """The short side a photo to be augmented is kept at, at most (915 px at 224)."""
    return train_draft_size(size)


def kept_shape(width: int, height: int, keep_side: int) -> tuple[int, int]:
    """(height, width) of a photo kept with its short side at most ``keep_side``."""
    short = min(width, height)
    if short <= keep_side:
        return height, width
    scale = keep_side / short
    return max(1, round(height * scale)), max(1, round(width * scale))


class PhotoDecoder:
    """A Dataset of uint8 (3, H, W) tensors: each photo decoded as every other path decodes it
    (upright RGB, images.load_rgb), then kept for ``kind``: TRAIN within ``train_keep_side``,
    EVAL squash-resized by ``eval_resize`` (the validation transform's own Resize)."""

    def __init__(self, paths: Sequence[str], kind: str, size: int, eval_resize: Callable | None = None) -> None:
        self.paths, self.kind, self.size, self.eval_resize = list(paths), kind, size, eval_resize

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        if self.kind == EVAL:
            image = self.eval_resize(load_rgb(self.paths[index], self.size))
        else:
            keep = train_keep_side(self.size)
            image = load_rgb(self.paths[index], keep)
            height, width = kept_shape(*image.size, keep)
            if (width, height) != image.size:
                image = image.resize((width, height), Image.BILINEAR)
        return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


def planned_bytes(paths: Sequence[str], kind: str, size: int) -> int:
    """What ``paths`` will take decoded for ``kind``, from their headers (no pixel is decoded)."""
    if kind == EVAL:
        return 3 * size * size * len(paths)
    total, keep = 0, train_keep_side(size)
    for path in paths:
        try:
            with Image.open(path) as image:
                height, width = kept_shape(*image.size, keep)
        except (OSError, ValueError):
            height = width = keep  # decoding will name the file; count it as a large photo meanwhile
        total += 3 * height * width
    return total


def free_memory(device: torch.device) -> int:
    """Bytes free on ``device``: the GPU's free memory, or the host's available memory."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


class DecodedPhotos:
    """Every photo of a folder as uint8 (3, H, W) on one device, in the folder's order."""

    def __init__(self, photos: list[torch.Tensor]) -> None:
        self.photos = photos
        self.nbytes = sum(photo.numel() for photo in photos)

    def take(self, indices: Iterable[int]) -> list[torch.Tensor]:
        return [self.photos[index] for index in indices]

    @classmethod
    def gather(cls, decoded: Iterable[list[torch.Tensor]], total: int, device: torch.device, *,
               progress: bool = True, desc: str = "decoding photos once") -> DecodedPhotos:
        """Batches of decoded photos, in order, moved to ``device`` as they come, with a progress bar."""
        photos: list[torch.Tensor] = []
        with tqdm(total=total, desc=desc, unit="photo", leave=False, dynamic_ncols=True, disable=not progress) as bar:
            for batch in decoded:
                photos += [photo.to(device, non_blocking=True) for photo in batch]
                bar.update(len(batch))
        if device.type == "cuda":
            torch.cuda.current_stream(device).synchronize()  # the pinned host copies may be reused after this
        return cls(photos)


def fits(paths: Sequence[str], kind: str, size: int, device: torch.device, share: float = 0.5) -> tuple[bool, int, str]:
    """Whether ``paths`` decoded for ``kind`` fit in ``share`` of what ``device`` has free, the bytes
    they take, and a line that says so."""
    needed, free = planned_bytes(paths, kind, size), free_memory(device)
    line = f"{len(paths)} photos decoded once take {human_size(needed)} on {device} ({human_size(free)} free)"
    return needed <= share * free, needed, line


def refuse_too_large(line: str, root: str, share: float = 0.5) -> UserError:
    return UserError(f"--decode-once on: the photos of '{root}' do not fit: {line}, and at most {share:.0%} of "
                     "that is used, to leave the rest to training. Run with --decode-once off (or auto, which "
                     "decides by this measure), or set DECODE_ONCE in pyimagesearch/config.py.")
