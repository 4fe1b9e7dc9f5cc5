"""The benchmark's arithmetic ceiling: the FLOPs it counts are ResNet50's published cost."""

from __future__ import annotations

import argparse
import os
import sys

import pytest
from torchvision.models import ResNet50_Weights

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import bench_training


def test_ceiling_counts_resnet50s_published_cost():
    ceiling = bench_training.arithmetic_ceiling(argparse.Namespace(device="cpu", image_size=224, amp="off"))
    # torchvision's "_ops" (GFLOPS) are multiply-adds of the whole network; the body stops short
    # of the 1000-way classifier, 2048 x 1000 multiply-adds
    published = ResNet50_Weights.IMAGENET1K_V1.meta["_ops"] * 1e9 - 2048 * 1000
    assert ceiling["forward_flop_per_image"] / 2 == pytest.approx(published, rel=1e-3)
    # backward: a gradient for every weight and every activation except the input image's
    assert 2.9 < ceiling["train_flop_per_image"] / ceiling["forward_flop_per_image"] < 3.0
    assert ceiling["gemm_flops"] > 1e9 and ceiling["dtype"] == "torch.float32"
