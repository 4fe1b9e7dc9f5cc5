"""Where and how the math runs: device, precision, channels_last, workers and their start method, the C
allocator, forward pieces.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from conftest import ROOT, make_image_folder, train_args
from pyimagesearch import config
from pyimagesearch.engine import train_one_epoch
from pyimagesearch.utils import memory, runtime, settings
from pyimagesearch.utils.errors import UserError
from pyimagesearch.utils.runtime import Compute, resolve_amp, resolve_device


def _churn(keep: bool) -> dict:
    done = subprocess.run([sys.executable, "-c", CHURN.format(root=ROOT, keep=keep)], capture_output=True, text=True,
                          timeout=120, check=True)
    return json.loads(done.stdout)


CHURN = """
import ctypes, json, resource, sys
sys.path.insert(0, {root!r})
from pyimagesearch.utils.memory import glibc, keep_allocator_memory
applied = keep_allocator_memory({keep})
libc, size = glibc(), 64 * 2**20
libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
faults = []
for _ in range(6):  # six "batches": a 64 MiB activation buffer written, then freed
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    buffer = libc.malloc(size)
    ctypes.memset(buffer, 1, size)
    libc.free(buffer)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({{"applied": applied, "faults": faults}}))
"""


def test_amp_auto_uses_bf16_on_cpu_only_where_it_is_native(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: False)
    assert resolve_amp("auto", cpu) is None
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: True)
    assert resolve_amp("auto", cpu) is torch.bfloat16
    assert resolve_amp("off", cpu) is None
    with pytest.raises(UserError, match="--amp"):
        resolve_amp("fp8", cpu)


@pytest.mark.parametrize("device", ["cpu", "mps"])
def test_fp16_without_loss_scaling_is_refused(device):
    with pytest.raises(UserError, match="fp16 needs loss scaling"):
        resolve_amp("fp16", torch.device(device))


@pytest.mark.parametrize("capability,expected", [((7, 5), torch.float16), ((7, 0), torch.float16),
                                                  ((8, 0), torch.bfloat16), ((9, 0), torch.bfloat16)])
def test_amp_auto_on_cuda_uses_bf16_only_where_the_gpu_runs_it_natively(monkeypatch, capability, expected):
    asked = []

    def get_device_capability(device=None):
        asked.append(device)
        return {1: capability}.get(getattr(device, "index", None), (6, 0))  # the current device (0) is older

    # torch's own check counts emulated bf16 as support on a T4 (7.5) or V100 (7.0)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", get_device_capability)
    assert resolve_amp("auto", torch.device("cuda", 1)) is expected
    assert asked == [torch.device("cuda", 1)]  # the device it will run on, not the current one
    assert resolve_amp("fp16", torch.device("cuda", 1)) is torch.float16


@pytest.mark.filterwarnings("ignore:.*CUDA is not available:UserWarning")
def test_fp16_on_cuda_gets_loss_scaling():
    cuda = torch.device("cuda")
    assert Compute(cuda, torch.float16).scaler() is not None  # fp16 gradients need loss scaling
    assert Compute(cuda, torch.bfloat16).scaler() is None


def test_unavailable_devices_are_refused_with_the_fix():
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="--device cpu"):
            resolve_device("cuda")
    assert resolve_device("cpu") == torch.device("cpu")


def test_bf16_autocast_and_channels_last_train_on_cpu():
    generator = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(16, 3, 8, 8, generator=generator), torch.randint(0, 2, (16,), generator=generator))
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    compute = Compute(torch.device("cpu"), torch.bfloat16, channels_last=True)
    model = compute.prepare(model)
    before = model[4].weight.detach().clone()
    metrics = train_one_epoch(model, DataLoader(data, batch_size=4), nn.CrossEntropyLoss(),
                              torch.optim.SGD(model.parameters(), lr=0.1), compute, progress=False)
    assert metrics["count"] == 16 and torch.isfinite(torch.tensor(metrics["loss"]))
    assert model[4].weight.dtype == torch.float32  # autocast keeps master weights in fp32
    assert not torch.equal(before, model[4].weight)


def test_compiled_training_saves_plain_checkpoints(compiled_runs):
    """--compile in both scripts: the compiled head (feature extraction) and the compiled network
    with folded BatchNorm (fine-tuning) train and save checkpoints without wrapper prefixes.

    The runs use the "aot_eager" backend (tests/background.py): Dynamo traces the real modules and
    AOTAutograd builds their backward graphs; what is not caught is a bug in Inductor's code
    generation itself.
    """
    import json

    from background import counts
    from pyimagesearch import checkpoint

    def log(name: str) -> str:
        code = (compiled_runs / f"{name}.log.code").read_text()
        text = (compiled_runs / f"{name}.log").read_text()
        assert code == "0", text[-3000:]
        return text

    out = compiled_runs / "output"
    assert re.findall(r"torch\.compile\((\w+)\)", log("warmup")) == ["Linear"]
    _, meta = checkpoint.load(str(out / "warmup_model.pth"))  # no "_orig_mod." prefixes
    assert meta["config"]["compile"] is True

    assert re.findall(r"torch\.compile\((\w+)\)", log("finetune")) == ["ResNet"]
    model, meta = checkpoint.load(str(out / "finetune_model.pth"))  # strict keys: no wrappers
    assert meta["config"]["compile"] is True and meta["config"]["fold_bn"] is True
    history = json.loads((out / "finetune_history.json").read_text())
    assert history[0]["train_count"] == counts(compiled_runs / "dataset")["train"]
    assert torch.isfinite(torch.tensor(history[0]["train_loss"]))
    with torch.no_grad():
        assert torch.isfinite(model(torch.randn(2, 3, 32, 32))).all()


def test_under_torchrun_each_process_takes_its_local_gpu(monkeypatch):
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("cuda") == torch.device("cuda", 1)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)  # the index LOCAL_RANK would take anyway
    with pytest.raises(UserError, match="every process on GPU 0"):
        resolve_device("cuda:0")  # would put all four processes on one GPU
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("cores,device,expected", [(16, "cuda", 15), (64, "cuda", 16), (2, "cuda", 1),
                                                   (16, "cpu", 4), (2, "cpu", 2), (1, "cpu", 1), (10, "mps", 9)])
def test_auto_workers_follow_the_device_and_the_cores(monkeypatch, cores, device, expected):
    monkeypatch.setattr(runtime, "cpu_count", lambda: cores)
    assert runtime.resolve_workers("auto", torch.device(device)) == expected
    assert runtime.resolve_workers(None, torch.device(device)) == expected
    assert runtime.resolve_workers(3, torch.device(device)) == 3  # a number always wins


@pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")
def test_num_workers_flag_and_config_override_auto(monkeypatch):
    import fine_tune

    assert fine_tune.build_parser().parse_args([]).num_workers == config.NUM_WORKERS == "auto"
    assert fine_tune.build_parser().parse_args(["--num-workers", "0"]).num_workers == 0
    monkeypatch.setattr(runtime, "cpu_count", lambda: 16)
    from pyimagesearch.create_dataloaders import make_loader

    monkeypatch.setattr(config, "NUM_WORKERS", 2)
    assert make_loader(TensorDataset(torch.zeros(4)), 2, False, device="cuda").num_workers == 2
    monkeypatch.setattr(config, "NUM_WORKERS", "auto")
    assert make_loader(TensorDataset(torch.zeros(4)), 2, False, device="cuda").num_workers == 15


def test_worker_start_method_follows_the_config_and_refuses_what_the_platform_lacks(monkeypatch):

    monkeypatch.setattr(runtime.sys, "platform", "linux")
    assert runtime.worker_start_method("auto", body_trains=True) == "forkserver"
    assert runtime.worker_start_method("auto", body_trains=False) is None  # forward only: fork
    assert runtime.worker_start_method("fork", body_trains=True) == "fork"
    monkeypatch.setattr(runtime.sys, "platform", "darwin")
    assert runtime.worker_start_method("auto", body_trains=True) is None  # the platform's own default (spawn)
    assert runtime.worker_start_method("spawn") == "spawn"
    with pytest.raises(UserError, match=r"WORKER_START_METHOD 'threads' is not available.*utils/settings\.py"):
        runtime.worker_start_method("threads")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork and forkserver: POSIX")
def test_workers_from_a_fork_server_deal_the_same_augmented_batches_as_forked_ones(tmp_path, monkeypatch):
    """Each worker seeds its augmentation from the loader's generator, however it started: a run
    (and --resume) sees the same crops whether its workers fork from it or from the fork server."""
    from pyimagesearch.create_dataloaders import get_dataloader, train_transforms

    root = make_image_folder(str(tmp_path / "photos"), per_class=4)
    batches = {}
    for method in ("fork", "forkserver"):
        _, loader = get_dataloader(root, train_transforms(32), 4, shuffle=True, num_workers=2, device="cpu", seed=3,
                                   start_method=method)
        assert loader.multiprocessing_context.get_start_method() == method
        batches[method] = [(x.clone(), y.clone()) for x, y in loader]
        del loader
    assert len(batches["fork"]) == 3
    for (x_fork, y_fork), (x_server, y_server) in zip(batches["fork"], batches["forkserver"]):
        assert torch.equal(y_fork, y_server) and torch.equal(x_fork, x_server)


@pytest.mark.skipif(memory.glibc() is None, reason="glibc only")
def test_freed_buffers_stay_in_the_process_for_the_next_batch():
    default, kept = _churn(False), _churn(True)
    assert default["applied"] is False and kept["applied"] is True
    pages = 64 * 2**20 // 4096
    # glibc as it comes: every batch maps fresh pages, which the kernel zeroes on first touch
    assert min(default["faults"][1:]) > pages * 0.9
    # kept: the first batch grows the heap, the next ones reuse its pages
    assert kept["faults"][0] > pages * 0.9 and max(kept["faults"][1:]) < pages * 0.05


def test_it_does_nothing_when_switched_off_or_without_glibc(monkeypatch):
    monkeypatch.setattr(memory, "_applied", False)
    real_glibc = memory.glibc

    def no_libc():
        raise AssertionError("switched off: the C library is not even looked up")

    monkeypatch.setattr(memory, "glibc", no_libc)
    assert memory.keep_allocator_memory(False) is False
    monkeypatch.setattr(memory, "glibc", real_glibc)
    monkeypatch.setattr(memory.platform, "libc_ver", lambda: ("", ""))  # musl, macOS, Windows
    assert memory.glibc() is None and memory.keep_allocator_memory(True) is False


@pytest.mark.parametrize("setting,backward,workers_fork,expected", [
    ("auto", False, False, True), ("auto", True, False, True), ("auto", False, True, True),
    ("auto", True, True, False),  # a trainer whose workers fork: kept pages would be copied on write
    (True, True, True, True), (False, False, False, False)])
def test_auto_keeps_memory_unless_workers_fork_from_a_trainer(monkeypatch, setting, backward, workers_fork, expected):
    monkeypatch.setattr(memory, "_applied", False)
    looked_up = []
    monkeypatch.setattr(memory, "glibc", lambda: looked_up.append(1))  # None: as if not glibc
    memory.keep_allocator_memory(setting, backward=backward, workers_fork=workers_fork)
    assert bool(looked_up) == expected


def test_each_script_passes_the_config_switch_and_what_its_network_does(tmp_path, splits, monkeypatch):
    import fine_tune
    import pyimagesearch.session
    import train_feature_extraction

    calls = []

    class Seen(Exception):
        pass

    def record(setting, backward, workers_fork):
        calls.append((setting, backward, workers_fork))
        raise Seen  # what the script asked for is all this test needs: no training

    monkeypatch.setattr(pyimagesearch.session, "keep_allocator_memory", record)
    monkeypatch.setattr(settings, "KEEP_ALLOCATOR_MEMORY", "auto")
    for script, name in ((train_feature_extraction, "warmup"), (fine_tune, "finetune")):
        with pytest.raises(Seen):
            script.main(train_args(tmp_path, splits, name, "--epochs", "1", "--no-report"))
    # workers forked from the trainer, or started by a fork server, or none at all
    for method in ("fork", "forkserver"):
        monkeypatch.setattr(settings, "WORKER_START_METHOD", method)
        with pytest.raises(Seen):
            fine_tune.main(train_args(tmp_path, splits, "finetune", "--epochs", "1", "--no-report", "--num-workers", "1"))
    assert calls == [("auto", False, False), ("auto", True, False), ("auto", True, True), ("auto", True, False)]


@pytest.mark.parametrize("setting,device_type,expected", [
    ("auto", "cpu", runtime.CPU_FORWARD_CHUNK), ("auto", "cuda", 0), ("auto", "mps", 0), (0, "cpu", 0), (7, "cuda", 7)])
def test_forward_chunk_auto_splits_batches_on_the_cpu_only(setting, device_type, expected):
    assert runtime.forward_chunk(setting, device_type) == expected


@pytest.mark.parametrize("setting", [-1, "16", True, 2.5, None])
def test_a_bad_forward_chunk_names_the_setting_and_the_file(setting):
    from pyimagesearch.utils.errors import UserError

    with pytest.raises(UserError, match=r"FORWARD_CHUNK .*pyimagesearch/utils/settings\.py"):
        runtime.forward_chunk(setting, "cpu")


def test_training_and_inference_run_with_the_configured_forward_chunk(tmp_path, trained, monkeypatch):
    import inference
    import train_feature_extraction
    from pyimagesearch.utils.runtime import Compute

    base, model_path = trained
    monkeypatch.setattr(settings, "FORWARD_CHUNK", 2)
    chunks = []
    real_infer = Compute.infer

    def infer(compute, fn, x):
        chunks.append(compute.forward_chunk)
        return real_infer(compute, fn, x)

    monkeypatch.setattr(Compute, "infer", infer)  # the class every script builds its Compute from
    train_feature_extraction.main(train_args(tmp_path, base, "warmup", "--epochs", "1", "--no-report",
                                             "--no-feature-cache", "--num-workers", "0"))
    assert chunks and set(chunks) == {2}
    chunks.clear()
    inference.main(["--model", model_path, "--evaluate", f"{base}/val", "--output", str(tmp_path / "out"),
                    "--num-workers", "0", "--no-progress"])
    assert chunks and set(chunks) == {2}
