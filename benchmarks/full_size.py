"""The tutorial at its own size, side by side with its loop: 3,670 generated flower photos, every core
and then two.

Usage:
    python benchmarks/full_size.py                             # on a CUDA GPU (gpu_check.py --full-size runs it)
    python benchmarks/full_size.py --device cpu --photos 60 --image-size 64 --fe-epochs 1 --ft-epochs 1 \\
        --tutorial-epochs 1 --cores all                        # a smoke run of the same steps on a CPU

The photos: 3,670 JPEGs (quality 90) in the real classes' proportions, each side 240-500 px
(make_images.make_flower_photos). Then, once with every core and once held to cores 0 and 1 with
``taskset`` (the usual notebook or cloud GPU machine), in a process of its own:

1. the whole tutorial as a user runs it, each script a process of its own, timed start to end:
   build_dataset.py, train_feature_extraction.py (20 epochs at batch 256), fine_tune.py (20 epochs at
   batch 64) and inference.py (the tutorial's random validation batch);
2. each script's epochs in photos/s, from its history (fine-tuning's include its validation pass),
   and feature extraction's epochs without the cache (--no-feature-cache, --tutorial-epochs epochs);
3. the model alone on tensors already on the device, as the limit: the frozen body's forward at
   batch 256, and fine-tuning's forward, backward and Adam step at batch 64, prepared as the
   scripts prepare them (BatchNorm folded, channels_last, autocast);
4. the input pipeline alone: the per-photo DataLoader with the scripts' workers (batches copied to
   the device), and the photos decoded once (the one-off decode, then the batches augmented there);
5. the tutorial's own loop (bench_training.tutorial_run: fp32, its loader with os.cpu_count()
   workers) for --tutorial-epochs epochs of each script, on the same split.

Writes one JSON (--output) with the machine, and prints the photos/s and the shares of the limits.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT, HERE]


def script(name: str, *argv: str, timeout_s: float = 600) -> float:
    """Run one of the project's scripts as a user does; its wall time in seconds (raises if it fails)."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, os.path.join(ROOT, name), *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout_s)
    if done.returncode != 0:
        raise RuntimeError(f"{name} exited {done.returncode}: {(done.stdout + done.stderr)[-2000:]}")
    return time.perf_counter() - started


def epochs_rate(history_path: str) -> float:
    with open(history_path) as handle:
        history = json.load(handle)
    return sum(r["train_count"] for r in history) / sum(r["seconds"] for r in history)


def whole_tutorial(args, photos: str, work: str) -> dict:
    """The four scripts in order, as processes: seconds each and in all, and the epochs' photos/s."""
    dataset, out = os.path.join(work, "dataset"), os.path.join(work, "output")
    common = ["--weights", args.weights, "--device", args.device, "--image-size", str(args.image_size), "--no-progress",
              "--train", os.path.join(dataset, "train"), "--val", os.path.join(dataset, "val")]
    build = ["build_dataset.py", "--data", photos, "--output", dataset, "--no-progress"]
    duplicates = "checked"
    try:
        seconds = {"build_dataset": script(*build)}
    except RuntimeError as error:  # an OpenCV without its contrib module (a GPU image's own) cannot hash
        if "contrib module" not in str(error):
            raise
        seconds, duplicates = {"build_dataset": script(*build, "--no-find-duplicates")}, "not checked: no OpenCV contrib"
    seconds["feature_extraction"] = script("train_feature_extraction.py", *common, "--epochs", str(args.fe_epochs),
                                           "--plot", f"{out}/warmup.png", "--model", f"{out}/warmup_model.pth")
    seconds["fine_tuning"] = script("fine_tune.py", *common, "--epochs", str(args.ft_epochs),
                                    "--plot", f"{out}/finetune.png", "--model", f"{out}/finetune_model.pth")
    seconds["inference"] = script("inference.py", "--model", f"{out}/finetune_model.pth", "--val",
                                  os.path.join(dataset, "val"), "--device", args.device, "--output", out)
    seconds["whole"] = sum(seconds.values())
    uncached = os.path.join(work, "uncached")
    script("train_feature_extraction.py", *common, "--epochs", str(args.tutorial_epochs), "--no-feature-cache",
           "--no-report", "--plot", f"{uncached}/warmup.png", "--model", f"{uncached}/warmup_model.pth")
    return {"seconds": seconds, "dataset": dataset, "duplicates": duplicates,
            "epochs_photos_per_s": {"feature_extraction_cached": epochs_rate(f"{out}/warmup_history.json"),
                                    "feature_extraction_uncached": epochs_rate(f"{uncached}/warmup_history.json"),
                                    "fine_tuning": epochs_rate(f"{out}/finetune_history.json")}}


