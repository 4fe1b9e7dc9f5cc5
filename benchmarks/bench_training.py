"""Tutorial-style training versus this project's defaults, side by side in one run.

Usage:
    python benchmarks/bench_training.py                        # generated flowers, 224 px, CPU or CUDA
    python benchmarks/bench_training.py --data flower_photos --per-class 0 --epochs 2
    python benchmarks/bench_training.py --weights ~/.cache/torch/hub/checkpoints/resnet50-0676ba61.pth
    python benchmarks/bench_training.py --only ft-tutorial ft-project --repeats 3   # median of 3 rounds
    python benchmarks/bench_training.py --only loader ft-project                   # size the DataLoader workers
    python benchmarks/bench_training.py --only loader ft-project ft-project-decoded   # photos decoded once or not
    python benchmarks/bench_training.py --only latency --device cpu                # PyTorch vs OpenCV DNN, one image
    python benchmarks/bench_training.py --only ft-project ft-project+glibc-default+fork-workers  # kept memory, fork server
    python benchmarks/bench_training.py --only ft-project ft-project+glibc-default ft-project+fork-workers  # one each
    python benchmarks/bench_training.py --only fe-project-uncached fe-project-uncached+whole-batches \
        --per-class 120 --batch-size 256 --fe-epochs 2               # the script's batch, in pieces or whole

"Tutorial style" is the tutorial's own loop: fp32, NCHW, ``model.train()`` on the whole network
(so BatchNorm runs in training mode), features recomputed every epoch, Pillow's default loader,
and for fine-tuning the tutorial's ``zip(model.modules(), model.parameters())`` freezing.
"Project style" runs this project's scripts (train_feature_extraction.main, fine_tune.main) with
their defaults. Each run is a separate process, so peak memory is its own. Prints a table and
writes benchmarks/results/latest.json (with the CPU or GPU it ran on).

Feature extraction runs --fe-epochs epochs in every style (tutorial, project without cache,
project cached with one view and with --views augmented views), so both speed and validation
accuracy compare like for like; fine-tuning runs --epochs epochs. Every row is timed end to end
(set-up, one-off feature caching, all epochs), and the ratio is the tutorial style's time over
the run's.

The "ceiling" measurement counts ResNet50's floating-point operations per image and times a
large matrix multiply on the same device: the speed no implementation of the same training could
beat here, printed as images/s and as a ratio to the tutorial style.

Offline (--weights none, the default) the backbone is ResNet50's random initialisation with
its BatchNorm statistics calibrated on the training images: a stand-in for ImageNet weights
whose features are well scaled, written once and loaded by every run. Pass the real weights
file with --weights for figures that match a user's.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def peak_memory_mb(device: str) -> float:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# --- the tutorial's loop, kept as it was (with the loss bookkeeping made harmless) ------------

def tutorial_run(mode: str, args) -> dict:
    import torch
    from torch import nn
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms
    from torchvision.models import resnet50

    from pyimagesearch import config
    from pyimagesearch.utils.weights import load_backbone_weights

    torch.manual_seed(args.seed)
    started = time.perf_counter()
    train_tf = transforms.Compose([transforms.RandomResizedCrop(args.image_size), transforms.RandomHorizontalFlip(),
                                   transforms.RandomRotation(90), transforms.ToTensor(),
                                   transforms.Normalize(config.MEAN, config.STD)])
    val_tf = transforms.Compose([transforms.Resize((args.image_size, args.image_size)), transforms.ToTensor(),
                                 transforms.Normalize(config.MEAN, config.STD)])
    train_ds = datasets.ImageFolder(os.path.join(args.dataset, "train"), train_tf)
    val_ds = datasets.ImageFolder(os.path.join(args.dataset, "val"), val_tf)
    pin = args.device.startswith("cuda")
    train_loader = DataLoader(train_ds, args.batch_size, shuffle=True, num_workers=args.num_workers, pin_memory=pin)
    val_loader = DataLoader(val_ds, args.batch_size, shuffle=False, num_workers=args.num_workers, pin_memory=pin)

    model = resnet50()
    weights = load_backbone_weights(args.weights)
    if weights is not None:
        model.load_state_dict(weights)
    if mode == "fe":
        for param in model.parameters():
            param.requires_grad = False
        model.fc = nn.Linear(model.fc.in_features, len(train_ds.classes))
        opt = torch.optim.Adam(model.fc.parameters(), lr=config.LR)
    else:
        for module, param in zip(model.modules(), model.parameters()):  # the tutorial's (ineffective) freeze
            if isinstance(module, nn.BatchNorm2d):
                param.requires_grad = False
        model.fc = nn.Sequential(nn.Linear(model.fc.in_features, 512), nn.ReLU(), nn.Dropout(0.25), nn.Linear(512, 256),
                                 nn.ReLU(), nn.Dropout(0.5), nn.Linear(256, len(train_ds.classes)))
        opt = torch.optim.Adam(model.parameters(), lr=config.LR)
    model = model.to(args.device)
    loss_fn = nn.CrossEntropyLoss()
    setup = time.perf_counter() - started
    epochs = []
    for _ in range(args.fe_epochs if mode == "fe" else args.epochs):
        epoch_started = time.perf_counter()
        model.train()
        for i, (x, y) in enumerate(train_loader):
            x, y = x.to(args.device), y.to(args.device)
            loss = loss_fn(model(x), y)
            loss.backward()
            if (i + 2) % 2 == 0:
                opt.step()
                opt.zero_grad()
        train_seconds = time.perf_counter() - epoch_started
        correct = 0
        with torch.no_grad():
            model.eval()
            for x, y in val_loader:
                correct += (model(x.to(args.device)).argmax(1).cpu() == y).sum().item()
        epochs.append({"seconds": time.perf_counter() - epoch_started, "train_seconds": train_seconds,
                       "val_acc": correct / len(val_ds)})
    return {"setup_seconds": setup, "epochs": epochs, "train_images": len(train_ds), "val_images": len(val_ds),
            "val_acc": epochs[-1]["val_acc"], "peak_mb": peak_memory_mb(args.device)}


# --- this project's scripts, with their defaults -----------------------------------------------

def project_run(mode: str, args, extra: list[str], epochs: int) -> dict:
    import fine_tune
    import train_feature_extraction
    from pyimagesearch import engine

    out = tempfile.mkdtemp()
    argv = ["--train", os.path.join(args.dataset, "train"), "--val", os.path.join(args.dataset, "val"),
            "--weights", args.weights, "--image-size", str(args.image_size), "--epochs", str(epochs),
            "--batch-size", str(args.batch_size), "--num-workers", str(args.num_workers), "--device", args.device,
            "--plot", os.path.join(out, "plot.png"), "--model", os.path.join(out, "model.pth"),
            "--seed", str(args.seed), "--no-report", "--no-progress", *extra]
    script = train_feature_extraction if mode == "fe" else fine_tune
    passes: list[dict] = []
    real = measured_passes(passes)
    started = time.perf_counter()
    try:
        script.main(argv)
    finally:
        engine.train_one_epoch = real
    total = time.perf_counter() - started
    with open(os.path.join(out, "plot_history.json")) as handle:
        history = json.load(handle)
    shutil.rmtree(out, ignore_errors=True)
    return {"total_seconds": total, "epochs": [{"seconds": r["seconds"], "val_acc": r["val_acc"]} for r in history],
            "train_images": history[0]["train_count"], "val_images": history[0]["val_count"],
            "val_acc": history[-1]["val_acc"], "peak_mb": peak_memory_mb(args.device), "passes": passes}


def decode_cost(args) -> dict:
    """Seconds per image to decode and transform, with Pillow's default loader and with ours."""
    from torchvision import datasets

    from pyimagesearch.create_dataloaders import train_transforms
    from pyimagesearch.data.images import RGBLoader

    folder = os.path.join(args.dataset, "train")
    result = {}
    for name, loader in (("pillow_default", None), ("project_draft", RGBLoader(args.image_size))):
        ds = datasets.ImageFolder(folder, train_transforms(args.image_size), **({"loader": loader} if loader else {}))
        count = min(len(ds), 100)
        started = time.perf_counter()
        for i in range(count):
            ds[i]
        result[name] = (time.perf_counter() - started) / count
    return result


