"""Data loaders and the tutorial's transforms."""

from __future__ import annotations

import os
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from torch.utils.data.distributed import DistributedSampler
from torchvision import datasets
from torchvision import transforms as T

from . import config
from .errors import UserError
from .images import ImageFileFilter, RGBLoader, train_draft_size
from .runtime import resolve_workers


def train_transforms(image_size: int, mean=config.MEAN, std=config.STD) -> T.Compose:
    """The tutorial's augmentations: random resized crop, horizontal flip, rotation in [-90, 90]."""
    return T.Compose([
        T.RandomResizedCrop(image_size),
        T.RandomHorizontalFlip(),
        T.RandomRotation(90),
        T.ToTensor(),
        T.Normalize(mean=mean, std=std),
    ])


def eval_transforms(image_size: int, mean=config.MEAN, std=config.STD) -> T.Compose:
    """The tutorial's validation/test transform: squash-resize to a square, normalise."""
    return T.Compose([
        T.Resize((image_size, image_size)),
        T.ToTensor(),
        T.Normalize(mean=mean, std=std),
    ])


class _ImageFolder(datasets.ImageFolder):
    """ImageFolder without hidden class folders: Jupyter's .ipynb_checkpoints is not a class."""

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        classes = sorted(e.name for e in os.scandir(directory) if e.is_dir() and not e.name.startswith("."))
        if not classes:
            raise FileNotFoundError(f"Couldn't find any class folder in {directory}.")
        return classes, {name: index for index, name in enumerate(classes)}


def image_folder(rootDir: str, transforms=None, draft_size: int | None = None) -> datasets.ImageFolder:
    """An ImageFolder that reads every file as upright RGB and names the folder when it is unusable.

    Only regular files are read: a pipe or device named like an image is left out, and listed
    in the dataset's ``skipped`` attribute.
    """
    if not os.path.isdir(rootDir):
        raise UserError(
            f"Image folder '{rootDir}' does not exist. Run `python build_dataset.py` first "
            "(it writes dataset/train and dataset/val), or pass the folder with --train/--val."
        )
    valid = ImageFileFilter()
    try:
        ds = _ImageFolder(root=rootDir, transform=transforms, loader=RGBLoader(draft_size), is_valid_file=valid)
    except (FileNotFoundError, RuntimeError) as error:
        raise UserError(
            f"'{rootDir}' holds no images in class sub-folders ({error}). "
            "Expected <folder>/<class>/<image>.jpg, as build_dataset.py writes."
        ) from None
    ds.skipped = valid.skipped
    return ds


def eval_loader(image_size: int) -> RGBLoader:
    """The one decode for evaluation, prediction and cached features: draft down to the size the
    squash-resize produces, never below it."""
    return RGBLoader(image_size)


def eval_image_folder(rootDir: str, image_size: int, mean=config.MEAN, std=config.STD) -> datasets.ImageFolder:
    """Class folders read exactly as every evaluation path reads a file."""
    return image_folder(rootDir, eval_transforms(image_size, mean, std), draft_size=image_size)


def train_image_folder(rootDir: str, image_size: int) -> datasets.ImageFolder:
    """Class folders with the tutorial's augmentation, drafted only as far as the smallest crop allows."""
    return image_folder(rootDir, train_transforms(image_size), draft_size=train_draft_size(image_size))


def as_eval(ds: datasets.ImageFolder, image_size: int) -> datasets.ImageFolder:
    """Switch a training ImageFolder to the evaluation transform and decode (un-augmented views)."""
    ds.transform, ds.loader = eval_transforms(image_size), eval_loader(image_size)
    return ds


class ShardSampler(Sampler[int]):
    """Every rank takes every world_size-th index, without the padding DistributedSampler adds,
    so metrics summed over ranks count each image exactly once."""

    def __init__(self, length: int, rank: int, world_size: int) -> None:
        self.indices = list(range(rank, length, world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def make_loader(ds: Dataset, batch_size: int, shuffle: bool, num_workers: int | str | None = None,
                device: str = config.DEVICE, seed: int = config.SEED, even: bool = False,
                collate_fn=None, shard: bool = True) -> DataLoader:
    """A DataLoader with safe defaults; under torchrun each process gets its own share.

    Training shares (``shuffle`` or ``even``) are padded to equal length, as DDP needs every
    process to take the same number of steps; evaluation shares are not, so that summed
    metrics count each image once. ``shard=False`` is for data that already is this process's
    share (cached features).
    """
    num_workers = resolve_workers(config.NUM_WORKERS if num_workers is None else num_workers, device)
    sampler, rank, world = None, 0, 1
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    if shard and world > 1:
        # the sampler's seed is shared: every process must agree on the permutation it shards
        sampler = (DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=shuffle, seed=seed)
                   if shuffle or even else ShardSampler(len(ds), rank, world))
        shuffle = False
    # the generator seeds the workers' augmentation: offset by rank, so processes draw different crops
    generator = torch.Generator()
    generator.manual_seed(seed + rank)
    return DataLoader(
        ds, batch_size=batch_size, shuffle=shuffle, sampler=sampler,
        num_workers=num_workers,
        pin_memory=str(device).startswith("cuda"),
        persistent_workers=num_workers > 0,
        generator=generator,
        collate_fn=collate_fn,
    )


def get_dataloader(rootDir: str, transforms, batchSize: int, shuffle: bool = True,
                   num_workers: int | None = None, device: str = config.DEVICE,
                   draft_size: int | None = None) -> tuple[datasets.ImageFolder, DataLoader]:
    """The tutorial's helper: an ImageFolder over ``rootDir`` and a DataLoader over it.

    Unlike the tutorial, ``num_workers`` is not ``os.cpu_count()`` everywhere (dozens of
    processes on a big CPU-only machine, each taking a core the math needs) but
    config.NUM_WORKERS, sized from the device by default.
    """
    ds = image_folder(rootDir, transforms, draft_size=draft_size)
    return ds, make_loader(ds, batchSize, shuffle, num_workers=num_workers, device=device)

