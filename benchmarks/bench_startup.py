"""How long a script takes to answer --help or a mistyped flag, against `import torch` alone.

Usage:
    python benchmarks/bench_startup.py
    python benchmarks/bench_startup.py --rounds 9 --output /tmp/startup.json

Every command runs once per round, the rounds alternate the commands (so a busier moment of the
machine falls on all of them), and the median of each is reported with its excess over
`python -c "import torch"`, the floor: config.py imports torch, as the tutorial's does.
`python -X importtime SCRIPT --help` shows what the rest of a start loads.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ("build_dataset.py", "train_feature_extraction.py", "fine_tune.py", "inference.py")


def commands() -> dict[str, list[str]]:
    found = {"import torch": [sys.executable, "-c", "import torch"]}
    for script in SCRIPTS:
        found[f"{script} --help"] = [sys.executable, script, "--help"]
        found[f"{script} --epcohs 3"] = [sys.executable, script, "--epcohs", "3"]  # a mistyped flag: exit 2
    return found


def seconds(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--output", default=os.path.join(ROOT, "benchmarks", "results", "startup.json"))
    args = parser.parse_args(argv)

    from bench_training import machine, write_result

    runs = commands()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, command in runs.items():
            times[name].append(seconds(command))
    floor = statistics.median(times["import torch"])
    rows = {name: {"median_s": round(statistics.median(t), 3), "over_import_torch_s": round(statistics.median(t) - floor, 3),
                   "runs_s": [round(x, 3) for x in t]} for name, t in times.items()}
    write_result({"machine": machine("cpu"), "rounds": args.rounds, "commands": rows}, args.output)


if __name__ == "__main__":
    main()
