"""A loader over photos decoded once: the (images, labels) batches a DataLoader gives, made on the
device where the photos are kept, by the batch transforms of batch_augment.py."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import torch
from torch.utils.data import BatchSampler, Sampler

from .decoded import DecodedPhotos

BatchTransform = Callable[[Sequence[torch.Tensor], torch.Generator], torch.Tensor]


class DecodedLoader:
    """Batches of ``photos`` in ``sampler``'s order: the images transformed on their device by
    ``transform`` (every random draw from ``generator``, which --resume saves and restores as it does
    a DataLoader's), the labels on the CPU, as a DataLoader gives them. ``dataset`` is the
    ImageFolder the photos came from; ``sampler`` is what set_epoch reshuffles under torchrun."""

    def __init__(self, dataset, photos: DecodedPhotos, transform: BatchTransform, batch_size: int,
                 sampler: Sampler[int], generator: torch.Generator) -> None:
        self.dataset, self.photos, self.transform = dataset, photos, transform
        self.batch_size, self.sampler, self.generator = batch_size, sampler, generator
        self.targets = torch.as_tensor(dataset.targets, dtype=torch.long)

    def __len__(self) -> int:
        return math.ceil(len(self.sampler) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for indices in BatchSampler(self.sampler, self.batch_size, drop_last=False):
            yield self.transform(self.photos.take(indices), self.generator), self.targets[indices]