def arithmetic_ceiling(args, gemm_size: int = 4096) -> dict:
    """How fast any implementation of the same training could go here: ResNet50's floating-point
    operations per image (counted by torch's FlopCounterMode) against the rate of a large matrix
    multiply in the same precision, the best case for convolution kernels."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from pyimagesearch.freezing import fold_frozen_batchnorm, freeze_batchnorm, freeze_body
    from pyimagesearch.model import Body, build_model
    from pyimagesearch.utils.runtime import resolve_amp, resolve_device

    device = resolve_device(args.device)
    # The forward pass is counted on the meta device (shapes only, no arithmetic). The backward
    # pass is counted on one real image: a convolution backward on meta tensors leaves torch 2.14's
    # CPU convolutions choosing other kernels afterwards, so later training in the same process
    # (the tests') is no longer bitwise reproducible.
    with torch.device("meta"):
        frozen = build_model(5, "linear")
        x = torch.randn(2, 3, args.image_size, args.image_size)
    freeze_body(frozen)
    fold_frozen_batchnorm(frozen)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        Body(frozen)(x)
    forward = counter.get_total_flops() / len(x)
    tuned = build_model(5, "mlp")
    freeze_batchnorm(tuned)
    fold_frozen_batchnorm(tuned)
    x = torch.randn(1, 3, args.image_size, args.image_size)
    with FlopCounterMode(display=False) as counter:
        tuned(x).sum().backward()
    train = counter.get_total_flops() / len(x)

    dtype = resolve_amp(args.amp, device) or torch.float32
    n = gemm_size  # large enough for the kernel's best rate
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    rates = []
    for _ in range(4):
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        rates.append(2 * n**3 / (time.perf_counter() - started))
    return {"forward_flop_per_image": forward, "train_flop_per_image": train, "gemm_flops": max(rates[1:]),
            "dtype": str(dtype)}


def calibrated_weights(args, path: str, images: int = 64) -> str:
    """Random ResNet50 weights whose BatchNorm statistics are measured on the training images."""
    import torch
    from torchvision import datasets
    from torchvision.models import resnet50

    from pyimagesearch.create_dataloaders import eval_transforms
    from pyimagesearch.utils.stand_in import calibrate_batchnorm

    torch.manual_seed(args.seed)
    model = resnet50()
    ds = datasets.ImageFolder(os.path.join(args.dataset, "train"), eval_transforms(args.image_size))
    subset = torch.utils.data.Subset(ds, torch.randperm(len(ds))[:images].tolist())
    calibrate_batchnorm(model, (x for x, _ in torch.utils.data.DataLoader(subset, batch_size=16)))
    torch.save(model.state_dict(), path)
    return path


def loader_rate(args, passes: int = 2) -> dict:
    """Images/s the training DataLoader delivers (decode + augmentation) with 1 and 2 workers and a
    warm page cache: what one worker feeds, to size the workers against the model's speed."""
    import torch

    from pyimagesearch.create_dataloaders import image_folder, train_transforms
    from pyimagesearch.data.images import train_draft_size

    ds = image_folder(os.path.join(args.dataset, "train"), train_transforms(args.image_size),
                      draft_size=train_draft_size(args.image_size))
    rates = {}
    for workers in (1, 2):
        loader = torch.utils.data.DataLoader(ds, batch_size=args.batch_size, shuffle=True, num_workers=workers,
                                             persistent_workers=True)
        for _ in loader:  # warm-up: workers started, files in the page cache
            pass
        started, count = time.perf_counter(), 0
        for _ in range(passes):
            for x, _ in loader:
                count += len(x)
        rates[workers] = count / (time.perf_counter() - started)
    return {"images_per_s": rates, "per_worker": rates[1], "per_worker_uint8": uint8_rate(args, passes),
            "decoded_once": decoded_rate(args, passes)}


