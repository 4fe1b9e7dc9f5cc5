"""The suite's subprocess runs, started as the test session starts and awaited by the tests that
read them: a torchrun launch and the SIGINT/resume runs spend most of their seconds importing
torch on one core, while the in-process tests use the other.

Each job builds its own dataset, runs in its own folder, and writes stdout and stderr to files
there (a pipe nobody reads would stall it); the jobs run one at a time. Nothing depends on when
a job finishes: a test waits for the whole job, then checks what it wrote.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from conftest import ROOT, make_image_folder

TINY = os.path.join(ROOT, "tests", "tiny.py")


def _as_a_background_job() -> None:
    """The job starts with SIGINT ignored, as `make test &`, nohup and some CI runners start the
    suite, whatever this process inherited: a job must not rely on Python's own Ctrl-C handler
    being installed. Niced a little (3): the torchrun job's two processes then leave the in-process
    tests their core on a quiet machine, and on a busy one a job still gets its share (niced to 10, a
    job gets a tenth of a core there, and the suite waits for it: 8 minutes instead of 3)."""
    os.nice(3)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class Job:
    """A command to run in ``folder``, its stdout and stderr in files there."""

    def __init__(self, command: list[str], folder: Path) -> None:
        self.command, self.folder = command, folder
        self.process: subprocess.Popen | None = None
        self.result: subprocess.CompletedProcess | None = None
        self.done = threading.Event()

    def run(self) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT, "PYTHONUNBUFFERED": "1"}
        try:
            with open(self.folder / "stdout.txt", "w") as out, open(self.folder / "stderr.txt", "w") as err:
                self.process = subprocess.Popen(self.command, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env,
                                                cwd=self.folder, preexec_fn=_as_a_background_job)
                code = self.process.wait()
            self.result = subprocess.CompletedProcess(self.command, code, (self.folder / "stdout.txt").read_text(),
                                                      (self.folder / "stderr.txt").read_text())
        finally:
            self.done.set()

    def wait(self) -> subprocess.CompletedProcess:
        if not self.done.wait(timeout=1800):  # a safety net for a hung job, not a deadline
            raise TimeoutError(f"{self.command} did not end in 30 minutes")
        assert self.result is not None, "the job could not be started"
        return self.result


class JobQueue:
    """Runs its jobs one after the other in a thread (one job at a time keeps to about one core)."""

    def __init__(self, jobs: list[Job]) -> None:
        self.jobs, self.stopped = jobs, False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        for job in self.jobs:
            if self.stopped:
                job.done.set()
                continue
            job.run()

    def stop(self) -> None:
        self.stopped = True
        for job in self.jobs:
            if job.process is not None and job.process.poll() is None:
                job.process.kill()
        self.thread.join(timeout=60)


def build_dataset_folder(root: Path, per_class: int, val_split: str) -> Path:
    import build_dataset

    data = make_image_folder(str(root / "photos"), per_class=per_class)
    build_dataset.main(["--data", data, "--output", str(root / "dataset"), "--val-split", val_split, "--no-progress"])
    return root / "dataset"


def counts(dataset: Path) -> dict[str, int]:
    return {split: sum(len(os.listdir(dataset / split / c)) for c in os.listdir(dataset / split))
            for split in ("train", "val")}


def training_flags(dataset: Path, out: Path, name: str, epochs: int, batch_size: int = 4) -> list[str]:
    return ["--train", str(dataset / "train"), "--val", str(dataset / "val"), "--weights", "none", "--image-size", "32",
            "--epochs", str(epochs), "--batch-size", str(batch_size), "--num-workers", "0", "--device", "cpu",
            "--amp", "off", "--no-progress", "--plot", str(out / f"{name}.png"), "--model", str(out / f"{name}_model.pth")]


# What tests/test_distributed.py runs under torchrun, in this order, in the same two processes:
# name: (script, extra flags, epochs)
TORCHRUN_RUNS = {
    "warmup": ("train_feature_extraction", [], 2),
    "warmup_nocache": ("train_feature_extraction", ["--no-feature-cache"], 2),
    "finetune": ("fine_tune", [], 2),  # each process prints its draws after set-up
    "finetune_resumed": ("fine_tune", ["--resume"], 3),  # the run above, extended to 3 epochs
    "warmup_find_lr": ("train_feature_extraction", ["--find-lr"], 2),  # on the cached features: a second
}


def torchrun_launch(root: Path) -> Job:
    """2 gloo processes that run every entry of TORCHRUN_RUNS one after the other (each process
    starts and imports torch once, not once a run), on 7 validation images: two processes cannot
    split them evenly, so padding would show."""
    dataset = build_dataset_folder(root, per_class=7, val_split="0.3")
    runs = []
    for name, (script, flags, epochs) in TORCHRUN_RUNS.items():
        outputs = name.removesuffix("_resumed")
        runs.append([name, script, [*training_flags(dataset, root / outputs, outputs, epochs), *flags],
                     name == "finetune"])
    (root / "runs.json").write_text(json.dumps(runs))
    return Job([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                os.path.join(ROOT, "tests", "ddp_runs.py"), str(root / "runs.json")], root)


def sigint_stages(root: Path) -> list[list[dict]]:
    """Fresh processes, as a user's runs are: a 4-epoch fine-tuning reference and, side by side,
    a 3-epoch run that sends itself SIGINT as epoch 3 starts; then that run resumed to 4 epochs."""
    dataset = build_dataset_folder(root, per_class=10, val_split="0.3")

    def run(name: str, log: str, epochs: int, *extra: str, sigint_at_epoch: int | None = None) -> dict:
        return {"script": "fine_tune", "log": str(root / log), "sigint_at_epoch": sigint_at_epoch,
                "argv": [*training_flags(dataset, root / name, "finetune", epochs), *extra]}

    return [[run("whole", "whole.log", 4), run("cut", "cut.log", 3, sigint_at_epoch=3)],
            [run("cut", "resumed.log", 4, "--resume")]]


def compile_stages(root: Path) -> list[list[dict]]:
    """--compile in both scripts, side by side, one epoch each (fine-tuning with --fold-bn too),
    with the "aot_eager" backend: Dynamo traces the real modules and AOTAutograd builds their
    backward graphs, but the graphs run eagerly instead of as C++ generated by Inductor (a
    minute on 2 cores)."""
    dataset = build_dataset_folder(root, per_class=6, val_split="0.34")
    return [[{"script": script, "log": str(root / f"{name}.log"), "compile_backend": "aot_eager",
              "argv": [*training_flags(dataset, root / "output", name, epochs=1), "--compile", "--no-report", *extra]}
             for script, name, extra in (("train_feature_extraction", "warmup", []),
                                         ("fine_tune", "finetune", ["--fold-bn"]))]]


DISC_SIZE = 128


def discs_runs(root: Path) -> list[dict]:
    """Fine-tuning on coloured discs at random places (make_images.make_discs), 6 epochs at 128 px,
    once in each precision (conftest.PRECISIONS): tests/test_explain.py reads where the best
    checkpoints' heatmaps point. 24 discs a class at a learning rate of 0.001 reach 0.95 validation
    accuracy in both precisions, over every seed tried (docs/tests.md); the validation discs'
    places are in root/discs.json."""
    from make_images import make_discs

    from conftest import PRECISIONS

    make_discs(str(root / "train"), 24, DISC_SIZE, seed=0)
    (root / "discs.json").write_text(json.dumps(make_discs(str(root / "val"), 5, DISC_SIZE, seed=1)))
    runs = []
    for precision in PRECISIONS:
        out = root / precision
        runs.append({"script": "fine_tune", "log": str(out) + ".log", "sigint_at_epoch": None,
                     "argv": ["--train", str(root / "train"), "--val", str(root / "val"), "--weights", "none",
                              "--image-size", str(DISC_SIZE), "--epochs", "6", "--lr", "0.001", "--batch-size", "8",
                              "--num-workers", "0", "--device", "cpu", "--amp", precision, "--no-progress",
                              "--no-report", "--plot", str(out / "finetune.png"), "--model",
                              str(out / "finetune_model.pth")]})
    return runs


def forked_runs(root: Path) -> Job:
    """The SIGINT/resume runs (in root/sigint), the --compile runs (in root/compile) and the discs
    runs (in root/discs), forked from one process that imports torch once (tests/tiny.py --stages)."""
    for folder in ("sigint", "compile", "discs"):
        (root / folder).mkdir()
    sigint, compiled = sigint_stages(root / "sigint"), compile_stages(root / "compile")
    stages = [sigint[0] + compiled[0], *sigint[1:], *([run] for run in discs_runs(root / "discs"))]
    (root / "stages.json").write_text(json.dumps(stages))
    return Job([sys.executable, TINY, "--stages", str(root / "stages.json")], root)


def long_class_names() -> list[str]:
    """300 classes with names of about 145 characters, words drawn at random (as varied as real
    names, which a PNG cannot compress as it would one name repeated): a report's pictures must
    stay legible and small."""
    import random

    words = ["rosa", "tulipa", "helianthus", "taraxacum", "bellis", "perennis", "officinale", "annuus", "gesneriana",
             "canina", "alba", "rubra", "sylvestris", "japonica", "orientalis", "montana", "variegata", "hybrida"]
    rng = random.Random(0)
    names = []
    for k in range(300):
        name = f"{k:03d}"
        while len(name) < 140:
            name += "_" + rng.choice(words) + str(rng.randrange(100))
        names.append(name)
    return names


MANY_CLASSES_REPORT = """
import sys, torch
sys.path.insert(0, sys.argv[2])
from background import long_class_names
from pyimagesearch.reports import report

