"""Run under torchrun by tests/test_distributed.py: what randomness each process draws after set-up.

Prints one JSON line per process: a digest of its initial weights, the augmentation it applies to
the same training image in the main process, and what a DataLoader worker draws.
"""

from __future__ import annotations

import json
import sys

import torch

import fine_tune
from pyimagesearch.create_dataloaders import get_dataloader, make_loader, train_transforms
from pyimagesearch.distributed import rank
from pyimagesearch.freezing import freeze_batchnorm
from pyimagesearch.model import build_model
from pyimagesearch.training import TrainingSession


class Draws(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int):
        return torch.rand(1), 0


def main(argv: list[str]) -> None:
    args = fine_tune.build_parser().parse_args(argv)
    with TrainingSession(args) as session:
        train_ds, _ = get_dataloader(args.train, train_transforms(args.image_size), args.batch_size,
                                     **session.loader_options)
        model = build_model(len(train_ds.classes), head="mlp", weights=session.backbone_weights())
        freeze_batchnorm(model)
        model = session.prepare(model)
        weights = float(sum(p.double().sum() for p in model.parameters()))
        augmented = train_ds[0][0]  # the same file on every process: only the draws differ
        worker = next(iter(make_loader(Draws(), args.batch_size, False, **session.loader_options)))[0]
        print(json.dumps({"rank": rank(), "weights": weights, "augmentation": float(augmented.double().sum()),
                          "worker": worker.flatten().tolist()}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
