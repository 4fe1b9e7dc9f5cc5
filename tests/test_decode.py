"""One decode path: every mode turns a file into the same input tensor, and training's draft
decoding never makes a crop coarser than a full decode would."""

from __future__ import annotations

import math
import os

import numpy as np
import torch
from PIL import Image

import inference
from conftest import train_args
from pyimagesearch import predict, report
from pyimagesearch.create_dataloaders import eval_transforms, get_dataloader, train_transforms
from pyimagesearch.images import train_draft_size


def _photo(path, width: int, height: int) -> None:
    """A large JPEG with detail at every scale (a draft decode visibly differs from a full one)."""
    rng = np.random.default_rng(0)
    small = rng.integers(0, 255, (height // 16, width // 16, 3), dtype=np.uint8)
    pixels = np.asarray(Image.fromarray(small).resize((width, height), Image.Resampling.BILINEAR), dtype=np.int16)
    pixels = np.clip(pixels + rng.integers(-40, 40, pixels.shape), 0, 255).astype(np.uint8)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(pixels).save(path, quality=92)


def test_every_mode_feeds_the_model_the_same_tensor(tmp_path, trained, monkeypatch):
    base, model_path = trained
    val = tmp_path / "val"
    for name in ("blue", "green", "red"):
        _photo(str(val / name / "big.jpg"), 1600, 1200)
    args = train_args(tmp_path, base, "warmup")
    args[args.index("--val") + 1] = str(val)
    parsed = fine_tune_parser().parse_args(args)
    # what validation during training sees: the scripts' own call of the dataloader helper
    training_val = get_dataloader(parsed.val, eval_transforms(parsed.image_size), parsed.batch_size, shuffle=False)[0][0][0]

    seen = {}
    real = predict.engine.probabilities

    def spy(model, x, precision):
        seen["images" if "images" not in seen else "random"] = x.clone()
        return real(model, x, precision)

    def spy_report(model, loader, *a, **k):
        seen["evaluate"] = torch.stack([loader.dataset[i][0] for i in range(len(loader.dataset))])
        return {}

    monkeypatch.setattr(predict.engine, "probabilities", spy)
    monkeypatch.setattr(report, "evaluate_and_report", spy_report)
    common = ["--model", model_path, "--output", str(tmp_path / "out"), "--num-workers", "0", "--no-progress"]
    inference.main([*common, "--images", str(val / "blue" / "big.jpg")])
    inference.main([*common, "--val", str(val), "--batch-size", "3", "--seed", "0"])  # the tutorial's random batch
    inference.main([*common, "--evaluate", str(val)])
    assert training_val.shape == (3, 32, 32)
    for mode in ("images", "random", "evaluate"):
        assert any(torch.equal(row, training_val) for row in seen[mode]), mode


def fine_tune_parser():
    import fine_tune

    return fine_tune.build_parser()


def test_training_drafts_no_further_than_its_smallest_crop_allows():
    for image_size in (32, 224):
        draft = train_draft_size(image_size)
        # RandomResizedCrop's smallest crop: 8 % of the area at aspect 3:4
        assert math.sqrt(0.08 * 0.75) * draft >= image_size
        assert math.sqrt(0.08 * 0.75) * (draft - 1) < image_size  # and no larger than that needs


def test_a_phone_photo_keeps_enough_pixels_for_the_smallest_crop(tmp_path):
    # how far a JPEG is drafted depends on its size alone: a plain 12-megapixel photo is written
    # in milliseconds, a detailed one in seconds
    for name, size in (("a", (4032, 3024)), ("b", (1024, 768))):
        os.makedirs(tmp_path / "train" / name)
        Image.new("RGB", size, (90, 120, 30)).save(tmp_path / "train" / name / "phone.jpg", quality=92)
    ds = get_dataloader(str(tmp_path / "train"), train_transforms(224), 4)[0]  # as the training scripts load it
    decoded = ds.loader(str(tmp_path / "train" / "a" / "phone.jpg"))
    assert decoded.size == (2016, 1512)  # drafted by 2, not by 8 to 504 x 378
    width, height = decoded.size
    assert math.sqrt(0.08 * 0.75 * width * height) >= 224
    assert ds.loader(str(tmp_path / "train" / "b" / "phone.jpg")).size == (1024, 768)  # not drafted at all