class Images(torch.utils.data.Dataset):
    def __init__(self, labels): self.labels = labels
    def __len__(self): return len(self.labels)
    def __getitem__(self, i): return torch.zeros(3, 8, 8), int(self.labels[i])

labels = torch.arange(300).repeat_interleave(2)
probabilities = torch.nn.functional.one_hot((labels + (labels % 7 == 0)) % 300, 300).float()
report.write_report(probabilities, labels, long_class_names(), Images(labels), "m", [0.5] * 3, [0.5] * 3)
"""


def many_classes_report(root: Path) -> Job:
    """The report of 300 long-named classes (about 10 s of drawing text): on the idle core."""
    return Job([sys.executable, "-c", MANY_CLASSES_REPORT, str(root), os.path.join(ROOT, "tests")], root)


# Each script run as a user runs it: --help, a mistyped flag, a bad config.py value. Then no
# module that takes long to import may have loaded: they load once the flags are checked.
STARTUP = """
import contextlib, io, os, runpy, sys
from pyimagesearch import config

root = sys.argv[1]

HEAVY = ("torchvision", "cv2", "matplotlib", "sklearn", "cleanlab", "torchcam", "imutils", "onnx", "torch._dynamo")
config_error = {"build_dataset": ("SEED", -1), "train_feature_extraction": ("EPOCHS", 0),
                "fine_tune": ("IMAGE_SIZE", 8), "inference": ("EXPLAIN_LAYER", "")}
