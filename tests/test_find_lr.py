"""--find-lr: the learning-rate range test on the run's own model and data, which keeps nothing."""

from __future__ import annotations

import json
import os
import types

import pytest
import torch
from torch import nn

import fine_tune
import train_feature_extraction
from conftest import error_text, file_contents, train_args
from pyimagesearch import schedule
from pyimagesearch.tuning.lr_find import find_lr
from pyimagesearch.utils.errors import run_cli
from pyimagesearch.utils.runtime import Compute


def _regression(n: int = 1024, seed: int = 0):
    """y = x w + noise, x ~ N(0, I) in 8 dimensions: for plain SGD on the squared error the right
    rate is known. Steps diverge above 2 / (the largest eigenvalue of E[x x^T]), about 2 here, and
    any rate from about 1e-3 up to about 1 learns."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=generator)
    y = x @ (2 * torch.randn(8, 1, generator=generator)) + 0.1 * torch.randn(n, 1, generator=generator)
    return torch.utils.data.TensorDataset(x, y)


@pytest.mark.parametrize("seed", [0, 1])
def test_the_curve_falls_then_rises_where_the_rate_is_known_and_the_weights_come_back(tmp_path, capsys, seed):
    torch.manual_seed(seed)
    model = nn.Linear(8, 1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    loader = torch.utils.data.DataLoader(_regression(seed=seed), batch_size=64, shuffle=True)
    session = types.SimpleNamespace(args=types.SimpleNamespace(model=str(tmp_path / "m.pth"), lr=0.01, progress=False),
                                    compute=Compute(torch.device("cpu")), log=print)
    result = find_lr(session, model, loader, nn.MSELoss(), optimizer, script="train_feature_extraction.py")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the weights as they were
    assert optimizer.param_groups[0]["lr"] == 0.01
    smoothed, rates = result["smoothed"], result["rates"]
    low = min(range(len(smoothed)), key=smoothed.__getitem__)
    assert smoothed[low] < 0.7 * smoothed[0] and 0.3 < rates[low] < 5  # it falls, lowest near the edge ...
    assert result["stopped_early"] and smoothed[-1] > 3 * smoothed[low] and rates[-1] < 10  # ... then blows up
    assert 1e-3 <= result["suggested"] <= 1  # a rate that learns, below where steps diverge
    saved = json.loads((tmp_path / "m_lr_find.json").read_text())
    assert saved["suggested"] == result["suggested"] and os.path.getsize(tmp_path / "m_lr_find.png") > 0
    assert "try python train_feature_extraction.py --lr" in capsys.readouterr().out


def test_a_flat_curve_suggests_nothing():
    rates = schedule.range_rates()
    assert schedule.suggest(rates, [1.0 + 0.01 * (i % 3) for i in range(len(rates))]) is None
    falling = [2.0 - 1.5 * i / len(rates) for i in range(len(rates))]
    assert schedule.suggest(rates, falling) is not None


@pytest.mark.parametrize("script, name", [(train_feature_extraction, "warmup"), (fine_tune, "finetune")])
def test_find_lr_writes_its_curve_and_no_checkpoint(tmp_path, small_dataset, capsys, script, name):
    out = tmp_path / "output"
    script.main(train_args(tmp_path, small_dataset, name, "--epochs", "1", "--no-report"))  # an earlier run
    before = file_contents(out)
    script.main(train_args(tmp_path, small_dataset, name, "--find-lr", "--batch-size", "8", "--no-report"))
    assert "--find-lr:" in capsys.readouterr().out
    after = file_contents(out)
    assert set(after) - set(before) == {f"{name}_model_lr_find.png", f"{name}_model_lr_find.json"}
    assert all(after[path] == content for path, content in before.items())  # the earlier run's files untouched
    curve = json.loads((out / f"{name}_model_lr_find.json").read_text())
    assert curve["script"] == f"{script.__name__}.py" and len(curve["losses"]) == len(curve["smoothed"]) > 10


def test_find_lr_with_resume_or_one_image_is_refused_before_any_work(tmp_path, small_dataset, capsys):
    with pytest.raises(SystemExit) as stopped:
        fine_tune.main(train_args(tmp_path, small_dataset, "finetune", "--find-lr", "--resume"))
    assert stopped.value.code == 2 and "--find-lr with --resume" in error_text(capsys)
    from PIL import Image

    one = tmp_path / "one"
    for split in ("train", "val"):
        (one / split / "red").mkdir(parents=True)
        Image.new("RGB", (40, 40), (200, 30, 30)).save(one / split / "red" / "a.jpg")
    code = run_cli(train_feature_extraction.main, train_args(tmp_path, str(one), "warmup", "--find-lr"))
    assert code == 2 and "training image(s)" in error_text(capsys)
    assert not (tmp_path / "output").exists() or not os.listdir(tmp_path / "output")
