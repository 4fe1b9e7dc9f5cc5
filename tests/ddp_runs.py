"""Run under torchrun by tests/test_distributed.py: the training scripts one after the other in
the same processes, with the tests' tiny network, so the processes start (and import torch) once.

    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/ddp_runs.py RUNS.json

RUNS.json lists [name, script, argv, print_draws] entries. Before each run the main process
prints "=== run NAME"; in a run with print_draws, every process prints one JSON line after set-up: a digest of its
initial weights, the augmentation it applies to the same training image in the main process,
and what a DataLoader worker draws. Exits with the first failing run's code.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib
import json
import os
import socket
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pyimagesearch.create_dataloaders import get_dataloader, make_loader, train_transforms
from pyimagesearch.session import TrainingSession
from pyimagesearch.utils.distributed import rank
from pyimagesearch.utils.errors import run_cli
from tiny import use_tiny_resnet50


class Draws(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 64

    def __getitem__(self, index: int):
        return torch.rand(1), 0


@contextlib.contextmanager
def draws_printed():
    """Every process prints its draws once the session reseeded it, as the trained module goes into DDP."""
    real = TrainingSession.ddp_and_compile

    def ddp_and_compile(session: TrainingSession, model, find_unused: bool = False):
        args = session.args
        train_ds, _ = get_dataloader(args.train, train_transforms(args.image_size), args.batch_size,
                                     **session.loader_options)
        weights = float(sum(p.double().sum() for p in model.parameters()))
        augmented = train_ds[0][0]  # the same file on every process: only the draws differ
        workers = {**session.loader_options, "num_workers": 1}
        worker = next(iter(make_loader(Draws(), args.batch_size, False, **workers)))[0]
        print(json.dumps({"rank": rank(), "weights": weights, "augmentation": float(augmented.double().sum()),
                          "worker": worker.flatten().tolist()}), flush=True)
        return real(session, model, find_unused)

    TrainingSession.ddp_and_compile = ddp_and_compile
    try:
        yield
    finally:
        TrainingSession.ddp_and_compile = real


def use_a_store_of_its_own(agent_store: torch.distributed.TCPStore, run: int) -> None:
    """Each run's process group meets at a new store that the main process serves: a second
    group at torchrun's own store would find the first one's addresses under the same keys."""
    key = f"ddp_runs/port/{run}"
    if os.environ["RANK"] == "0":
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            agent_store.set(key, str(probe.getsockname()[1]))
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=agent_store.get(key).decode(),
                      TORCHELASTIC_USE_AGENT_STORE="False")


def main(runs_file: str) -> int:
    use_tiny_resnet50()
    with open(runs_file) as handle:
        runs = json.load(handle)
    agent_store = torch.distributed.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]),
                                             is_master=False, timeout=datetime.timedelta(seconds=300))
    for run, (name, script, argv, print_draws) in enumerate(runs):
        use_a_store_of_its_own(agent_store, run)
        if os.environ["RANK"] == "0":
            print(f"=== run {name}", flush=True)
        with draws_printed() if print_draws else contextlib.nullcontext():
            code = run_cli(importlib.import_module(script).main, argv)
        if code:
            return code
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
