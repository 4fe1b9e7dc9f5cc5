"""benchmarks/bench_training.py: its arithmetic, rounds and process accounting (no timing is asserted)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time

import bench_training
import pytest
from torchvision.models import ResNet50_Weights


@pytest.mark.resnet50
def test_ceiling_counts_resnet50s_published_cost():
    ceiling = bench_training.arithmetic_ceiling(argparse.Namespace(device="cpu", image_size=224, amp="off"), gemm_size=1024)
    # torchvision's "_ops" (GFLOPS) are multiply-adds of the whole network; the body stops short
    # of the 1000-way classifier, 2048 x 1000 multiply-adds
    published = ResNet50_Weights.IMAGENET1K_V1.meta["_ops"] * 1e9 - 2048 * 1000
    assert ceiling["forward_flop_per_image"] / 2 == pytest.approx(published, rel=1e-3)
    # backward: a gradient for every weight and every activation except the input image's
    assert 2.9 < ceiling["train_flop_per_image"] / ceiling["forward_flop_per_image"] < 3.0
    assert ceiling["gemm_flops"] > 1e9 and ceiling["dtype"] == "torch.float32"


def test_repeats_run_round_robin_and_report_the_median_run():
    order = []
    times = {"ft-tutorial": iter([30.0, 90.0, 60.0]), "ft-project": iter([20.0, 10.0, 40.0])}

    def fake_measure(kind, args, argv):
        order.append(kind)
        if kind == "ceiling":
            return {"gemm_flops": 1e11}
        return {"total_seconds": next(times[kind]), "run": len(order)}

    results = bench_training.measure_all(["ceiling", "ft-tutorial", "ft-project"], argparse.Namespace(repeats=3), [],
                                         measure=fake_measure)
    assert order == ["ceiling"] + ["ft-tutorial", "ft-project"] * 3
    assert results["ft-tutorial"]["total_seconds"] == 60.0 and results["ft-tutorial"]["totals"] == [30.0, 90.0, 60.0]
    assert results["ft-project"]["total_seconds"] == 20.0 and results["ft-project"]["run"] == 3  # its first round
    assert results["ceiling"] == {"gemm_flops": 1e11}


def test_latency_row_times_the_checkpoint_and_its_opencv_export(capsys):
    latency = bench_training.single_image_latency(argparse.Namespace(image_size=32), runs=2)
    assert {"pytorch_default", "pytorch_fp32", "opencv_dnn"} <= set(latency)
    assert all(latency[k] > 0 for k in ("pytorch_default", "pytorch_fp32", "opencv_dnn"))
    bench_training.report({"latency": latency}, argparse.Namespace(fe_epochs=1, epochs=1, views=1))
    assert "OpenCV DNN (ONNX)" in capsys.readouterr().out


def test_loader_sizing_names_the_workers_that_keep_training_fed(capsys):
    results = {"loader": {"images_per_s": {"1": 400.0, "2": 780.0}, "per_worker": 400.0},
               "ft-project": {"train_images": 1000, "epochs": [{"seconds": 0.4}, {"seconds": 0.4}], "peak_mb": 1,
                              "val_acc": 0.5, "total_seconds": 1.0}}
    bench_training.report(results, argparse.Namespace(fe_epochs=1, epochs=2, views=1))
    # 2,000 images in 0.8 s = 2,500 images/s; 400 per worker: 7 workers
    assert "2500.0 images/s here: 7 worker(s)" in capsys.readouterr().out
    assert results["workers_needed"]["ft-project"] == 7


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")
@pytest.mark.parametrize("grandchild_exits", [False, True])
def test_usage_counts_the_workers_of_a_child_process(tmp_path, grandchild_exits):
    """A fork server's DataLoader workers are this process's grandchildren, never reaped by it:
    their CPU time must count while they live, and after they exited and the server reaped them."""
    ready = tmp_path / "ready"
    work = "sum(i * i for i in range(5_000_000))"
    if grandchild_exits:
        grandchild = work
        middle = (f"import subprocess, sys, time; subprocess.run([sys.executable, '-c', {grandchild!r}]); "
                  f"open({str(ready)!r}, 'w').close(); time.sleep(600)")
    else:
        grandchild = f"{work}; open({str(ready)!r}, 'w').close(); import time; time.sleep(600)"
        middle = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {grandchild!r}])"
    before = bench_training.process_usage()
    child = subprocess.Popen([sys.executable, "-c", middle], start_new_session=True)
    try:
        for _ in range(6000):  # until the grandchild has done its work (a safety net, not a deadline)
            if ready.exists():
                break
            time.sleep(0.05)
        after = bench_training.process_usage()
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    assert ready.exists()
    assert after["user_s"] + after["system_s"] - before["user_s"] - before["system_s"] > 0.15  # 5 M squares
    assert after["minor_faults"] > before["minor_faults"]


def test_usage_table_shows_the_training_passes_apart_from_the_whole_run(capsys):
    use = {"user_s": 90.0, "system_s": 10.0, "minor_faults": 5000}
    passes = [{"user_s": 30.0, "system_s": 6.0, "minor_faults": 3000, "images": 10},
              {"user_s": 19.0, "system_s": 1.0, "minor_faults": 100, "images": 10}]
    bench_training.usage_table({"ft-project": {"usage": use, "train_images": 10, "passes": passes}},
                               argparse.Namespace(fe_epochs=1, epochs=2))
    lines = {line.split()[1] + " " + line.split()[2]: line.split()[3:] for line in capsys.readouterr().out.splitlines()[1:]}
    assert lines["whole run"] == ["5.000", "0.5000", "10.0%", "250"]  # 100 s, 20 images
    assert lines["training passes"] == ["2.800", "0.3500", "12.5%", "155"]
    assert lines["passes after"] == ["1st", "2.000", "0.1000", "5.0%", "10"]


def test_the_gpu_check_says_in_one_line_that_there_is_no_gpu(tmp_path, capsys, monkeypatch):
    import gpu_check
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--output", str(tmp_path / "gpu.json")]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "no CUDA GPU" in out and not (tmp_path / "gpu.json").exists()


def test_a_gpu_check_step_that_fails_is_recorded_and_the_others_still_run(tmp_path, capsys):
    import gpu_check

    report, output = {}, str(tmp_path / "gpu.json")
    gpu_check.step(report, "broken", lambda: 1 / 0, output)
    assert set(json.load(open(output))) == {"broken"}  # kept on disk before the next step starts
    gpu_check.step(report, "failing command", lambda: {"nproc_1": {"exit_code": 1}}, output)
    gpu_check.step(report, "fine", lambda: {"exit_code": 0, "value": 3}, output)
    assert json.load(open(output))["fine"]["result"]["value"] == 3
    assert report["broken"]["ok"] is False and "ZeroDivisionError" in report["broken"]["error"]
    assert report["failing command"]["ok"] is False and report["fine"]["ok"] is True
    assert report["fine"]["result"]["value"] == 3


def test_a_project_row_times_the_script_and_counts_each_training_pass(small_dataset):
    args = argparse.Namespace(dataset=small_dataset, weights="none", image_size=32, batch_size=4, num_workers=0,
                              device="cpu", seed=0)
    run = bench_training.project_run("fe", args, ["--feature-cache"], 2)
    assert [p["images"] for p in run["passes"]] == [run["train_images"]] * 2 == [21, 21]
    assert len(run["epochs"]) == 2 and run["total_seconds"] > sum(e["seconds"] for e in run["epochs"])


def test_a_gpu_check_step_past_its_limit_leaves_no_process_behind(tmp_path):
    """A step's command that started children (full_size.py starts one per CPU set-up, and it the
    scripts) is killed with them at its limit: none may go on using the GPU during the next step."""
    import gpu_check

    pid_file = tmp_path / "child.pid"
    run = gpu_check.run_command(["bash", "-c", f"sleep 60 & echo $! > {pid_file}; wait"], timeout_s=1)
    assert run["exit_code"] == "timeout"
    child = int(pid_file.read_text())
    for _ in range(100):  # reaped by init once killed: gone within moments
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"the step's child {child} outlived its limit")