def timed(step, device, repeats: int, warmup: int = 2) -> float:
    """Seconds per call of ``step`` after ``warmup`` calls, the device's queue drained around them."""
    import torch

    def wait():
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(warmup):
        step()
    wait()
    started = time.perf_counter()
    for _ in range(repeats):
        step()
    wait()
    return (time.perf_counter() - started) / repeats


def model_alone(args) -> dict:
    """Photos/s of the model on random tensors already on the device, prepared as the scripts prepare it."""
    import torch
    from torch import nn

    from pyimagesearch.freezing import fold_frozen_batchnorm, freeze_batchnorm, freeze_body
    from pyimagesearch.model import Body, build_model
    from pyimagesearch.utils.runtime import Compute

    device = torch.device(args.device)
    compute = Compute.from_settings(device, "auto", True, 0)
    frozen = build_model(5, "linear")
    freeze_body(frozen)
    frozen = compute.prepare(frozen)
    fold_frozen_batchnorm(frozen)
    body, size = Body(frozen).eval(), args.image_size
    x = compute.to_device(torch.randn(256, 3, size, size))
    with torch.inference_mode():
        forward = timed(lambda: compute.infer(body, x), device, args.repeats)
    tuned = build_model(5, "mlp")
    freeze_batchnorm(tuned)
    tuned = compute.prepare(tuned)
    fold_frozen_batchnorm(tuned)
    optimizer = torch.optim.Adam([p for p in tuned.parameters() if p.requires_grad], lr=1e-4)
    x, y = compute.to_device(torch.randn(64, 3, size, size)), torch.randint(0, 5, (64,), device=device)

    def train_step():
        with compute.autocast():
            loss = nn.functional.cross_entropy(tuned(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step = timed(train_step, device, args.repeats)
    return {"forward_photos_per_s": 256 / forward, "train_photos_per_s": 64 / step, "precision": compute.describe()}


def input_pipeline(args, dataset: str) -> dict:
    """Photos/s of the training input alone: per photo in the DataLoader's workers, and decoded once."""
    import torch

    from pyimagesearch.create_dataloaders import get_dataloader, train_transforms
    from pyimagesearch.utils.runtime import resolve_workers

    device = torch.device(args.device)
    workers = resolve_workers("auto", device)
    rates = {"workers": workers}
    for mode in ("off", "on"):
        started = time.perf_counter()
        _, loader = get_dataloader(os.path.join(dataset, "train"), train_transforms(args.image_size), 64, True,
                                   num_workers=workers, device=args.device, decode_once=mode, progress=False)
        if mode == "on":
            rates["decoded_bytes"] = loader.photos.nbytes  # decoded when first read: now
            rates["decode_once_seconds"] = time.perf_counter() - started

        def one_pass(loader=loader):
            for x, _ in loader:
                x.to(device, non_blocking=True)

        rates["per_photo" if mode == "off" else "decoded_once"] = len(loader.dataset) / timed(one_pass, device, 1, warmup=1)
        del loader
    return rates


def tutorial_loop(args, dataset: str) -> dict:
    """bench_training's tutorial style, --tutorial-epochs epochs of each script: photos/s of its training passes."""
    from bench_training import tutorial_run

    rates = {}
    for mode, batch in (("fe", 256), ("ft", 64)):
        ns = argparse.Namespace(seed=0, image_size=args.image_size, dataset=dataset, device=args.device,
                                batch_size=batch, num_workers=os.cpu_count(), weights=args.weights,
                                fe_epochs=args.tutorial_epochs, epochs=args.tutorial_epochs)
        run = tutorial_run(mode, ns)
        rates[mode] = {"train_photos_per_s": run["train_images"] * len(run["epochs"])
                       / sum(e["train_seconds"] for e in run["epochs"]),
                       "epoch_seconds": [round(e["seconds"], 2) for e in run["epochs"]]}
    return rates


def child(args) -> None:
    """One CPU set-up, in the process taskset started: prints its results as one JSON line."""
    work = tempfile.mkdtemp(prefix="full-size-")
    result = {"cores": len(os.sched_getaffinity(0))}
    result["tutorial"] = whole_tutorial(args, args.photos_dir, work)
    dataset = result["tutorial"]["dataset"]
    result["model_alone"] = model_alone(args)
    result["input_pipeline"] = input_pipeline(args, dataset)
    result["tutorial_loop"] = tutorial_loop(args, dataset)
    print("RESULT " + json.dumps(result), flush=True)


def summary(result: dict) -> dict:
    """The shares of the model-alone limits that the epochs reach."""
    rates, limits, inputs = result["tutorial"]["epochs_photos_per_s"], result["model_alone"], result["input_pipeline"]
    return {"fine_tuning_share": rates["fine_tuning"] / limits["train_photos_per_s"],
            "feature_extraction_uncached_share": rates["feature_extraction_uncached"] / limits["forward_photos_per_s"],
            "whole_tutorial_seconds": result["tutorial"]["seconds"]["whole"],
            "script_seconds": result["tutorial"]["seconds"],
            # the input alone over the model alone: below 1, the input sets the pace
            "per_photo_input_over_training_limit": inputs["per_photo"] / limits["train_photos_per_s"],
            "decoded_once_input_over_training_limit": inputs["decoded_once"] / limits["train_photos_per_s"],
            "tutorial_loop_photos_per_s": {mode: run["train_photos_per_s"] for mode, run in result["tutorial_loop"].items()}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default=os.path.join(HERE, "results", "full_size.json"))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--weights", default="none")
    parser.add_argument("--photos", type=int, default=3670)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--fe-epochs", type=int, default=20)
    parser.add_argument("--ft-epochs", type=int, default=20)
    parser.add_argument("--tutorial-epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10, help="timed calls of the model alone")
    parser.add_argument("--cores", nargs="+", default=["all", "2"], help="all, and/or 2 (taskset -c 0,1)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--photos-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return 0
    from bench_training import machine
    from make_images import make_flower_photos

    report = {"machine": machine(args.device), "settings": vars(args)}
    with tempfile.TemporaryDirectory(prefix="full-size-photos-") as work:
        started = time.perf_counter()
        photos = make_flower_photos(os.path.join(work, "flower_photos"), args.photos)
        report["generation_seconds"] = time.perf_counter() - started
        for cores in args.cores:
            taskset = ["taskset", "-c", "0,1"] if cores == "2" else []
            settings = [f"--{name.replace('_', '-')}={getattr(args, name)}" for name in
                        ("device", "weights", "image_size", "fe_epochs", "ft_epochs", "tutorial_epochs", "repeats")]
            command = [*taskset, sys.executable, __file__, *settings, "--child", "--photos-dir", photos]
            print(f"[full-size] {cores} core(s): {' '.join(command)}", flush=True)
            done = subprocess.run(command, capture_output=True, text=True)
            lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
            if done.returncode != 0 or not lines:
                report[f"cores_{cores}"] = {"error": (done.stdout + done.stderr)[-4000:]}
            else:
                result = json.loads(lines[-1][len("RESULT "):])
                report[f"cores_{cores}"] = {**result, "summary": summary(result)}
            print(json.dumps(report[f"cores_{cores}"].get("summary", report[f"cores_{cores}"]), indent=1), flush=True)
            os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
            with open(args.output, "w") as handle:
                json.dump(report, handle, indent=2)
    print(f"[full-size] wrote {args.output}")
    return 0 if all("error" not in report.get(f"cores_{c}", {}) for c in args.cores) else 1


if __name__ == "__main__":
    raise SystemExit(main())
