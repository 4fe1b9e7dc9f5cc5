"""Run under torchrun by tests/test_distributed.py: what randomness each process draws after set-up.

Prints one JSON line per process: a digest of its initial weights, the augmentation it applies to
the same training image in the main process, and what a DataLoader worker draws.
"""

from __future__ import annotations

import json
import sys

import torch

import fine_tune
from pyimagesearch.model import build_model, freeze_batchnorm
from pyimagesearch.runtime import rank
from pyimagesearch.training import TrainingRun


class Draws(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int):
        return torch.rand(1), 0


def main(argv: list[str]) -> None:
    args = fine_tune.build_parser().parse_args(argv)
    with TrainingRun(args, head="mlp") as run:
        model = build_model(len(run.class_names), head="mlp", weights=run.weights())
        freeze_batchnorm(model)
        model = run.prepare(model)
        weights = float(sum(p.double().sum() for p in model.parameters()))
        augmented = run.train_ds[0][0]  # the same file on every process: only the draws differ
        worker = next(iter(run.loader(Draws(), shuffle=False)))[0]
        print(json.dumps({"rank": rank(), "weights": weights, "augmentation": float(augmented.double().sum()),
                          "worker": worker.flatten().tolist()}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
