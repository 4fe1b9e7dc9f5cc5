"""Loaders whose batches are made on the device, where the model runs: the (images, labels) batches
a DataLoader gives, with the images already there, transformed and normalised.

- DecodedLoader: over photos decoded once (decoded.py), each batch made there by the batch
  transforms of batch_augment.py;
- Uint8Loader: over a DataLoader whose workers stop at uint8 tensors, each batch copied as uint8
  (a quarter of float32's bytes) and normalised there."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import torch
from torch.utils.data import BatchSampler, DataLoader, Sampler

from .batch_augment import Normalize
from .decoded import DecodedPhotos

BatchTransform = Callable[[Sequence[torch.Tensor], torch.Generator], torch.Tensor]


class DecodedLoader:
    """Batches of photos decoded once, in ``sampler``'s order: the images transformed on their device
    by ``transform`` (every random draw from ``generator``, which --resume saves and restores as it does
    a DataLoader's), the labels on the CPU, as a DataLoader gives them. ``decode`` decodes them when
    the loader is first read, not before: a run that finds its features cached never decodes a photo.
    ``dataset`` is the ImageFolder the photos come from; ``sampler`` is what set_epoch reshuffles under
    torchrun."""

    def __init__(self, dataset, decode: Callable[[], DecodedPhotos], transform: BatchTransform, batch_size: int,
                 sampler: Sampler[int], generator: torch.Generator) -> None:
        self.dataset, self.decode, self.transform = dataset, decode, transform
        self.batch_size, self.sampler, self.generator = batch_size, sampler, generator
        self.targets = torch.as_tensor(dataset.targets, dtype=torch.long)
        self._photos: DecodedPhotos | None = None

    @property
    def photos(self) -> DecodedPhotos:
        if self._photos is None:
            self._photos = self.decode()
        return self._photos

    def __len__(self) -> int:
        return math.ceil(len(self.sampler) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        photos = self.photos
        for indices in BatchSampler(self.sampler, self.batch_size, drop_last=False):
            yield self.transform(photos.take(indices), self.generator), self.targets[indices]


class Uint8Loader:
    """``loader``'s uint8 batches moved to ``device`` and normalised there by ``normalize``: the numbers
    the workers' ToTensor and Normalize would give, for a quarter of the bytes to copy and without
    the workers' float arithmetic. ``dataset`` is the ImageFolder as the caller made it (its own
    transforms whole); ``loader`` reads a copy of it whose transforms stop at uint8. Its sampler and
    generator are ``loader``'s, for set_epoch and --resume."""

    def __init__(self, dataset, loader: DataLoader, normalize: Normalize, device: torch.device) -> None:
        self.dataset, self.loader, self.normalize, self.device = dataset, loader, normalize, device

    sampler = property(lambda self: self.loader.sampler)
    generator = property(lambda self: self.loader.generator)
    batch_size = property(lambda self: self.loader.batch_size)
    num_workers = property(lambda self: self.loader.num_workers)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for images, labels in self.loader:
            yield self.normalize(images.to(self.device, non_blocking=True)), labels
