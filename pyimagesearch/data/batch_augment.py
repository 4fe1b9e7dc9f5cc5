"""The tutorial's augmentations and normalisation on whole batches of uint8 photos, on any device.

Photos decoded once (decoded.py) are augmented where they are kept, a batch at a time, instead of
by DataLoader workers photo by photo. Faithful to the tutorial's transforms:

- ``RandomResizedCrop(size)``: each photo's crop is drawn as torchvision draws it (the same
  algorithm, the same calls, so the same numbers from the same generator state), then resized
  bilinearly with antialiasing and rounded to whole 0-255 levels, as torchvision's uint8 resize;
- ``RandomHorizontalFlip()``: a flip with probability one half;
- ``RandomRotation(90)``: an angle uniform in [-90, 90] degrees about the centre, nearest pixels,
  the corners filled with black, with torchvision's sampling grid (the flip folded into it);
- ``ToTensor()`` and ``Normalize(mean, std)``: the same arithmetic, in float32 on the device.

Per photo, the draws come in the tutorial's order (crop, flip, angle).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torchvision import transforms as T

from .decoded import EVAL, TRAIN

SCALE = (0.08, 1.0)  # RandomResizedCrop's defaults
RATIO = (3 / 4, 4 / 3)
DEGREES = 90.0  # the tutorial's RandomRotation(90)


def _uniform(low: float, high: float, generator: torch.Generator) -> float:
    return torch.empty(1).uniform_(low, high, generator=generator).item()


def draw_crop(height: int, width: int, generator: torch.Generator, scale: Sequence[float] = SCALE,
              ratio: Sequence[float] = RATIO) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a random resized crop: torchvision's
    ``RandomResizedCrop.get_params``, drawn from ``generator`` instead of the global generator."""
    area = height * width
    log_ratio = torch.log(torch.tensor(ratio))
    for _ in range(10):
        target_area = area * _uniform(scale[0], scale[1], generator)
        aspect_ratio = torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1], generator=generator)).item()
        w = round(math.sqrt(target_area * aspect_ratio))
        h = round(math.sqrt(target_area / aspect_ratio))
        if 0 < w <= width and 0 < h <= height:
            i = torch.randint(0, height - h + 1, size=(1,), generator=generator).item()
            j = torch.randint(0, width - w + 1, size=(1,), generator=generator).item()
            return i, j, h, w
    in_ratio = width / height  # ten misses: the central crop torchvision falls back to
    if in_ratio < min(ratio):
        w, h = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        h, w = height, round(height * max(ratio))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def draw_flip(generator: torch.Generator) -> bool:
    """RandomHorizontalFlip's draw: ``torch.rand(1) < 0.5``."""
    return bool(torch.rand(1, generator=generator) < 0.5)


def draw_angle(generator: torch.Generator, degrees: float = DEGREES) -> float:
    """RandomRotation's draw: an angle uniform in [-degrees, degrees]."""
    return _uniform(-degrees, degrees, generator)


def resized_crop(photo: torch.Tensor, box: tuple[int, int, int, int], size: int) -> torch.Tensor:
    """One uint8 (3, H, W) photo's crop ``box`` resized to (3, size, size): bilinear with
    antialiasing, in float32 (0-255), not yet rounded (a batch is rounded at once, as torchvision
    rounds each photo; the filter's weights are positive, so nothing leaves 0-255)."""
    top, left, height, width = box
    crop = photo[None, :, top:top + height, left:left + width].float()
    return F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]