def uint8_rate(args, passes: int = 2) -> float:
    """Images/s one worker delivers when its transforms stop at uint8 (what a GPU's loader does; the
    GPU normalises), against ``per_worker``'s float32 batches."""
    import torch

    from pyimagesearch.create_dataloaders import image_folder, train_transforms
    from pyimagesearch.data.batch_augment import split_at_uint8
    from pyimagesearch.data.images import train_draft_size

    ds = image_folder(os.path.join(args.dataset, "train"), split_at_uint8(train_transforms(args.image_size))[0],
                      draft_size=train_draft_size(args.image_size))
    loader = torch.utils.data.DataLoader(ds, batch_size=args.batch_size, shuffle=True, num_workers=1,
                                         persistent_workers=True)
    for _ in loader:
        pass
    started, count = time.perf_counter(), 0
    for _ in range(passes):
        for x, _ in loader:
            count += len(x)
    return count / (time.perf_counter() - started)


def decoded_rate(args, passes: int = 2) -> dict:
    """The same photos decoded once (--decode-once on): the one-off decode (by every core), then the
    batches cropped, flipped, rotated and normalised on --device by the main process, on one CPU
    thread when that device is the CPU (so both rates are per core there)."""
    import torch

    from pyimagesearch.create_dataloaders import decode_workers, get_dataloader, train_transforms

    device = torch.device(args.device)
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)

    def wait():
        if device.type == "cuda":
            torch.cuda.synchronize()

    try:
        started = time.perf_counter()
        ds, loader = get_dataloader(os.path.join(args.dataset, "train"), train_transforms(args.image_size),
                                    args.batch_size, True, num_workers=1, device=args.device, decode_once="on",
                                    progress=False)
        decoded_bytes = loader.photos.nbytes  # decoded when first read: now
        decode_seconds = time.perf_counter() - started
        for _ in loader:  # warm-up
            pass
        wait()
        started, count = time.perf_counter(), 0
        for _ in range(passes):
            for x, _ in loader:
                count += len(x)
        wait()
        augment = count / (time.perf_counter() - started)
    finally:
        torch.set_num_threads(threads)
    return {"decode_per_s": len(ds) / decode_seconds, "augment_per_s": augment, "bytes": decoded_bytes,
            "device": str(device), "decode_workers": decode_workers(1, args.device)}


