"""pyimagesearch/memory.py: glibc keeps freed large blocks, so a batch reuses the pages of the last."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import ROOT
from pyimagesearch import memory

CHURN = """
import ctypes, json, resource, sys
sys.path.insert(0, {root!r})
from pyimagesearch.memory import glibc, keep_allocator_memory
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


def _churn(keep: bool) -> dict:
    done = subprocess.run([sys.executable, "-c", CHURN.format(root=ROOT, keep=keep)], capture_output=True, text=True,
                          timeout=120, check=True)
    return json.loads(done.stdout)


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
    import train_feature_extraction
    from conftest import train_args
    from pyimagesearch import config, training

    calls = []

    class Seen(Exception):
        pass

    def record(setting, backward, workers_fork):
        calls.append((setting, backward, workers_fork))
        raise Seen  # what the script asked for is all this test needs: no training

    monkeypatch.setattr(training, "keep_allocator_memory", record)
    monkeypatch.setattr(config, "KEEP_ALLOCATOR_MEMORY", "auto")
    for script, name in ((train_feature_extraction, "warmup"), (fine_tune, "finetune")):
        with pytest.raises(Seen):
            script.main(train_args(tmp_path, splits, name, "--epochs", "1", "--no-report"))
    # workers forked from the trainer, or started by a fork server, or none at all
    for method in ("fork", "forkserver"):
        monkeypatch.setattr(config, "WORKER_START_METHOD", method)
        with pytest.raises(Seen):
            fine_tune.main(train_args(tmp_path, splits, "finetune", "--epochs", "1", "--no-report", "--num-workers", "1"))
    assert calls == [("auto", False, False), ("auto", True, False), ("auto", True, True), ("auto", True, False)]


@pytest.mark.parametrize("setting,device_type,expected", [
    ("auto", "cpu", memory.CPU_FORWARD_CHUNK), ("auto", "cuda", 0), ("auto", "mps", 0), (0, "cpu", 0), (7, "cuda", 7)])
def test_forward_chunk_auto_splits_batches_on_the_cpu_only(setting, device_type, expected):
    assert memory.forward_chunk(setting, device_type) == expected


@pytest.mark.parametrize("setting", [-1, "16", True, 2.5, None])
def test_a_bad_forward_chunk_names_the_setting_and_the_file(setting):
    from pyimagesearch.errors import UserError

    with pytest.raises(UserError, match=r"FORWARD_CHUNK .*pyimagesearch/config\.py"):
        memory.forward_chunk(setting, "cpu")


def test_training_and_inference_run_with_the_configured_forward_chunk(tmp_path, trained, monkeypatch):
    import inference
    import train_feature_extraction
    from conftest import train_args
    from pyimagesearch import config
    from pyimagesearch.runtime import Compute

    base, model_path = trained
    monkeypatch.setattr(config, "FORWARD_CHUNK", 2)
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
