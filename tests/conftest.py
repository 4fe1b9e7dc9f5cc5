"""Shared fixtures: tiny generated image folders, so every test runs offline in seconds."""

from __future__ import annotations

import contextlib
import os
import signal
import sys

import numpy as np
import pytest
from PIL import Image

from tiny import tiny_resnet50

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))  # the generators and measures the tests share with them

COLORS = {"blue": (30, 60, 220), "green": (40, 200, 60), "red": (220, 40, 40)}


def make_image_folder(root: str, per_class: int = 6, size: int = 40, classes=COLORS, seed: int = 0) -> str:
    """<root>/<class>/img_N.jpg: noisy images whose main colour is the class (easily separable)."""
    rng = np.random.default_rng(seed)
    for name, color in classes.items():
        folder = os.path.join(root, name)
        os.makedirs(folder, exist_ok=True)
        for i in range(per_class):
            pixels = np.clip(np.array(color) + rng.normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(os.path.join(folder, f"img_{i}.jpg"), quality=90)
    return root


NEEDED_JOBS: set[str] = set()


def pytest_collection_modifyitems(session, config, items):
    """Which of tests/background.py's jobs the selected tests read; those tests go last, so the
    jobs run while the others do."""
    from background import READERS

    def jobs_read(item) -> set[str]:
        return {job for fixture, job in READERS.items() if fixture in getattr(item, "fixturenames", ())}

    def reads_a_job(item) -> bool:
        return bool(jobs_read(item))

    for item in items:
        NEEDED_JOBS.update(jobs_read(item))
    items.sort(key=reads_a_job)  # stable: the order within each group stays


@pytest.fixture(scope="session", autouse=True)
def background_jobs(tmp_path_factory):
    """The selected tests' subprocess jobs, started before the first test runs."""
    from background import JOBS, JobQueue

    jobs = {name: start(tmp_path_factory.mktemp(name)) for name, start in JOBS.items() if name in NEEDED_JOBS}
    queue = JobQueue(list(jobs.values()))
    yield jobs
    queue.stop()


@pytest.fixture(scope="session")
def startup_answers(background_jobs):
    """The scripts' answers to --help and to bad flags and settings, and what they loaded (tests/background.py)."""
    return background_jobs["startup_imports"].wait()


@pytest.fixture(scope="session")
def torchrun_launch(background_jobs):
    """tests/ddp_runs.py under torchrun: (completed process, its folder, stdout per run)."""
    job = background_jobs["torchrun_launch"]
    result = job.wait()
    sections = result.stdout.split("=== run ")[1:]
    return result, job.folder, {section.split("\n", 1)[0]: section for section in sections}


def _runs_folder(job):
    result = job.wait()
    assert result.returncode == 0, result.stderr[-3000:]
    return job.folder


@pytest.fixture(scope="session")
def sigint_runs(background_jobs):
    """The SIGINT/resume runs: their folder, once they all ended."""
    return _runs_folder(background_jobs["forked_runs"]) / "sigint"


@pytest.fixture(scope="session")
def many_classes_report(background_jobs):
    """The folder of a report over 300 long-named classes (tests/background.py), once it is written."""
    return _runs_folder(background_jobs["many_classes_report"])


@pytest.fixture(scope="session")
def disc_models(background_jobs):
    """Models fine-tuned on coloured discs at random places (tests/background.py), one per
    precision: {precision: (best checkpoint's path, validation folder, {validation photo:
    [centre x, centre y, radius]})}."""
    import json

    folder = _runs_folder(background_jobs["forked_runs"]) / "discs"
    truth = json.loads((folder / "discs.json").read_text())
    models = {}
    for precision in PRECISIONS:
        code = (folder / f"{precision}.log.code").read_text()
        assert code == "0", (folder / f"{precision}.log").read_text()[-3000:]
        models[precision] = str(folder / precision / "finetune_model_best.pth"), str(folder / "val"), truth
    return models


@pytest.fixture(scope="session")
def disc_model(disc_models):
    """The fp32 model of disc_models, for the tests about something other than what was learnt."""
    return disc_models["off"]


@pytest.fixture(scope="session")
def compiled_runs(background_jobs):
    """The --compile runs of both scripts: their folder, once they ended."""
    return _runs_folder(background_jobs["forked_runs"]) / "compile"


@pytest.fixture(scope="session", autouse=True)
def one_compute_thread():
    """The in-process tests' tiny networks gain nothing from a second thread, and the background
    jobs (tests/background.py) use the second core."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session", autouse=True)
def allocator_as_it_comes():
    """The suite runs both scripts in one process: feature extraction's allocator policy
    (utils/memory.py, once set, for the whole process) would slow every fine-tuning test after it.
    tests/test_runtime.py checks the policy in processes of its own."""
    from pyimagesearch.utils import settings

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(settings, "KEEP_ALLOCATOR_MEMORY", False)
        yield


# The precisions a CPU trains in: fp32, and bf16 where --amp auto picks it (a CPU with native bf16;
# elsewhere autocast runs it emulated, slower). A test that trains and checks what was learnt runs
# in both, whatever this CPU has, with --amp; every other run is pinned to fp32 (fp32_unless_asked).
PRECISIONS = ("off", "bf16")


@pytest.fixture(scope="session", autouse=True)
def fp32_unless_asked():
    """config.py's AMP is "off" for the in-process suite: --amp auto would train and predict in bf16
    on a CPU with native bf16 and in fp32 elsewhere, and a test must not depend on the host. The
    subprocess runs pass --amp off (tests/background.py)."""
    from pyimagesearch import config

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(config, "AMP", "off")
        yield


@pytest.fixture(scope="session", autouse=True)
def tiny_backbone():
    """The whole session builds tiny_resnet50 wherever the scripts build ResNet50."""
    from pyimagesearch import model

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(model, "resnet50", tiny_resnet50)
        yield


@pytest.fixture(autouse=True)
def real_resnet50(request):
    """Tests marked ``resnet50`` get the real network."""
    if request.node.get_closest_marker("resnet50") is None:
        yield
        return
    from torchvision.models import resnet50

    from pyimagesearch import model

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(model, "resnet50", resnet50)
        yield


@contextlib.contextmanager
def deadline(seconds: int):
    """Turn a hang into a failure: SIGALRM interrupts a blocked open() of a FIFO."""
    def fail(*_):
        raise TimeoutError(f"still running after {seconds}s")

    previous = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def write_video(path, frames, fps: int = 5):
    """An MJPG video of RGB ``frames``."""
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, frames[0].shape[1::-1])
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def read_frames(path) -> list[np.ndarray]:
    """Every frame OpenCV decodes from ``path`` (BGR)."""
    import cv2

    capture, frames = cv2.VideoCapture(str(path)), []
    ok, frame = capture.read()
    while ok:
        frames.append(frame)
        ok, frame = capture.read()
    capture.release()
    return frames


@pytest.fixture
def flower_photos(tmp_path):
    """A stand-in for flower_photos/: three colour classes, plus the LICENSE.txt the real one has."""
    root = make_image_folder(str(tmp_path / "flower_photos"))
    with open(os.path.join(root, "LICENSE.txt"), "w") as handle:
        handle.write("licence text\n")
    return root


@pytest.fixture
def splits(tmp_path, flower_photos):
    """dataset/{train,val} built by the real build_dataset.py."""
    import build_dataset

    base = str(tmp_path / "dataset")
    build_dataset.main(["--data", flower_photos, "--output", base, "--val-split", "0.34", "--no-progress"])
    return base


def build(data, base, *extra: str) -> None:
    """build_dataset.py in-process, without progress bars."""
    import build_dataset

    build_dataset.main(["--data", str(data), "--output", str(base), "--no-progress", *extra])


def file_contents(root) -> dict[str, bytes]:
    """Every file below ``root`` (relative path -> bytes): to show that nothing was changed."""
    return {os.path.relpath(os.path.join(folder, name), root): open(os.path.join(folder, name), "rb").read()
            for folder, _, names in os.walk(root) for name in names}


def decoded_size(path) -> tuple[int, int]:
    """The size of the picture at ``path``, fully decoded (a truncated file fails here)."""
    with Image.open(path) as image:
        image.load()
        return image.size


def fine_tune_parser():
    import fine_tune

    return fine_tune.build_parser()


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    """dataset/{train,val} of three colour classes, 10 photos each, 30 % validation."""
    root = tmp_path_factory.mktemp("small")
    base = str(root / "dataset")
    build(make_image_folder(str(root / "photos"), per_class=10), base, "--val-split", "0.3")
    return base


def train_args(tmp_path, base: str, name: str, *extra: str) -> list[str]:
    """Flags for a quick, offline training run writing into tmp_path/output."""
    out = tmp_path / "output"
    return ["--train", os.path.join(base, "train"), "--val", os.path.join(base, "val"),
            "--weights", "none", "--image-size", "32", "--epochs", "2", "--batch-size", "4",
            "--num-workers", "0", "--device", "cpu", "--no-progress",
            "--plot", str(out / f"{name}.png"), "--model", str(out / f"{name}_model.pth"), *extra]


@pytest.fixture(scope="session")
def resnet_weights_file(tmp_path_factory):
    """A ResNet50 state dict whose BatchNorm statistics are not the defaults, saved like
    torchvision's own weights files, so tests can tell whether training touched them."""
    import torch

    from pyimagesearch.model import resnet50  # the session's network (tiny_resnet50)

    torch.manual_seed(123)
    model = resnet50(weights=None)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.0)
                module.bias.normal_(0, 0.05)
                module.num_batches_tracked.fill_(1000)
    path = tmp_path_factory.mktemp("weights") / "resnet50-test.pth"
    torch.save(model.state_dict(), path)
    return str(path)


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection off this machine fails at once, as it would offline."""
    import socket

    real_connect = socket.socket.connect

    def guarded(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and (host.startswith("127.") or host in ("localhost", "::1")):
            return real_connect(self, address)
        raise OSError(f"network disabled in tests (tried {address})")

    monkeypatch.setattr(socket.socket, "connect", guarded)
    monkeypatch.setattr(socket, "getaddrinfo", _offline_getaddrinfo(socket.getaddrinfo))


def _offline_getaddrinfo(real):
    import socket

    def lookup(host, *args, **kwargs):
        if host in ("localhost", "127.0.0.1", "::1") or (isinstance(host, str) and host.startswith("127.")):
            return real(host, *args, **kwargs)
        raise socket.gaierror(f"name resolution disabled in tests ({host})")

    return lookup


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """One feature-extraction checkpoint (32 px, one epoch) and its dataset, shared by every test
    that only needs *a* model: (dataset folder, checkpoint path)."""
    import build_dataset
    import train_feature_extraction

    root = tmp_path_factory.mktemp("trained")
    data = make_image_folder(str(root / "photos"))
    base = str(root / "dataset")
    build_dataset.main(["--data", data, "--output", base, "--val-split", "0.34", "--no-progress"])
    train_feature_extraction.main(train_args(root, base, "warmup", "--epochs", "1", "--no-report"))
    return base, str(root / "output" / "warmup_model.pth")


@pytest.fixture(scope="session")
def exported(trained, tmp_path_factory):
    """The shared checkpoint exported to ONNX: (dataset folder, checkpoint path, .onnx path)."""
    import inference

    base, model = trained
    onnx = str(tmp_path_factory.mktemp("onnx") / "warmup_model.onnx")
    inference.main(["--model", model, "--export", onnx])
    return base, model, onnx


def error_text(capsys) -> str:
    """What a script printed to stderr, whitespace folded (messages are wrapped at 100 columns)."""
    return " ".join(capsys.readouterr().err.split())


def plain_and_fast(model_path: str, fast_compute):
    """The checkpoint twice, frozen and in eval mode: as saved, and as inference.py runs it on
    ``fast_compute`` (BatchNorm folded, its memory format and device): (plain, fast, metadata)."""
    from pyimagesearch import checkpoint
    from pyimagesearch.freezing import fold_frozen_batchnorm

    plain, meta = checkpoint.load(model_path)
    fast, _ = checkpoint.load(model_path)
    for model in (plain, fast):
        model.requires_grad_(False).eval()
    fold_frozen_batchnorm(fast)
    return plain, fast_compute.prepare(fast), meta