for script in ("build_dataset", "train_feature_extraction", "fine_tune", "inference"):
    for case, argv in (("--help", ["--help"]), ("a mistyped flag", ["--epcohs", "3"]), ("a config error", [])):
        name, value = config_error[script]
        real = getattr(config, name)
        if case == "a config error":
            setattr(config, name, value)
        sys.argv = [script + ".py", *argv] + (["--model", "m.pth"] if script == "inference" and argv != ["--help"] else [])
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            try:
                runpy.run_path(os.path.join(root, script + ".py"), run_name="__main__")
                code = 0
            except SystemExit as stop:
                code = stop.code
        setattr(config, name, real)
        loaded = [module for module in HEAVY if module in sys.modules]
        print(script, case, code, loaded, out.getvalue()[-200:].replace(chr(10), " "))
"""


def startup_imports(root: Path) -> Job:
    """Every script's --help, a mistyped flag and a bad config.py value, in a fresh process (its
    seconds are torch's import, on the idle core), printing what loaded."""
    return Job([sys.executable, "-c", STARTUP, ROOT], root)


# in the order the tests that read them run (tests/conftest.py puts those last, by file)
JOBS = {"startup_imports": startup_imports, "torchrun_launch": torchrun_launch, "forked_runs": forked_runs,
        "many_classes_report": many_classes_report}
# the fixtures (tests/conftest.py) that read each job
READERS = {"startup_answers": "startup_imports", "torchrun_launch": "torchrun_launch", "sigint_runs": "forked_runs",
           "compiled_runs": "forked_runs", "disc_models": "forked_runs", "disc_model": "forked_runs",
           "many_classes_report": "many_classes_report"}
