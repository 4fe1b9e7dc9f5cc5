"""--find-lr: which learning rate for these photos? Smith's range test (2017) on the run's own
model, batches, loss, precision and optimizer, as fastai's lr_find runs it; the curve drawn and a
rate suggested by fastai's rules (schedule.py), and nothing trained that is kept."""

from __future__ import annotations

import copy
import json
import time
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .. import checkpointer, plots
from ..engine import lr_range_test
from ..schedule import range_rates, smooth, suggest
from ..utils import fileio
from ..utils.distributed import is_main_process

if TYPE_CHECKING:
    from ..session import TrainingSession


def find_lr(session: TrainingSession, model: nn.Module, loader, loss_fn: nn.Module, optimizer: torch.optim.Optimizer,
            *, scaler: torch.amp.GradScaler | None = None, feature_fn=None, script: str) -> dict[str, Any]:
    """--find-lr: Smith's range test on the run's own model, batches, loss, precision and optimizer,
    after which the weights and the optimizer are put back as they were; then (the main process)
    <model>_lr_find.png and .json, and one line with the suggestion and the command that uses it.
    Nothing that is trained is kept: no checkpoint is written."""
    args = session.args
    weights, state = copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict())
    rates, started = range_rates(), time.perf_counter()
    losses = lr_range_test(model, loader, loss_fn, optimizer, session.compute, rates, scaler=scaler,
                           feature_fn=feature_fn, progress=args.progress)
    model.load_state_dict(weights)
    optimizer.load_state_dict(state)
    found = suggest(rates, losses)
    result = {"script": script, "rates": rates[:len(losses)], "losses": losses, "smoothed": smooth(losses),
              "stopped_early": len(losses) < len(rates), "seconds": time.perf_counter() - started, **(found or {}),
              "suggested": None}
    if found:  # fine-tuning: fastai advises a rate somewhat below the valley, as the body's weights train too
        result["suggested"] = found["valley"] / 2 if script == "fine_tune.py" else found["valley"]
    if is_main_process():
        prefix = checkpointer.report_prefix(args.model) + "_lr_find"
        fileio.write_text(prefix + ".json", json.dumps(result, indent=1))
        marks = dict(found or {})
        if found and result["suggested"] != found["valley"]:
            marks = {"suggested": result["suggested"], **marks}
        plots.plot_lr_find(rates, losses, result["smoothed"], prefix + ".png", marks,
                           f"Learning-rate range test, {script} (--lr {args.lr:g})")
        session.log(describe_lr_find(result, script, prefix))
    return result


def describe_lr_find(result: dict[str, Any], script: str, prefix: str) -> str:
    """The one line --find-lr prints."""
    wrote = f"wrote {prefix}.png and {prefix}.json"
    if result["suggested"] is None:
        return (f"[INFO] --find-lr: the loss hardly fell over the range ({len(result['losses'])} steps), so no rate can "
                f"be read off it (too little data, or a stand-in backbone); {wrote}")
    how = ("half the valley: for fine-tuning fastai advises somewhat below it" if script == "fine_tune.py"
           else "the valley, fastai's default rule")
    return (f"[INFO] --find-lr: try python {script} --lr {result['suggested']:.1e} ({how}; valley "
            f"{result['valley']:.1e}, steepest descent {result['steepest']:.1e}); {wrote}")
