"""What only torchrun needs: the process group, each process's share of the data, DDP.

A single-GPU or CPU reader can skip this module: every function here is a no-op (or the
identity) in a single process.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterator

import torch
from torch import nn
from torch.utils.data import Dataset, Sampler
from torch.utils.data.distributed import DistributedSampler


def is_distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1


def init_distributed(device: torch.device) -> None:
    """Join the process group torchrun describes in the environment (no-op without torchrun)."""
    if not launched_by_torchrun() or is_distributed():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device.index if device.index is not None else int(os.environ.get("LOCAL_RANK", 0)))
    torch.distributed.init_process_group(backend=backend)


def shutdown_distributed() -> None:
    """Leave the process group (no-op without one). No barrier first: a process that is done
    must not wait in a collective while another one is still writing (or has failed)."""
    if is_distributed():
        torch.distributed.destroy_process_group()


def rank() -> int:
    return torch.distributed.get_rank() if is_distributed() else 0


def world_size() -> int:
    return torch.distributed.get_world_size() if is_distributed() else 1


def gather_objects(value):
    """Every process's ``value``, in rank order (a one-item list in a single process)."""
    if not is_distributed():
        return [value]
    gathered = [None] * world_size()
    torch.distributed.all_gather_object(gathered, value)
    return gathered


def is_main_process() -> bool:
    return rank() == 0


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum plain numbers over all processes (identity in a single process)."""
    if not is_distributed():
        return values
    reduce_device = device if torch.distributed.get_backend() == "nccl" else torch.device("cpu")
    tensor = torch.tensor(values, dtype=torch.float64, device=reduce_device)
    torch.distributed.all_reduce(tensor)
    return tensor.tolist()


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under DistributedDataParallel and torch.compile wrappers."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def wrap_ddp(module: nn.Module, device: torch.device, find_unused: bool = False) -> nn.Module:
    """DistributedDataParallel around the trained module under torchrun; the module itself otherwise."""
    if not is_distributed():
        return module
    device_ids = [device.index] if device.type == "cuda" else None
    # frozen BatchNorm statistics are identical on every rank: nothing to sync per forward
    sync = ({"forward_sync_buffers": False}
            if "forward_sync_buffers" in inspect.signature(nn.parallel.DistributedDataParallel).parameters
            else {"broadcast_buffers": False})
    return nn.parallel.DistributedDataParallel(module, device_ids=device_ids, find_unused_parameters=find_unused, **sync)


def find_ddp(model: nn.Module) -> nn.parallel.DistributedDataParallel | None:
    """The DistributedDataParallel wrapper inside ``model`` (under torch.compile), if any."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            return model
        if not hasattr(model, "_orig_mod"):
            return None
        model = model._orig_mod


class ShardSampler(Sampler[int]):
    """Every rank takes every world_size-th index, without the padding DistributedSampler adds,
    so metrics summed over ranks count each image exactly once."""

    def __init__(self, length: int, rank: int, world_size: int) -> None:
        self.indices = list(range(rank, length, world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def share_sampler(ds: Dataset, shuffle: bool, equal_shares: bool, seed: int) -> Sampler | None:
    """This process's share of ``ds`` under torchrun (None in a single process).

    Training shares (``shuffle`` or ``equal_shares``) are padded to equal length, as DDP needs
    every process to take the same number of steps; evaluation shares are not, so that summed
    metrics count each image once. The seed is shared: every process must agree on the
    permutation it shards.
    """
    if not is_distributed() or world_size() == 1:
        return None
    if shuffle or equal_shares:
        return DistributedSampler(ds, num_replicas=world_size(), rank=rank(), shuffle=shuffle, seed=seed)
    return ShardSampler(len(ds), rank(), world_size())


def set_epoch(loader, epoch: int) -> None:
    """A DistributedSampler reshuffles per epoch only when told the epoch."""
    sampler = getattr(loader, "sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)