@functools.lru_cache(maxsize=8)
def _pixel_centres(height: int, width: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """torchvision's base grid, (x, y, 1) at every pixel centre about the image's centre, and the
    scale that maps it into grid_sample's [-1, 1]: the same for every batch of one size, made once."""
    xs = torch.linspace(-width * 0.5 + 0.5, width * 0.5 - 0.5, steps=width, device=device)
    ys = torch.linspace(-height * 0.5 + 0.5, height * 0.5 - 0.5, steps=height, device=device)
    base = torch.stack([xs.expand(height, width), ys[:, None].expand(height, width),
                        torch.ones(height, width, device=device)], -1).view(1, height * width, 3)
    return base, torch.tensor([0.5 * width, 0.5 * height], device=device)


def flip_and_rotate(batch: torch.Tensor, flips: Sequence[bool], angles: Sequence[float]) -> torch.Tensor:
    """Each image of a (B, C, H, W) float batch mirrored left to right where ``flips`` says so, then
    turned by its angle in degrees, counter-clockwise about its centre: nearest pixels, zeros
    outside. The sampling grid is torchvision's (``transforms.functional.rotate`` on a tensor); the
    mirror is folded into it (x -> -x about the centre), so the batch is sampled once."""
    count, _, height, width = batch.shape
    device = batch.device
    radians = torch.tensor(angles, dtype=torch.float64).deg2rad()
    cos, sin = radians.cos(), radians.sin()
    mirror = 1.0 - 2.0 * torch.tensor(flips, dtype=torch.float64)
    zero = torch.zeros_like(cos)
    # torchvision's inverse matrix for rotate(angle): [cos, -sin, 0, sin, cos, 0] in centred pixels;
    # the mirror negates the x it samples
    theta = torch.stack([mirror * cos, -mirror * sin, zero, sin, cos, zero], 1).view(count, 2, 3)
    theta = theta.to(device, torch.float32)
    base, scale = _pixel_centres(height, width, device)
    grid = base.expand(count, -1, -1).bmm(theta.transpose(1, 2) / scale).view(count, height, width, 2)
    return F.grid_sample(batch, grid, mode="nearest", padding_mode="zeros", align_corners=False)


class Normalize:
    """ToTensor and Normalize on a uint8 batch: (x / 255 - mean) / std, in float32 on x's device."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean, self.std = list(mean), list(std)
        self._device_constants: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        device = batch.device
        if device not in self._device_constants:
            mean = torch.tensor(self.mean, device=device).view(1, -1, 1, 1) * 255
            std = torch.tensor(self.std, device=device).view(1, -1, 1, 1) * 255
            self._device_constants[device] = (mean, std)
        mean, std = self._device_constants[device]
        return (batch.float() - mean) / std


class TrainAugment:
    """The tutorial's training transform on a batch: a list of uint8 (3, H, W) photos of any sizes
    in, a normalised float32 (B, 3, size, size) batch out, on the photos' device; every random draw
    from the caller's generator."""

    def __init__(self, size: int, mean: Sequence[float], std: Sequence[float]) -> None:
        self.size = size
        self.normalize = Normalize(mean, std)

    def draw(self, shapes: Sequence[tuple[int, int]], generator: torch.Generator) -> list[tuple[tuple, bool, float]]:
        """Each photo's (crop box, flip, angle), drawn in the tutorial's order."""
        return [(draw_crop(height, width, generator), draw_flip(generator), draw_angle(generator))
                for height, width in shapes]

    def __call__(self, photos: Sequence[torch.Tensor], generator: torch.Generator) -> torch.Tensor:
        params = self.draw([tuple(photo.shape[-2:]) for photo in photos], generator)
        batch = torch.stack([resized_crop(photo, box, self.size) for photo, (box, _, _) in zip(photos, params)])
        batch = flip_and_rotate(batch.round_(), [flip for _, flip, _ in params], [angle for _, _, angle in params])
        return self.normalize(batch)


class EvalNormalize:
    """The tutorial's validation transform on a batch of photos kept squash-resized (decoded.py):
    only ToTensor and Normalize are left to do. Draws nothing."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.normalize = Normalize(mean, std)

    def __call__(self, photos: Sequence[torch.Tensor], generator: torch.Generator | None = None) -> torch.Tensor:
        return self.normalize(torch.stack(list(photos)))


def split_at_uint8(transforms) -> tuple[T.Compose, Normalize] | None:
    """``transforms`` that end in ToTensor and Normalize, split in two: the same steps ending in
    PILToTensor (uint8, in the workers), and the normalisation (on the device); None for others."""
    steps = transforms.transforms if isinstance(transforms, T.Compose) else []
    if [type(step) for step in steps[-2:]] != [T.ToTensor, T.Normalize]:
        return None
    return T.Compose([*steps[:-2], T.PILToTensor()]), Normalize(steps[-1].mean, steps[-1].std)


def for_batches(transforms) -> tuple[str, int, Callable, Callable | None] | None:
    """(kind, size, batch transform, Pillow resize) for the tutorial's training or validation
    transforms, the two that can run on whole batches of decoded photos; None for any other."""
    steps = transforms.transforms if isinstance(transforms, T.Compose) else []
    kinds = [type(step) for step in steps]
    if kinds[-2:] != [T.ToTensor, T.Normalize]:
        return None
    mean, std = steps[-1].mean, steps[-1].std
    first = steps[0]
    if kinds[:-2] == [T.RandomResizedCrop, T.RandomHorizontalFlip, T.RandomRotation] \
            and first.size[0] == first.size[1] and tuple(first.scale) == SCALE and tuple(first.ratio) == RATIO \
            and steps[1].p == 0.5 and list(steps[2].degrees) == [-DEGREES, DEGREES] \
            and steps[2].interpolation == T.InterpolationMode.NEAREST and not steps[2].expand \
            and steps[2].center is None and steps[2].fill in (0, None):
        return TRAIN, first.size[0], TrainAugment(first.size[0], mean, std), None
    if kinds[:-2] == [T.Resize] and isinstance(first.size, (tuple, list)) and first.size[0] == first.size[1]:
        return EVAL, first.size[0], EvalNormalize(mean, std), first
    return None
