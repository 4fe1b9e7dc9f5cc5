"""How the C allocator's choices change the cost of ResNet50 batches: kernel time and page faults.

Usage:
    python benchmarks/bench_allocator.py                      # 3 forward batches of 32 at 224 px
    python benchmarks/bench_allocator.py --batch-size 64 --batches 3 --train

Each variant runs the same work in a fresh process, side by side in one run:

- ``glibc default``: glibc as it comes (large blocks mmapped, unmapped on free);
- ``mallopt`` (this project's default, pyimagesearch/utils/memory.py): M_MMAP_MAX 0 and no trimming,
  set at run time through ctypes;
- ``GLIBC_TUNABLES``: the same through glibc's tunables, which must be in the environment when
  the process starts (a script would re-execute itself to set them);
- ``jemalloc`` / ``tcmalloc``: another allocator through LD_PRELOAD, when its library is
  installed (Debian: libjemalloc2, libtcmalloc-minimal4).

Printed per image: CPU (user) seconds, system seconds and its share of the CPU time, minor page
faults, wall seconds, and the process's peak resident memory.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TUNABLES = "glibc.malloc.mmap_threshold=2147483648:glibc.malloc.trim_threshold=4294967296"
PRELOADS = {"jemalloc": "libjemalloc.so.2", "tcmalloc": "libtcmalloc_minimal.so.4"}


def work(args) -> dict:
    """The measured process: ResNet50 batches at --image-size, forward (or forward + backward)."""
    sys.path.insert(0, ROOT)
    if args.mallopt:
        from pyimagesearch.utils.memory import keep_allocator_memory

        assert keep_allocator_memory(), "mallopt had no effect here"
    import torch
    from torchvision.models import resnet50

    torch.manual_seed(0)
    model = resnet50().to(memory_format=torch.channels_last)
    model.train(args.train)
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size).to(memory_format=torch.channels_last)
    before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(args.batches):
        if args.train:
            model(x).sum().backward()
        else:
            with torch.inference_mode():
                model(x)
    after, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - started
    images = args.batch_size * args.batches
    user, system = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
    return {"user_s": user / images, "system_s": system / images, "system_share": system / max(user + system, 1e-9),
            "minor_faults": (after.ru_minflt - before.ru_minflt) / images, "wall_s": wall / images,
            "peak_mib": after.ru_maxrss / 1024}


def find_library(name: str) -> str | None:
    for folder in ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib", "/usr/local/lib"):
        found = glob.glob(os.path.join(folder, name))
        if found:
            return found[0]
    return None


def variants() -> dict[str, tuple[dict[str, str], list[str]]]:
    """name: (environment additions, extra flags)."""
    found = {"glibc default": ({}, []), "mallopt": ({}, ["--mallopt"]),
             "GLIBC_TUNABLES": ({"GLIBC_TUNABLES": TUNABLES}, [])}
    for name, library in PRELOADS.items():
        path = find_library(library)
        if path:
            found[name] = ({"LD_PRELOAD": path}, [])
    return found


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--train", action="store_true", help="forward and backward, BatchNorm in training mode")
    parser.add_argument("--rounds", type=int, default=1, help="each variant this many times, round robin")
    parser.add_argument("--output", default=os.path.join(ROOT, "benchmarks", "results", "allocator.json"))
    parser.add_argument("--mallopt", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print("RESULT " + json.dumps(work(args)), flush=True)
        return
    flags = ["--batch-size", str(args.batch_size), "--batches", str(args.batches), "--image-size", str(args.image_size)]
    flags += ["--train"] if args.train else []
    results: dict[str, list[dict]] = {}
    for _ in range(args.rounds):
        for name, (env, extra) in variants().items():
            print(f"[bench] {name} ...", flush=True)
            done = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", *flags, *extra],
                                  capture_output=True, text=True, env={**os.environ, **env})
            lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
            if done.returncode or not lines:
                raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
            results.setdefault(name, []).append(json.loads(lines[-1][7:]))
    cpu = platform.processor() or platform.machine()
    with open("/proc/cpuinfo") as handle:
        cpu = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), cpu)
    print(f"\n{cpu}, {os.cpu_count()} cores; {'forward+backward' if args.train else 'forward'} of "
          f"{args.batches} x {args.batch_size} images at {args.image_size} px; per image, median of {args.rounds}")
    print(f"{'allocator':<16} {'user s':>8} {'system s':>9} {'system %':>9} {'minor faults':>13} {'wall s':>8} "
          f"{'peak MiB':>9}")
    table = {}
    for name, runs in results.items():
        run = sorted(runs, key=lambda r: r["wall_s"])[(len(runs) - 1) // 2]
        table[name] = run
        print(f"{name:<16} {run['user_s']:8.3f} {run['system_s']:9.4f} {run['system_share'] * 100:8.1f}% "
              f"{run['minor_faults']:13.0f} {run['wall_s']:8.3f} {run['peak_mib']:9.0f}")
    with open(args.output, "w") as handle:
        json.dump({"cpu": cpu, "settings": vars(args), "results": table, "runs": results}, handle, indent=2)
    print(f"[bench] wrote {args.output}")


if __name__ == "__main__":
    main()
