"""Device and compute choices: what `--amp auto` picks, and that the mixed-precision path trains."""

from __future__ import annotations

import re
import sys

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from pyimagesearch import runtime
from pyimagesearch.engine import train_one_epoch
from pyimagesearch.errors import UserError
from pyimagesearch.runtime import Compute, resolve_amp, resolve_device


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
    from pyimagesearch import config

    assert fine_tune.build_parser().parse_args([]).num_workers == config.NUM_WORKERS == "auto"
    assert fine_tune.build_parser().parse_args(["--num-workers", "0"]).num_workers == 0
    monkeypatch.setattr(runtime, "cpu_count", lambda: 16)
    from pyimagesearch.create_dataloaders import make_loader

    monkeypatch.setattr(config, "NUM_WORKERS", 2)
    assert make_loader(TensorDataset(torch.zeros(4)), 2, False, device="cuda").num_workers == 2
    monkeypatch.setattr(config, "NUM_WORKERS", "auto")
    assert make_loader(TensorDataset(torch.zeros(4)), 2, False, device="cuda").num_workers == 15


def test_worker_start_method_follows_the_config_and_refuses_what_the_platform_lacks(monkeypatch):
    from pyimagesearch import config

    monkeypatch.setattr(runtime.sys, "platform", "linux")
    assert runtime.worker_start_method("auto", body_trains=True) == "forkserver"
    assert runtime.worker_start_method("auto", body_trains=False) is None  # forward only: fork
    assert runtime.worker_start_method("fork", body_trains=True) == "fork"
    monkeypatch.setattr(runtime.sys, "platform", "darwin")
    assert runtime.worker_start_method("auto", body_trains=True) is None  # the platform's own default (spawn)
    assert runtime.worker_start_method("spawn") == "spawn"
    monkeypatch.setattr(config, "WORKER_START_METHOD", "threads")
    with pytest.raises(UserError, match="WORKER_START_METHOD 'threads' is not available"):
        runtime.worker_start_method()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork and forkserver: POSIX")
def test_workers_from_a_fork_server_deal_the_same_augmented_batches_as_forked_ones(tmp_path, monkeypatch):
    """Each worker seeds its augmentation from the loader's generator, however it started: a run
    (and --resume) sees the same crops whether its workers fork from it or from the fork server."""
    from conftest import make_image_folder
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