def single_image_latency(args, runs: int = 20) -> dict:
    """Milliseconds to classify one image on the CPU: the PyTorch checkpoint as inference.py runs it
    (BatchNorm folded, channels_last, AMP auto) and in plain fp32, and the same model exported to
    ONNX and run by OpenCV's DNN module. Medians after warm-up."""
    import statistics

    import torch

    from pyimagesearch import checkpoint, engine
    from pyimagesearch.freezing import fold_frozen_batchnorm
    from pyimagesearch.inference import deploy
    from pyimagesearch.model import build_model
    from pyimagesearch.utils.runtime import Compute, resolve_amp

    work = tempfile.mkdtemp()
    try:
        model = build_model(5, "mlp").eval()
        meta = {"head": "mlp", "class_names": [f"c{i}" for i in range(5)], "image_size": args.image_size,
                "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "epoch": 0, "metrics": {}}
        path = os.path.join(work, "model.pth")
        checkpoint.save(path, model, meta)
        deploy.export_onnx(path, os.path.join(work, "model.onnx"))
        cpu = torch.device("cpu")
        runners = {}
        for name, amp, fold, channels_last in (("pytorch_default", "auto", True, True), ("pytorch_fp32", "off", False, False)):
            loaded, _ = checkpoint.load(path)
            if fold:
                fold_frozen_batchnorm(loaded.requires_grad_(False))
            compute = Compute(cpu, resolve_amp(amp, cpu), channels_last)
            runners[name] = (compute.prepare(loaded).eval(), compute)
        runners["opencv_dnn"] = (deploy.load_onnx(os.path.join(work, "model.onnx"))[0], Compute(cpu))
        x = torch.rand(1, 3, args.image_size, args.image_size)
        result = {}
        for name, (runner, compute) in runners.items():
            times = []
            for i in range(runs + 3):
                started = time.perf_counter()
                engine.probabilities(runner, x, compute)
                if i >= 3:
                    times.append(time.perf_counter() - started)
            result[name] = statistics.median(times) * 1000
        result["amp"] = str(runners["pytorch_default"][1].amp_dtype)
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def child(args) -> None:
    """One measurement in its own process: prints a JSON line."""
    import torch

    torch.set_num_threads(args.threads or torch.get_num_threads())
    from pyimagesearch.utils import settings

    kind, forced = split_variant(args.child)
    for name, value in forced.items():  # the same run with an engine setting forced
        setattr(settings, name, value)
    import torchvision  # noqa: F401  (imported before the usage starts counting, as torch is)

    usage_before = process_usage()
    if kind == "fe-tutorial":
        result = tutorial_run("fe", args)
    elif kind == "ft-tutorial":
        result = tutorial_run("ft", args)
    elif kind == "fe-project-uncached":
        result = project_run("fe", args, ["--no-feature-cache"], args.fe_epochs)
    elif kind == "fe-project-cached":
        result = project_run("fe", args, ["--feature-cache", "--cache-views", "1"], args.fe_epochs)
    elif kind == "fe-project-views":
        result = project_run("fe", args, ["--feature-cache", "--cache-views", str(args.views)], args.fe_epochs)
    elif kind == "fe-project-decoded":
        result = project_run("fe", args, ["--no-feature-cache", "--decode-once", "on"], args.fe_epochs)
    elif kind == "ft-project":
        result = project_run("ft", args, [], args.epochs)
    elif kind == "ft-project-decoded":
        result = project_run("ft", args, ["--decode-once", "on"], args.epochs)
    elif kind == "ceiling":
        result = arithmetic_ceiling(args)
    elif kind == "decode":
        result = decode_cost(args)
    elif kind == "loader":
        result = loader_rate(args)
    elif kind == "latency":
        result = single_image_latency(args)
    else:
        raise SystemExit(f"unknown run {kind}")
    after = process_usage()
    result["usage"] = {key: after[key] - usage_before[key] for key in after}  # the run, not the imports
    print("RESULT " + json.dumps(result), flush=True)


GLIBC_DEFAULT = "+glibc-default"
# a run kind's suffixes (in any order) force these engine settings (pyimagesearch/utils/settings.py), and how the table names them
VARIANTS = {GLIBC_DEFAULT: ("KEEP_ALLOCATOR_MEMORY", False, "glibc's default allocator"),
            "+keep-memory": ("KEEP_ALLOCATOR_MEMORY", True, "allocator keeps memory"),
            "+fork-workers": ("WORKER_START_METHOD", "fork", "workers forked from the trainer"),
            "+whole-batches": ("FORWARD_CHUNK", 0, "forwards in whole batches")}


PLAIN_RUNTIME = GLIBC_DEFAULT + "+fork-workers+whole-batches"  # glibc as it comes, forked workers, whole batches


# AMD's families and models by the name users know them by (the model number tells Zen 3 from Zen 4)
AMD_CORES = {("25", "1"): "Zen 3", ("25", "17"): "Zen 4", ("25", "97"): "Zen 4", ("26", "2"): "Zen 5",
             ("26", "17"): "Zen 5"}


def cpu_name() -> str:
    """The CPU as /proc/cpuinfo names it, with its family and model numbers (a family alone covers
    CPUs with and without bf16) and whether it has native bf16."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    family, model = fields.get("cpu family", "?"), fields.get("model", "?")
    core = AMD_CORES.get((family, model)) if "AMD" in fields.get("vendor_id", "") + fields.get("model name", "") else None
    bf16 = "native bf16" if {"avx512_bf16", "amx_bf16"} & set(fields.get("flags", "").split()) else "no native bf16"
    return f"{fields.get('model name', 'unknown CPU')} ({core + ', ' if core else ''}family {family} model {model}, {bf16})"


def machine(device: str) -> str:
    """The processor the figures belong to: the GPU's name on CUDA, else the CPU's name, family,
    model and whether it has native bf16."""
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, {cpu_name()} host, torch {torch.__version__}"
    return f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}"


def write_result(result: dict, path: str) -> None:
    """A measurement as JSON at ``path`` (folders made), and on the terminal."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as handle:
        json.dump(result, handle, indent=2)
    print(json.dumps(result, indent=2))


def split_variant(kind: str) -> tuple[str, dict]:
    """'ft-project+glibc-default+fork-workers' -> ('ft-project', {setting name: value, ...})."""
    settings = {}
    while "+" in kind:
        kind, suffix = kind.rsplit("+", 1)
        if "+" + suffix not in VARIANTS:
            raise SystemExit(f"unknown variant +{suffix}; known: {', '.join(VARIANTS)}")
        name, value, _ = VARIANTS["+" + suffix]
        settings[name] = value
    return kind, settings


def variant_label(kind: str) -> str:
    return ", ".join(VARIANTS[f"+{suffix}"][2] for suffix in kind.split("+")[1:])


def process_usage() -> dict:
    """CPU, kernel time and minor page faults so far of this process and of every process it
    started: DataLoader workers, also those a fork server started (read from /proc while they
    live; once reaped by this process, from its children's usage)."""
    own, reaped = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    usage = {"user_s": own.ru_utime + reaped.ru_utime, "system_s": own.ru_stime + reaped.ru_stime,
             "minor_faults": own.ru_minflt + reaped.ru_minflt}
    for user, system, faults in _live_descendants():
        usage["user_s"] += user
        usage["system_s"] += system
        usage["minor_faults"] += faults
    return usage


def _live_descendants() -> list[tuple[float, float, int]]:
    """(user s, system s, minor faults) of each live process below this one (Linux /proc), with
    those of the children it has reaped itself: a fork server's workers that already exited."""
    stats, tick = {}, os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            # after the name: 1 ppid, 7 minflt, 8 cminflt, 11 utime, 12 stime, 13 cutime, 14 cstime
            stats[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[13])) / tick,
                                 (int(fields[12]) + int(fields[14])) / tick, int(fields[7]) + int(fields[8]))
        except (ValueError, OSError, IndexError):
            continue
    family, grown = {os.getpid()}, True
    while grown:
        below = {pid for pid, stat in stats.items() if stat[0] in family} - family
        family |= below
        grown = bool(below)
    return [stats[pid][1:] for pid in family - {os.getpid()}]


