"""The tests' stand-in for ResNet50, and a way to run a script with it in another process.

    python tests/tiny.py fine_tune.py --train ...                      (also under torchrun)
    python tests/tiny.py --stages STAGES.json  fresh runs of scripts' mains, imported once

STAGES.json is a list of stages, each a list of runs {"script": "fine_tune", "argv": [...],
"log": PATH, "sigint_at_epoch": N or null, "compile_backend": NAME or null}: the runs of a stage go side by side, each in a
child forked from this process after the imports and before any arithmetic (so a child is as
fresh as a new process, without its seconds of importing), the stages one after the other.
"sigint_at_epoch" makes the run send itself SIGINT as that epoch's training pass starts: a
chosen point, so no timing decides where it stops. "compile_backend" makes torch.compile use
that backend and log "[tiny] torch.compile(<module type>)" for each call. A run's stdout and stderr go to its log,
its exit code to log + ".code".
"""

from __future__ import annotations

import importlib
import os
import runpy
import signal
import sys


def tiny_resnet50(weights=None, **kwargs):
    """ResNet50's layer names, Bottleneck blocks and 2048-wide features, with one block per stage,
    the first three stages an eighth as wide and narrow 3x3 convolutions: what the scripts do with
    the network (freezing, BatchNorm folding and calibration, heads, checkpoints, resume) behaves
    the same, at a fraction of the arithmetic and parameters (0.7 million, checkpoints of 3 MB, not
    25 million and 100 MB). Tests that need ResNet50 itself are marked ``resnet50``."""
    from torchvision.models import resnet

    class ResNet(resnet.ResNet):  # the same class name: tests read it in torch.compile's log
        def _make_layer(self, block, planes, blocks, stride=1, dilate=False):
            # layer4 keeps its 512 planes (2048 features out); layers 1-3 are 8, 16 and 32 wide
            return super()._make_layer(block, planes if planes == 512 else planes // 8, blocks, stride, dilate)

    assert weights is None
    return ResNet(resnet.Bottleneck, [1, 1, 1, 1], width_per_group=16, **{"num_classes": 10, **kwargs})


def use_tiny_resnet50() -> None:
    from pyimagesearch import model

    model.resnet50 = tiny_resnet50


def interrupt_at_epoch(epoch: int) -> None:
    """The scripts import train_one_epoch from the engine as they start: wrapped there."""
    from pyimagesearch import engine

    real = engine.train_one_epoch

    def train_one_epoch(*args, **kwargs):
        if kwargs["epoch"] == epoch:
            signal.raise_signal(signal.SIGINT)  # Python's own handler: KeyboardInterrupt, as for Ctrl-C
        return real(*args, **kwargs)

    engine.train_one_epoch = train_one_epoch


def compile_with(backend: str) -> None:
    import torch

    real = torch.compile

    def compile(module, **kwargs):
        print(f"[tiny] torch.compile({type(module).__name__})", flush=True)
        return real(module, backend=backend, **kwargs)

    torch.compile = compile


def run_forked(run: dict) -> int:
    """One run in a forked child; returns the child's pid."""
    from pyimagesearch.utils.errors import run_cli

    script = importlib.import_module(run["script"])
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        with open(run["log"], "w") as log:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            if run.get("compile_backend"):
                compile_with(run["compile_backend"])
            if run.get("sigint_at_epoch"):
                # Ctrl-C in a terminal meets Python's own handler; a suite started with SIGINT
                # ignored (make test &, nohup, some CI runners) would pass the ignoring on
                signal.signal(signal.SIGINT, signal.default_int_handler)
                interrupt_at_epoch(run["sigint_at_epoch"])
            code = run_cli(script.main, run["argv"])
            sys.stdout.flush()
            sys.stderr.flush()
        with open(run["log"] + ".code", "w") as handle:
            handle.write(str(code))
    finally:
        os._exit(code)


MAIN_IMPORTS = ("pyimagesearch.session", "pyimagesearch.plots", "pyimagesearch.trust.fit", "pyimagesearch.tuning.lr_find",
                "cleanlab.outlier", "sklearn.neighbors", "sklearn.model_selection")


def run_stages(stages_file: str) -> None:
    import json

    with open(stages_file) as handle:
        stages = json.load(handle)
    for stage in stages:
        for module in {run["script"] for run in stage}:
            importlib.import_module(module)
        for module in MAIN_IMPORTS:  # what the scripts' mains import after parsing their flags
            importlib.import_module(module)
        for pid in [run_forked(run) for run in stage]:
            os.waitpid(pid, 0)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    use_tiny_resnet50()
    if sys.argv[1] == "--stages":
        run_stages(sys.argv[2])
    else:
        script, sys.argv = sys.argv[1], sys.argv[1:]
        runpy.run_path(script, run_name="__main__")
