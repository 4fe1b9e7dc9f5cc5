"""The tutorial's dataloader helper, get_dataloader, and its transforms.

Both training scripts and inference load their images through this module: one ImageFolder
(only regular files, hidden folders are not classes, every file decoded as upright RGB), one
DataLoader factory (workers sized from the device, a seeded generator for --resume, this
process's share under torchrun).
"""

from __future__ import annotations

import copy
import os

import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler, TensorDataset
from torchvision import datasets
from torchvision import transforms as T

from . import config
from .data import decoded
from .data.batch_augment import for_batches, split_at_uint8
from .data.decoded import TRAIN
from .data.device_loaders import DecodedLoader, Uint8Loader
from .data.images import ImageFileFilter, RGBLoader, train_draft_size
from .utils.distributed import rank, share_sampler
from .utils.errors import UserError
from .utils.fileio import human_size, walk_class_folders
from .utils.runtime import cpu_count, resolve_workers


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

    @staticmethod
    def make_dataset(directory: str, class_to_idx: dict[str, int], extensions=None, is_valid_file=None,
                     allow_empty: bool = False) -> list[tuple[str, int]]:
        """(path, class) of every image, as torchvision lists them, but walked as build_dataset.py
        walks: torchvision follows a symlink loop inside a class folder round and round, filing
        every photo it reaches (other classes' too) under that class."""
        found = []
        for folder, files in walk_class_folders(directory):
            label = os.path.relpath(folder, directory).split(os.sep)[0]
            if label in class_to_idx:
                found += [(class_to_idx[label], folder, name) for name in files
                          if is_valid_file(os.path.join(folder, name))]
        present = {index for index, _, _ in found}
        empty = [label for label, index in class_to_idx.items() if index not in present]
        if empty and not allow_empty:
            raise FileNotFoundError(f"Found no valid file for the classes {', '.join(sorted(empty))}.")
        return [(os.path.join(folder, name), index) for index, folder, name in sorted(found)]