def measured_passes(passes: list[dict]):
    """Wrap ``engine.train_one_epoch`` (which the scripts import when main runs) so that each training
    pass's usage (workers included) and image count land in ``passes``: what a run costs per image
    once set-up is done. Returns the real one, for the caller to put back."""
    from pyimagesearch import engine

    real = engine.train_one_epoch

    def train_one_epoch(*args, **kwargs):
        before = process_usage()
        result = real(*args, **kwargs)
        after = process_usage()
        passes.append({**{key: after[key] - before[key] for key in after}, "images": result["count"]})
        return result

    engine.train_one_epoch = train_one_epoch
    return real


def usage_table(results: dict, args) -> None:
    """Per training image seen (images x epochs), every run that recorded its usage: the whole
    run, then its training passes alone (no set-up, caching, validation or saving), then those
    passes after the first (the steady state: workers started, memory grown)."""
    rows = [(kind, run) for kind, run in results.items() if isinstance(run, dict) and "usage" in run
            and "train_images" in run]
    if not rows:
        return
    print(f"{'run':<36} {'part':<18} {'CPU s/img':>10} {'system s/img':>13} {'system %':>9} {'minor faults/img':>17}")
    for kind, run in rows:
        epochs = args.fe_epochs if kind.startswith("fe") else args.epochs
        parts = [("whole run", run["usage"], run["train_images"] * epochs)]
        passes = run.get("passes", [])
        for label, chosen in (("training passes", passes), ("passes after 1st", passes[1:])):
            if chosen:
                parts.append((label, {key: sum(p[key] for p in chosen) for key in chosen[0]},
                              sum(p["images"] for p in chosen)))
        for label, use, images in parts:
            cpu = use["user_s"] + use["system_s"]
            print(f"{kind:<36} {label:<18} {cpu / images:10.3f} {use['system_s'] / images:13.4f} "
                  f"{use['system_s'] / max(cpu, 1e-9) * 100:8.1f}% {use['minor_faults'] / images:17.0f}")


