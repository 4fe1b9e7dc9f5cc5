"""The prepared check for a machine with a CUDA GPU: one command, one JSON file, sized for 8 minutes.

Usage:
    make gpu-check                                  # python benchmarks/gpu_check.py, in the project's .venv
    python benchmarks/gpu_check.py --small          # the quick steps instead of the tutorial's size
    PYTHONPATH=.gpu-deps python3 benchmarks/gpu_check.py --output gpu_check.json   # PyTorch installed, no .venv

It runs, each step timed and recorded even when another fails:
  1. the machine: GPU name, compute capability, memory, driver, torch and CUDA versions, host CPU;
  2. the GPU tests (tests/test_gpu.py): bf16 and fp16 autocast, channels_last, the feature cache,
     photos decoded once on the GPU;
  3. the tutorial at its own size (benchmarks/full_size.py): 3,670 generated flower photos through
     build_dataset.py and the four scripts, the model alone and the input alone, and the tutorial's
     own loop, with every core and with two (taskset).
With --small, instead of 3:
  3. feature extraction and fine-tuning, 2 epochs each on generated photos at 224 px, with images/s
     and peak GPU memory;
  4. fine-tuning under torchrun with 1 process, and with 2 where there are two GPUs;
  5. the benchmark's rows on the GPU: the tutorial's loop against the project, the same data;
  6. inference: latency at batch 1 and throughput at batch 256.

Without CUDA it says so in one line and exits 0. docs/speed.md says how to run it on a GPU machine
without this project's .venv.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def machine() -> dict:
    """The GPU, its driver, torch and CUDA, and the host CPU by name, family and model."""
    import torch
    from bench_training import cpu_name

    props = torch.cuda.get_device_properties(0)
    try:
        driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=30).stdout.strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        driver = "unknown"
    return {"gpu": props.name, "capability": list(torch.cuda.get_device_capability(0)), "count": torch.cuda.device_count(),
            "memory_gib": round(props.total_memory / 2**30, 1), "driver": driver, "torch": torch.__version__,
            "cuda": torch.version.cuda, "cpu": cpu_name(), "cpu_cores": os.cpu_count()}


def run_command(command: list[str], timeout_s: float, cwd: str = ROOT) -> dict:
    """A subprocess with a time limit; its exit code and the end of its output. It runs in a session of
    its own, and at the limit the whole session is killed: its children too, which would go on using
    the GPU."""
    started = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))}
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    try:
        output, _ = process.communicate(timeout=timeout_s)
        code = process.returncode
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        code = "timeout"
    return {"command": " ".join(command), "exit_code": code, "seconds": round(time.perf_counter() - started, 1),
            "output_tail": (output or "")[-3000:]}


def make_dataset(root: str, per_class: int, size: int) -> str:
    """dataset/{train,val} of generated flowers, without build_dataset.py (an OpenCV installed
    without this project's requirements may lack the contrib module its duplicate check uses)."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    from make_images import DISTINCT_CLASSES, make_flowers

    base = os.path.join(root, "dataset")
    make_flowers(os.path.join(base, "train"), per_class, size, 0, DISTINCT_CLASSES)
    make_flowers(os.path.join(base, "val"), max(2, per_class // 4), size, 1, DISTINCT_CLASSES)
    return base


def training_runs(base: str, out: str, image_size: int, device: str) -> dict:
    """Both training scripts in this process, 2 epochs each: images/s over the epochs, peak GPU memory."""
    import torch

    import fine_tune
    import train_feature_extraction

    results = {}
    for name, script, extra in (("feature_extraction", train_feature_extraction, ["--no-feature-cache"]),
                                ("feature_extraction_cached", train_feature_extraction, []),
                                ("fine_tuning", fine_tune, [])):
        stem = "warmup" if script is train_feature_extraction else "finetune"
        torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        script.main(["--train", os.path.join(base, "train"), "--val", os.path.join(base, "val"), "--weights", "none",
                     "--image-size", str(image_size), "--epochs", "2", "--device", device, "--no-progress",
                     "--plot", os.path.join(out, name, f"{stem}.png"),
                     "--model", os.path.join(out, name, f"{stem}_model.pth"), *extra])
        seconds = time.perf_counter() - started
        history = json.load(open(os.path.join(out, name, f"{stem}_history.json")))
        images = sum(r["train_count"] for r in history)
        results[name] = {"whole_run_s": round(seconds, 2), "epochs_s": [round(r["seconds"], 2) for r in history],
                         "train_images_per_s_epochs": round(images / sum(r["seconds"] for r in history), 1),
                         "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20),
                         "val_acc": history[-1]["val_acc"]}
    return results


def inference_speed(model_path: str, device: str, image_size: int) -> dict:
    """Latency at batch 1 and throughput at batch 256, as inference.py runs the model (folded, channels_last,
    autocast), timed with CUDA events after warm-up."""
    import torch

    from pyimagesearch import checkpoint
    from pyimagesearch.freezing import fold_frozen_batchnorm
    from pyimagesearch.utils import settings
    from pyimagesearch.utils.runtime import Compute

    model, _ = checkpoint.load(model_path)
    model.requires_grad_(False)
    fold_frozen_batchnorm(model)
    compute = Compute.from_settings(torch.device(device), "auto", True, settings.FORWARD_CHUNK)
    model = compute.prepare(model).eval()
    results = {"amp": str(compute.amp_dtype)}
    for batch, repeats in ((1, 50), (256, 10)):
        x = torch.randn(batch, 3, image_size, image_size)
        with torch.inference_mode():
            for _ in range(5):
                compute.infer(model, x)
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(repeats):
                compute.infer(model, x)
            end.record()
            torch.cuda.synchronize()
        ms = start.elapsed_time(end) / repeats
        results[f"batch_{batch}"] = {"ms_per_batch": round(ms, 3), "images_per_s": round(batch * 1000 / ms, 1)}
    return results


def _failed_commands(result: object) -> bool:
    """Whether a step's result holds a command that did not exit 0 (a failed test, a timeout)."""
    if isinstance(result, dict):
        return ("exit_code" in result and result["exit_code"] != 0) or any(map(_failed_commands, result.values()))
    return False


def step(report: dict, name: str, work: Callable[[], object], output: str) -> None:
    """Run one step, record its result (or its error) and time; never let one step end the check. The JSON
    is rewritten after every step, so a check cut off by the machine's time limit keeps what it measured."""
    started = time.perf_counter()
    print(f"[gpu-check] {name} ...", flush=True)
    try:
        result = work()
        report[name] = {"result": result, "ok": not _failed_commands(result)}
    except Exception as error:  # recorded, so that the other steps still run and the JSON still says it
        report[name] = {"ok": False, "error": f"{type(error).__name__}: {error}",
                        "traceback": traceback.format_exc()[-3000:]}
    report[name]["seconds"] = round(time.perf_counter() - started, 1)
    print(f"[gpu-check] {name}: {'ok' if report[name]['ok'] else 'FAILED'} in {report[name]['seconds']} s", flush=True)
    write_report(report, output)


def write_report(report: dict, output: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with open(output, "w") as handle:
        json.dump(report, handle, indent=2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default=os.path.join(ROOT, "benchmarks", "results", "gpu_check.json"))
    parser.add_argument("--per-class", type=int, default=80, help="generated training photos per class")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--skip", nargs="*", default=[], help="steps to leave out: tests, torchrun, bench")
    parser.add_argument("--small", action="store_true",
                        help="the quick steps (2 epochs on --per-class photos) instead of the tutorial's size")
    parser.add_argument("--full-size-timeout", type=int, default=420, help="seconds for the full-size step")
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("[gpu-check] no CUDA GPU on this machine: nothing to check (exit 0)")
        return 0
    report: dict = {"machine": machine(), "settings": vars(args)}
    python = sys.executable
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as work:
        base = make_dataset(work, args.per_class, 320)
        if "tests" not in args.skip:
            step(report, "tests", lambda: run_command([python, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                                       "tests/test_gpu.py"], timeout_s=240), args.output)
        if not args.small:
            full_size_output = os.path.join(work, "full_size.json")

            def full_size() -> dict:
                run = run_command([python, "benchmarks/full_size.py", "--output", full_size_output],
                                  timeout_s=args.full_size_timeout)
                return {**run, "result": json.load(open(full_size_output)) if os.path.exists(full_size_output) else None}
            step(report, "full_size", full_size, args.output)
            write_report(report, args.output)
            return 1 if not report["full_size"]["ok"] or not report.get("tests", {}).get("ok", True) else 0
        step(report, "training", lambda: training_runs(base, os.path.join(work, "out"), args.image_size, "cuda"), args.output)
        checkpoint = os.path.join(work, "out", "fine_tuning", "finetune_model.pth")
        if "torchrun" not in args.skip:
            def torchrun() -> dict:
                runs = {}
                for processes in sorted({1, min(2, torch.cuda.device_count())}):
                    out = os.path.join(work, f"torchrun{processes}")
                    runs[f"nproc_{processes}"] = run_command(
                        [python, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
                         "fine_tune.py", "--train", os.path.join(base, "train"), "--val", os.path.join(base, "val"),
                         "--weights", "none", "--epochs", "1", "--device", "cuda", "--no-progress",
                         "--plot", os.path.join(out, "finetune.png"), "--model", os.path.join(out, "finetune_model.pth")],
                        timeout_s=180)
                return runs
            step(report, "torchrun", torchrun, args.output)
        if "bench" not in args.skip:
            bench_out = os.path.join(work, "bench.json")
            step(report, "bench", lambda: {**run_command(
                [python, "benchmarks/bench_training.py", "--device", "cuda", "--per-class", str(args.per_class),
                 "--epochs", "2", "--fe-epochs", "2", "--output", bench_out,
                 "--only", "ceiling", "fe-tutorial", "fe-project-uncached", "fe-project-cached", "ft-tutorial",
                 "ft-project"], timeout_s=300),
                "table": json.load(open(bench_out)).get("table") if os.path.exists(bench_out) else None}, args.output)
        step(report, "inference", lambda: inference_speed(checkpoint, "cuda", args.image_size), args.output)
    write_report(report, args.output)
    failed = [name for name, value in report.items() if isinstance(value, dict) and value.get("ok") is False]
    print(f"[gpu-check] wrote {args.output}" + (f"; failed: {', '.join(failed)}" if failed else "; every step ran"))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