def image_folder(rootDir: str, transforms=None, draft_size: int | None = None) -> datasets.ImageFolder:
    """An ImageFolder that reads every file as upright RGB and names the folder when it is unusable.

    Only regular files are read: a pipe or device named like an image is left out, and listed
    in the dataset's ``skipped`` attribute; files that are not images by their extension are
    listed in ``ignored``.
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
    ds.skipped, ds.ignored = valid.skipped, valid.ignored
    return ds


def eval_decoder(image_size: int) -> RGBLoader:
    """The one decode for evaluation, prediction and cached features: draft down to the size the
    squash-resize produces, never below it."""
    return RGBLoader(image_size)


def eval_image_folder(rootDir: str, image_size: int, mean=config.MEAN, std=config.STD) -> datasets.ImageFolder:
    """Class folders read exactly as every evaluation path reads a file."""
    return image_folder(rootDir, eval_transforms(image_size, mean, std), draft_size=image_size)


def decode_size(transforms) -> int | None:
    """How far the JPEG decoder may shrink a photo for ``transforms`` without losing detail the
    transform keeps: the squash-resize's size for evaluation, the smallest random crop's
    bound for training (see images.train_draft_size), no drafting for anything else."""
    first = transforms.transforms[0] if isinstance(transforms, T.Compose) and transforms.transforms else transforms
    if isinstance(first, T.RandomResizedCrop):
        return train_draft_size(min(first.size))
    if isinstance(first, T.Resize) and isinstance(first.size, (tuple, list)):
        return min(first.size)
    return None


def loader_generator(seed: int) -> torch.Generator:
    """A loader's generator: it shuffles and seeds the augmentation (the workers', or every draw of
    a DecodedLoader), and --resume restores it. Offset by rank, so processes draw different crops."""
    generator = torch.Generator()
    generator.manual_seed(seed + rank())
    return generator


def make_loader(ds: Dataset, batch_size: int, shuffle: bool, num_workers: int | str | None = None,
                device: str = config.DEVICE, seed: int = config.SEED, *, equal_shares: bool = False,
                split_across_processes: bool = True, collate_fn=None, start_method: str | None = None) -> DataLoader:
    """The one DataLoader factory: workers sized from the device, a generator seeded for --resume.

    ``start_method`` is how the workers start (runtime.worker_start_method; None: the platform's
    default): the training scripts start theirs from a fork server, and inference forks them.

    Under torchrun each process gets its own share (see distributed.share_sampler);
    ``equal_shares`` pads an unshuffled share to the length of the others (a pass whose output
    trains, such as feature caching), and ``split_across_processes=False`` is for data that
    already is this process's share (cached features).
    """
    num_workers = resolve_workers(config.NUM_WORKERS if num_workers is None else num_workers, device)
    sampler = share_sampler(ds, shuffle, equal_shares, seed) if split_across_processes else None
    generator = loader_generator(seed)
    return DataLoader(
        ds, batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
        num_workers=num_workers,
        pin_memory=str(device).startswith("cuda"),
        persistent_workers=num_workers > 0,
        generator=generator,
        collate_fn=collate_fn,
        multiprocessing_context=start_method if num_workers > 0 else None,
    )


def get_dataloader(rootDir: str, transforms, batchSize: int, shuffle: bool = True, *,
                   num_workers: int | str | None = None, device: str = config.DEVICE, seed: int = config.SEED,
                   equal_shares: bool = False, start_method: str | None = None, decode_once: str = "off",
                   progress: bool = True) -> tuple[datasets.ImageFolder, DataLoader | DecodedLoader | Uint8Loader]:
    """The tutorial's helper: an ImageFolder over ``rootDir`` and a loader over it.

    Unlike the tutorial, ``num_workers`` is not ``os.cpu_count()`` everywhere (dozens of
    processes on a big CPU-only machine, each taking a core the math needs) but
    config.NUM_WORKERS, sized from the device by default; and JPEGs are decoded only as large
    as ``transforms`` needs (decode_size).

    ``decode_once`` (config.DECODE_ONCE) "on" decodes every photo once, keeps it as uint8 on
    ``device`` and makes each batch there with the same transforms (a DecodedLoader); "auto" does
    so on a CUDA GPU when the photos fit in half its free memory; "off" decodes every photo in
    every epoch, in the DataLoader's workers. The dataset's ``pipeline`` says which it is.
    """
    ds = image_folder(rootDir, transforms, draft_size=decode_size(transforms))
    loader, declined = None, ""
    if decode_once != "off":
        loader, declined = decoded_loader(ds, transforms, batchSize, shuffle, decode_once, num_workers=num_workers,
                                          device=device, seed=seed, equal_shares=equal_shares,
                                          start_method=start_method, progress=progress)
    if loader is None:
        loader = per_photo_loader(ds, transforms, batchSize, shuffle, num_workers=num_workers, device=device,
                                  seed=seed, equal_shares=equal_shares, start_method=start_method,
                                  uint8=torch.device(device).type == "cuda")
        ds.pipeline += declined
    return ds, loader


def per_photo_loader(ds: datasets.ImageFolder, transforms, batch_size: int, shuffle: bool, *,
                     num_workers: int | str | None, device: str, seed: int, equal_shares: bool,
                     start_method: str | None, uint8: bool) -> DataLoader | Uint8Loader:
    """The DataLoader whose workers decode and transform every photo in every pass; with ``uint8``
    (on a GPU) they stop at uint8 tensors, and the GPU normalises each batch: a quarter of the bytes
    to copy, and the same numbers (a Uint8Loader). Sets ``ds.pipeline``."""
    split = split_at_uint8(transforms) if uint8 else None
    if split is None:
        loader = make_loader(ds, batch_size, shuffle, num_workers, device, seed, equal_shares=equal_shares,
                             start_method=start_method)
    else:
        stops_at_uint8 = copy.copy(ds)  # the caller's dataset keeps the tutorial's transforms whole
        stops_at_uint8.transform = split[0]
        loader = Uint8Loader(ds, make_loader(stops_at_uint8, batch_size, shuffle, num_workers, device, seed,
                                             equal_shares=equal_shares, start_method=start_method),
                             split[1], torch.device(device))
    copied = f", copied as uint8 and normalised on {device}" if split is not None else ""
    ds.pipeline = f"decoded and transformed photo by photo in every pass, by {loader.num_workers} worker(s){copied}"
    return loader


def decode_workers(num_workers: int | str | None, device: str) -> int:
    """Workers for the one-off decode: every core this process's share of the machine has (training
    has not started, so the main process only gathers), at least the loader's own; none where the
    loader has none."""
    workers = resolve_workers(config.NUM_WORKERS if num_workers is None else num_workers, device)
    if workers == 0:
        return 0
    processes_here = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))  # torchrun's processes on this machine
    return max(workers, min(16, cpu_count() // processes_here))


def decoded_loader(ds: datasets.ImageFolder, transforms, batch_size: int, shuffle: bool, setting: str, *,
                   num_workers: int | str | None, device: str, seed: int, equal_shares: bool,
                   start_method: str | None, progress: bool) -> tuple[DecodedLoader | None, str]:
    """``ds``'s photos decoded once onto ``device`` (by the DataLoader's workers) and a loader of
    batches transformed there; (None, why) where ``setting`` "auto" declines: off CUDA, or photos
    that would take more than half of the device's free memory."""
    target = torch.device(device)
    if setting == "auto" and target.type != "cuda":
        return None, ""  # on a CPU the model, not the input, sets the pace: nothing to say
    plan = for_batches(transforms)
    if plan is None:  # transforms edited away from the tutorial's: only the workers know how to run them
        if setting == "on":
            raise UserError(f"--decode-once on: the transforms for '{ds.root}' are not the tutorial's "
                            "train_transforms or eval_transforms, the two that run on whole batches on the device. "
                            "Run with --decode-once off (or auto), or set DECODE_ONCE in pyimagesearch/config.py.")
        return None, " (not decoded once: these transforms run only photo by photo)"
    kind, size, transform, eval_resize = plan
    paths = [path for path, _ in ds.samples]
    fits, needed, line = decoded.fits(paths, kind, size, target)
    if not fits:
        if setting == "on":
            raise decoded.refuse_too_large(line, ds.root)
        return None, f" (not decoded once: {line}, more than half)"
    decoder = decoded.PhotoDecoder(paths, kind, size, eval_resize)

    def decode() -> decoded.DecodedPhotos:  # when the loader is first read; the workers end with it
        batches = make_loader(decoder, 16, False, decode_workers(num_workers, device), device, seed,
                              split_across_processes=False, collate_fn=list, start_method=start_method)
        return decoded.DecodedPhotos.gather(batches, len(paths), target, progress=progress and rank() == 0,
                                            desc=f"decoding {os.path.basename(os.path.normpath(ds.root))} once")

    generator = loader_generator(seed)
    sampler = share_sampler(ds, shuffle, equal_shares, seed)
    if sampler is None:
        sampler = RandomSampler(ds, generator=generator) if shuffle else SequentialSampler(ds)
    what = "augmented" if kind == TRAIN else "normalised"
    ds.pipeline = (f"decoded once when first read, kept as uint8 ({human_size(needed)} on {target}), {what} there "
                   "batch by batch")
    return DecodedLoader(ds, decode, transform, batch_size, sampler, generator), ""


def feature_loader(features: torch.Tensor, labels: torch.Tensor, batch_size: int, shuffle: bool,
                   seed: int = config.SEED) -> DataLoader:
    """Batches of cached body features: already this process's share, read in the main process,
    each batch sliced out whole (indexing and stacking thousands of 2048-wide rows one by one cost
    more than training the head on them). Shuffled by the loader's generator, as make_loader's."""
    ds = TensorDataset(features, labels)
    generator = loader_generator(seed)
    order = RandomSampler(ds, generator=generator) if shuffle else SequentialSampler(ds)
    return DataLoader(ds, batch_size=None, sampler=BatchSampler(order, batch_size, drop_last=False),
                      generator=generator)