def measure(kind: str, args, argv: list[str]) -> dict:
    print(f"[bench] {kind} ...", flush=True)
    command = [sys.executable, os.path.abspath(__file__), *argv, "--child", kind, "--dataset", args.dataset]
    completed = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
    if completed.returncode != 0 or not lines:
        raise SystemExit(f"{kind} failed:\n{completed.stdout[-2000:]}\n{completed.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT "):])


ONCE = ("ceiling", "decode", "loader", "latency")  # not timed rows: measured once, not per round


def measure_all(kinds: list[str], args, argv: list[str], measure=measure) -> dict:
    """Every timed kind ``args.repeats`` times, round robin, so that a slow spell on a shared
    machine falls on all of them alike; each keeps its median run, with all its totals beside it."""
    once = [kind for kind in kinds if kind in ONCE]
    results = {kind: measure(kind, args, argv) for kind in once}
    runs: dict[str, list[dict]] = {kind: [] for kind in kinds if kind not in once}
    for _ in range(args.repeats):
        for kind in runs:
            runs[kind].append(measure(kind, args, argv))
    for kind, done in runs.items():
        median = sorted(done, key=_total)[(len(done) - 1) // 2]
        results[kind] = {**median, "totals": [_total(run) for run in done]}
    return results


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="a folder of class folders; default: generated flowers")
    parser.add_argument("--per-class", type=int, default=40, help="generated images per class (default: %(default)s)")
    parser.add_argument("--source-size", type=int, default=320, help="generated image side (default: %(default)s)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs per style (default: %(default)s)")
    parser.add_argument("--fe-epochs", type=int, default=20,
                        help="feature-extraction epochs per style (default: %(default)s)")
    parser.add_argument("--views", type=int, default=5, help="augmented views of the multi-view cached run")
    parser.add_argument("--weights", default="none")
    parser.add_argument("--device", default=None)
    parser.add_argument("--amp", default="auto", help="precision of the ceiling's matrix multiply (default: %(default)s)")
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs of each timed kind, round robin; the median is reported (default: %(default)s)")
    parser.add_argument("--output", default=os.path.join(ROOT, "benchmarks", "results", "latest.json"))
    parser.add_argument("--only", nargs="*", help="run only these measurements")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--dataset", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.device is None:
        from pyimagesearch import config

        args.device = "cuda" if config.DEVICE == "cuda" else "cpu"
    if args.child:
        return child(args)

    import build_dataset

    work = tempfile.mkdtemp(prefix="bench-")
    try:
        source = args.data
        if not source:
            from make_images import make_flowers

            source = make_flowers(os.path.join(work, "flower_photos"), args.per_class, args.source_size, args.seed)
        args.dataset = os.path.join(work, "dataset")
        # the split is set-up, not a timed row; without the duplicate check it also runs where OpenCV lacks
        # the contrib module (an OpenCV installed without this project's requirements may)
        build_dataset.main(["--data", source, "--output", args.dataset, "--val-split", "0.2", "--no-progress",
                            "--no-find-duplicates"])
        passthrough = [*(argv if argv is not None else sys.argv[1:]), "--device", args.device]
        if args.weights == "none":
            passthrough += ["--weights", calibrated_weights(args, os.path.join(work, "calibrated-resnet50.pth"))]
        kinds = args.only or ["ceiling", "decode", "loader", "latency", "fe-tutorial", "fe-project-uncached",
                              "fe-project-uncached" + PLAIN_RUNTIME, "fe-project-cached", "fe-project-views",
                              "ft-tutorial", "ft-project", "ft-project" + PLAIN_RUNTIME]
        results = measure_all(kinds, args, passthrough)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["settings"] = {k: v for k, v in vars(args).items() if k not in ("child", "dataset")}
    results["machine"] = machine(args.device)
    print(f"[bench] on {results['machine']}")
    report(results, args)
    usage_table(results, args)
    with open(args.output, "w") as handle:
        json.dump(results, handle, indent=2)
    print(f"[bench] wrote {args.output}")


