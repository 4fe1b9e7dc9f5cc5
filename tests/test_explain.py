"""inference.py --explain and --evaluate's heatmaps: Grad-CAM maps that point at the object."""

from __future__ import annotations

import os
import shutil
from math import comb

import numpy as np
import pytest
import torch
from explain_discs import peak_inside

import inference
from conftest import PRECISIONS, decoded_size, error_text, file_contents, plain_and_fast
from pyimagesearch.create_dataloaders import eval_image_folder
from pyimagesearch.inference.gradcam import Explainer
from pyimagesearch.utils.errors import run_cli
from pyimagesearch.utils.runtime import Compute

SIZE = 128  # tests/background.py's DISC_SIZE


def _explain(model: str, images: str, out, *extra: str) -> list[str]:
    return ["--model", model, "--images", images, "--explain", str(out / "explained"), "--output", str(out),
            "--device", "cpu", "--num-workers", "0", "--no-progress", *extra]


def _archive(model: str, folder) -> str:
    """Where --explain keeps the maps of ``model``'s photos in ``folder``."""
    return str(folder / (os.path.basename(model).removesuffix(".pth") + "_explained.npz"))


def _binomial_tail(successes: int, trials: int, p: float) -> float:
    return sum(comb(trials, k) * p ** k * (1 - p) ** (trials - k) for k in range(successes, trials + 1))


@pytest.mark.parametrize("precision", PRECISIONS)
def test_heatmaps_point_at_the_disc_far_above_chance(disc_models, tmp_path, precision):
    """The model trained in either precision (tests/background.py), mapped in fp32 and in bf16."""
    model, val, truth = disc_models[precision]
    inference.main(_explain(model, val, tmp_path, "--amp", precision))
    folder = tmp_path / "explained"
    with np.load(_archive(model, folder)) as maps:
        assert sorted(maps.files) == sorted(truth)  # keyed by the photo's path, every photo once
        for path in maps.files:
            cam = maps[path]
            assert cam.dtype == np.float16 and cam.shape == (SIZE, SIZE) and 0 <= cam.min() and cam.max() <= 1
    inside = peak_inside(_archive(model, folder), truth)
    chance = float(np.mean([np.pi * r ** 2 / SIZE ** 2 for _, _, r in truth.values()]))  # about 0.05
    assert sum(inside) / len(inside) >= 0.5
    assert _binomial_tail(sum(inside), len(inside), chance) < 1e-6
    one = os.path.join(val, "red", "disc_0000.png")
    assert decoded_size(folder / "disc_0000_explained.png") == decoded_size(one)  # drawn at the photo's own size
    assert os.path.getsize(_archive(model, folder).replace(".npz", "_montage.jpg")) > 0


def test_the_maps_stay_the_same_with_folded_batchnorm_channels_last_and_bf16(disc_model):
    model_path, val, _ = disc_model
    fast_compute = Compute.from_settings(torch.device("cpu"), "bf16", True, 0)
    plain, fast, meta = plain_and_fast(model_path, fast_compute)
    ds = eval_image_folder(val, meta["image_size"], meta["mean"], meta["std"])
    images = torch.stack([ds[i][0] for i in range(len(ds))])
    reference, probabilities = Explainer(plain, Compute(torch.device("cpu"))).maps(images)
    mapped, _ = Explainer(fast, fast_compute).maps(images, probabilities.argmax(1).tolist())
    assert fast_compute.amp_dtype == torch.bfloat16 and fast_compute.channels_last
    peaks = [np.unravel_index(m.argmax(), m.shape) for m in reference]
    assert [np.unravel_index(m.argmax(), m.shape) for m in mapped] == peaks
    assert all(p.requires_grad is False for p in fast.parameters())  # the layer's gradients were switched back off


def test_explain_class_maps_another_class(disc_model, tmp_path):
    model, val, _ = disc_model
    red = os.path.join(val, "red", "disc_0000.png")
    inference.main(_explain(model, red, tmp_path / "top"))
    inference.main(_explain(model, red, tmp_path / "blue", "--explain-class", "blue"))
    with np.load(_archive(model, tmp_path / "top" / "explained")) as top, \
            np.load(_archive(model, tmp_path / "blue" / "explained")) as blue:
        assert any(not np.array_equal(top[key], blue[key]) for key in top.files)


@pytest.mark.parametrize("extra, message", [
    (["--explain-class", "purple"], "is not a class of"),
    (["--explain-layer", "layer5"], "Did you mean"),
    (["--explain-layer", "fc"], "after the spatial pooling"),
])
def test_a_wrong_class_or_layer_is_refused_before_any_photo_is_classified(disc_model, tmp_path, capsys, extra, message):
    model, val, _ = disc_model
    assert run_cli(inference.main, _explain(model, val, tmp_path, *extra)) == 2
    assert message in error_text(capsys)
    assert not [name for name in os.listdir(tmp_path) if name.endswith("_images.json")]
    assert not os.listdir(tmp_path / "explained")


def test_explain_refuses_onnx_models_and_never_overwrites_the_users_file(disc_model, tmp_path, capsys):
    model, val, _ = disc_model
    assert run_cli(inference.main, _explain(str(tmp_path / "model.onnx"), val, tmp_path)) == 2
    message = error_text(capsys)
    assert "has none" in message and "a .pth file" in message
    assert run_cli(inference.main, ["--model", model, "--explain", str(tmp_path / "x")]) == 2
    assert "add --images" in error_text(capsys)
    mine = tmp_path / "explained" / "disc_0000_explained.png"
    mine.parent.mkdir()
    mine.write_bytes(b"the user's own picture")
    before = file_contents(tmp_path)
    assert run_cli(inference.main, _explain(model, os.path.join(val, "red"), tmp_path)) == 2
    assert "were not written by --annotate or --explain" in error_text(capsys)
    assert file_contents(tmp_path) == before


def test_evaluate_adds_the_most_confident_mistakes_with_their_heatmaps(disc_model, tmp_path, capsys):
    model, val, _ = disc_model
    folder = tmp_path / "val"
    shutil.copytree(val, folder)
    for i in range(3):  # filed under the wrong class: certain mistakes
        shutil.move(folder / "red" / f"disc_000{i}.png", folder / "blue" / f"was_red_{i}.png")
    inference.main(["--model", model, "--evaluate", str(folder), "--output", str(tmp_path), "--device", "cpu",
                    "--num-workers", "0", "--no-progress"])
    assert os.path.getsize(tmp_path / "finetune_model_best_mistakes_explained.png") > 0
    assert "most confident mistakes with what the model looked at" in capsys.readouterr().out
