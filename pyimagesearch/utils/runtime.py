"""Where and how the math runs: device, DataLoader workers, seeds, mixed precision, memory format.

What only torchrun needs lives in ``distributed.py``; the C allocator's policy in ``memory.py``.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import random
import sys
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .distributed import launched_by_torchrun
from .errors import UserError

CPU_FORWARD_CHUNK = 16  # images; see forward_chunk


def default_device() -> str:
    """The fastest device here: "cuda", else "mps", else "cpu" (config.DEVICE)."""
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def cpu_has_native_bf16() -> bool:
    """bf16 autocast only pays on CPUs with bf16 instructions (AVX512-BF16 or AMX); elsewhere
    it is emulated and slower than fp32."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            flags = handle.read()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def cpu_count() -> int:
    """Cores this process may use (a container's or taskset's share, not the host's)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def resolve_workers(value: int | str | None, device: torch.device | str) -> int:
    """DataLoader workers: a number is taken as it is; ``auto`` (or None) sizes them from the device.

    On CUDA or MPS the GPU trains ResNet50 faster than a few cores can augment images (about 400
    images/s per core at 224 px), so the loader gets every core but one for the main process,
    capped at 16. On CPU the math needs the cores itself: at most 4 workers, as before.
    """
    if value is None or value == "auto":
        cores = cpu_count()
        if torch.device(device).type in ("cuda", "mps"):
            return max(1, min(cores - 1, 16))
        return min(4, cores)
    return int(value)


FORKSERVER_PRELOAD = ("torch", "torchvision", "numpy", "PIL.Image", "matplotlib.pyplot", "cv2", "tqdm")


def worker_start_method(setting: str, *, body_trains: bool = False) -> str | None:
    """How a training run's DataLoader workers start (settings.WORKER_START_METHOD); None: the
    platform's default. Inference, whose workers live for one pass, forks them as before.

    "auto" is "forkserver" on Linux when the body trains (fine-tuning): a worker forked from the
    training process shares its pages, and every page the backward pass and the optimizer write
    afterwards (weights, gradients, optimizer state, the allocator's kept buffers) is then copied
    by the kernel; measured, a fifth of the CPU time of the epoch after the validation workers
    started. Where the body runs forward only (feature extraction) forking measured faster: the
    server's 2-3 s of imports did not pay. Elsewhere (macOS, Windows) the platform's default.
    """
    if setting == "auto":
        setting = "forkserver" if body_trains and sys.platform.startswith("linux") else None
    elif setting not in multiprocessing.get_all_start_methods():
        raise UserError(f"WORKER_START_METHOD {setting!r} is not available here; use 'auto' or one of "
                        f"{', '.join(multiprocessing.get_all_start_methods())} (pyimagesearch/utils/settings.py).")
    if setting == "forkserver":
        # imported once by the server, not by every worker it forks (1.5 s each on 2 cores): its
        # own preload of __main__ does not happen on Python 3.11, and a worker re-imports the
        # script, which is then cheap
        multiprocessing.set_forkserver_preload(list(FORKSERVER_PRELOAD))
    return setting


def start_worker_server(num_workers: int, start_method: str | None) -> None:
    """Start the fork server now, so that its imports overlap the set-up (building the model,
    calibrating, caching features) instead of delaying the first batch; a no-op elsewhere."""
    if num_workers > 0 and start_method == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()


def resolve_device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name!r}: expected cuda, cuda:N, mps or cpu.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available on this machine. Use --device cpu.")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"--device {name}: MPS is not available on this machine. Use --device cpu.")
    if device.type == "cuda" and launched_by_torchrun():
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        if device.index is None:
            device = torch.device("cuda", local_rank)  # one GPU per process
        elif device.index != local_rank:
            raise UserError(f"--device {name} under torchrun with {os.environ['WORLD_SIZE']} processes would put "
                            f"every process on GPU {device.index}. Pass --device cuda: each process then takes "
                            "the GPU of its LOCAL_RANK (choose GPUs with CUDA_VISIBLE_DEVICES).")
    return device


def cuda_has_native_bf16(device: torch.device) -> bool:
    """bf16 tensor cores exist from compute capability 8.0 (Ampere) on. torch.cuda.is_bf16_supported()
    also counts emulation as support, which on a T4 or V100 is slower than fp16."""
    major, _ = torch.cuda.get_device_capability(device)
    return major >= 8


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """``auto``: bf16 on GPUs that run it natively (fp16 with loss scaling on older ones), bf16 on
    CPUs that have it natively, otherwise fp32. ``off``/``bf16``/``fp16`` force a choice."""
    amp = amp.lower()
    if amp in ("off", "none", "fp32", "false", "0"):
        return None
    if amp == "bf16":
        return torch.bfloat16
    if amp == "fp16":
        if device.type != "cuda":
            raise UserError(f"--amp fp16 on {device.type}: fp16 needs loss scaling, which this project runs only "
                            "on CUDA. Use --amp bf16 or --amp off here.")
        return torch.float16
    if amp != "auto":
        raise UserError(f"--amp {amp!r}: expected auto, off, bf16 or fp16.")
    if device.type == "cuda":
        return torch.bfloat16 if cuda_has_native_bf16(device) else torch.float16
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return None


def forward_chunk(setting: int | str, device_type: str) -> int:
    """Images per piece of a forward pass without autograd (settings.FORWARD_CHUNK); 0: whole batches.

    On the CPU ("auto": CPU_FORWARD_CHUNK) a frozen body or an eval-mode network runs a batch in
    pieces: the same numbers, but the activations alive at once are a piece's. With the kept
    memory, glibc's heap grows to about twice a forward's transient peak (its freed blocks do not
    fit the next sizes); measured on feature extraction at the default batch of 256, peak memory
    went from 2.2 GB to 3.6-4.5 GB kept whole, and to 1.2-1.4 GB in pieces of 16 (pieces of 32:
    about 200 MB more, and about 2 % faster). On a GPU ("auto": 0) big batches are what keeps it
    busy, and PyTorch's caching allocator reuses its blocks.
    """
    if setting == "auto":
        return CPU_FORWARD_CHUNK if device_type == "cpu" else 0
    if isinstance(setting, bool) or not isinstance(setting, int) or setting < 0:
        raise UserError(f"FORWARD_CHUNK {setting!r}: expected 'auto', 0 (whole batches) or a number of images "
                        "(pyimagesearch/utils/settings.py).")
    return setting


@dataclass
class Compute:
    """Where and how tensors are computed, shared by training and evaluation: the device, the
    autocast dtype (None = fp32) and the memory format of image batches."""

    device: torch.device
    amp_dtype: torch.dtype | None = None
    channels_last: bool = False
    forward_chunk: int = 0  # images per piece of a forward pass without autograd; 0: whole batches

    @classmethod
    def from_settings(cls, device: torch.device, amp: str, channels_last: bool, chunk: int | str) -> Compute:
        """What a script computes with: its --amp and --channels-last, and settings.FORWARD_CHUNK."""
        return cls(device, resolve_amp(amp, device), channels_last, forward_chunk(chunk, device.type))

    def infer(self, fn, x: torch.Tensor) -> torch.Tensor:
        """``fn`` over the batch ``x`` under autocast, at most ``forward_chunk`` images at a
        time, each piece moved to the device (and memory format) on its way. Only for forwards in
        which images do not interact (eval mode, a frozen body): the result is the same, and the
        transient activations and input copies are a piece's, not a batch's (settings.FORWARD_CHUNK)."""
        with self.autocast():
            if not self.forward_chunk or len(x) <= self.forward_chunk:
                return fn(self.to_device(x))
            return torch.cat([fn(self.to_device(part)) for part in x.split(self.forward_chunk)])

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def scaler(self) -> torch.amp.GradScaler | None:
        if self.amp_dtype == torch.float16 and self.device.type == "cuda":
            return torch.amp.GradScaler("cuda")
        return None

    def to_device(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def prepare(self, model: nn.Module) -> nn.Module:
        model = model.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    def describe(self) -> str:
        amp = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.amp_dtype]
        return f"{self.device} {amp}{' channels_last' if self.channels_last else ''}"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