def _total(run: dict) -> float:
    """Seconds from start to finish: the tutorial's set-up and epochs; a project script's whole main()."""
    return run["total_seconds"] if "total_seconds" in run else run["setup_seconds"] + sum(e["seconds"] for e in run["epochs"])


def report(results: dict, args) -> None:
    """Every row is end to end over the same number of epochs, so work a run does once (caching
    validation features, building the model) counts against it."""
    if "decode" in results:
        d = results["decode"]
        print(f"decode+augment per image: Pillow default {d['pillow_default'] * 1000:.1f} ms, "
              f"project loader {d['project_draft'] * 1000:.1f} ms")
    rows = []
    groups = (("feature extraction", args.fe_epochs, "fe-tutorial",
               (("fe-project-uncached", "project, no cache"), ("fe-project-decoded", "project, no cache, decoded once"),
                ("fe-project-cached", "project cached (1 view)"),
                ("fe-project-views", f"project cached ({args.views} views)"))),
              ("fine-tuning", args.epochs, "ft-tutorial", (("ft-project", "project"),
                                                           ("ft-project-decoded", "project, decoded once"))))
    for what, epochs, tutorial_kind, project_kinds in groups:
        project_kinds = [(variant, f"{label}, {variant_label(variant)}" if variant != kind else label)
                         for kind, label in project_kinds for variant in results if split_variant(variant)[0] == kind]
        tutorial = results.get(tutorial_kind)
        if not tutorial:
            continue
        runs = [(tutorial, "tutorial style")] + [(results[k], label) for k, label in project_kinds if k in results]
        for run, label in runs:
            # each repeat's ratio against the tutorial run of the same round
            ratios = [t / r for t, r in zip(tutorial.get("totals", [_total(tutorial)]), run.get("totals", [_total(run)]))]
            rows.append((f"{what}, {label}, {epochs} epochs", run["train_images"] * epochs / _total(run),
                         _total(tutorial) / _total(run), run["peak_mb"], run["val_acc"],
                         f"{min(ratios):.2f}-{max(ratios):.2f}x"))
    ceiling = results.get("ceiling")
    if ceiling:
        gemm = ceiling["gemm_flops"]
        print(f"arithmetic: {ceiling['forward_flop_per_image'] / 1e9:.2f} GFLOP per image forward, "
              f"{ceiling['train_flop_per_image'] / 1e9:.2f} forward + backward; a {ceiling['dtype']} matrix "
              f"multiply runs at {gemm / 1e9:.0f} GFLOP/s here")
        # the least work any run must do: train images through the body every epoch (forward only
        # when it is frozen), validation images forward (once in all when the body is frozen)
        bounds = (("fe-tutorial", "fe-project-uncached", ceiling["forward_flop_per_image"], args.fe_epochs, 1),
                  ("ft-tutorial", "ft-project", ceiling["train_flop_per_image"], args.epochs, args.epochs))
        for tutorial_kind, project_kind, per_train_image, epochs, val_passes in bounds:
            tutorial = results.get(tutorial_kind)
            if tutorial:
                work = epochs * tutorial["train_images"] * per_train_image + val_passes * tutorial["val_images"] \
                    * ceiling["forward_flop_per_image"]
                best = work / gemm
                print(f"  {project_kind}: at that rate with no other cost, {tutorial['train_images'] * epochs / best:.2f} "
                      f"images/s end to end, {_total(tutorial) / best:.2f}x the tutorial style")
                results.setdefault("ceiling_ratio", {})[project_kind] = _total(tutorial) / best
    latency = results.get("latency")
    if latency:
        print(f"one image on the CPU: PyTorch checkpoint {latency['pytorch_default']:.1f} ms as inference.py runs it "
              f"(AMP {latency['amp']}), {latency['pytorch_fp32']:.1f} ms in plain fp32; the same model through "
              f"OpenCV DNN (ONNX) {latency['opencv_dnn']:.1f} ms, {latency['opencv_dnn'] / latency['pytorch_default']:.2f}x "
              f"the first's time and {latency['opencv_dnn'] / latency['pytorch_fp32']:.2f}x the second's")
    loader = results.get("loader")
    if loader:
        per_worker = loader["per_worker"]
        two = loader["images_per_s"].get("2", loader["images_per_s"].get(2))
        print(f"training loader (decode + augmentation, warm cache): {per_worker:.0f} images/s with 1 worker, "
              f"{two:.0f} with 2")
        if "per_worker_uint8" in loader:
            print(f"  1 worker stopping at uint8 (a GPU's loader; the GPU normalises): {loader['per_worker_uint8']:.0f} "
                  "images/s")
        once = loader.get("decoded_once")
        if once:
            where = "per core" if once["device"] == "cpu" else f"on {once['device']}"
            print(f"  decoded once ({once['bytes'] / 2**20:.0f} MiB of uint8): decoding {once['decode_per_s']:.0f} photos/s "
                  f"by {once.get('decode_workers', 1)} worker(s), once; then augmenting {once['augment_per_s']:.0f} "
                  f"photos/s {where}, in every epoch")
        for label, kind in (("fine-tuning", "ft-project"), ("feature extraction, no cache", "fe-project-uncached")):
            run = results.get(kind)
            if run:
                speed = run["train_images"] * len(run["epochs"]) / sum(e["seconds"] for e in run["epochs"])
                needed = math.ceil(speed / per_worker)
                print(f"  {label} trains at {speed:.1f} images/s here: {needed} worker(s) keep it fed "
                      f"(the loader stops being the bottleneck from {needed})")
                results.setdefault("workers_needed", {})[kind] = needed
    width = max(len(r[0]) for r in rows) if rows else 10
    print(f"{'run (end to end)':<{width}}  {'images/s':>8}  {'ratio':>6}  {'peak MiB':>8}  {'val acc':>7}  "
          f"{'ratio per round':>15}")
    for name, speed, ratio, peak, acc, spread in rows:
        print(f"{name:<{width}}  {speed:8.2f}  {ratio:5.2f}x  {peak:8.0f}  {acc:7.3f}  {spread:>15}")
    results["table"] = [dict(zip(("run", "images_per_s", "ratio", "peak_mb", "val_acc", "ratio_per_round"), r))
                        for r in rows]


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()
