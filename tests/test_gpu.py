"""The CUDA paths, on a real GPU: skipped without one; `make gpu-check` runs them first.

Mixed precision in bf16 and fp16 (with its gradient scaler), channels_last, the feature cache and
inference on the GPU, and a checkpoint trained there that loads on the CPU.
"""

from __future__ import annotations

import json

import pytest
import torch

import fine_tune
import inference
import train_feature_extraction
from conftest import build, make_image_folder, plain_and_fast, train_args
from pyimagesearch import checkpoint

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (make gpu-check)")]


@pytest.fixture
def splits(tmp_path):
    """dataset/{train,val}, split without the duplicate check: a GPU image's OpenCV may lack contrib."""
    base = str(tmp_path / "dataset")
    build(make_image_folder(str(tmp_path / "photos")), base, "--val-split", "0.34", "--no-find-duplicates")
    return base


def _cuda_args(tmp_path, splits, name: str, *extra: str) -> list[str]:
    args = train_args(tmp_path, splits, name, "--epochs", "2", "--amp", "auto", *extra)  # as users run it
    args[args.index("--device") + 1] = "cuda"
    return args


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_fine_tuning_trains_on_the_gpu_in_mixed_precision_and_loads_on_the_cpu(tmp_path, splits, amp):
    if amp == "bf16" and torch.cuda.get_device_capability()[0] < 8:
        pytest.skip("bf16 needs compute capability 8.0")
    fine_tune.main(_cuda_args(tmp_path, splits, "finetune", "--amp", amp, "--channels-last"))
    history = json.loads((tmp_path / "output" / "finetune_history.json").read_text())
    assert len(history) == 2 and all(torch.isfinite(torch.tensor(r["train_loss"])) for r in history)
    model, meta = checkpoint.load(str(tmp_path / "output" / "finetune_model.pth"), device="cpu")
    assert next(model.parameters()).device.type == "cpu" and meta["epoch"] == 2


def test_auto_precision_picks_bf16_on_ampere_and_newer_fp16_before():
    from pyimagesearch.utils.runtime import resolve_amp

    expected = torch.bfloat16 if torch.cuda.get_device_capability()[0] >= 8 else torch.float16
    assert resolve_amp("auto", torch.device("cuda")) == expected


def test_feature_extraction_on_the_gpu_reuses_its_cache_and_predicts_as_the_cpu_does(tmp_path, splits, capsys):
    args = _cuda_args(tmp_path, splits, "warmup")
    train_feature_extraction.main(args)
    train_feature_extraction.main([*args, "--lr", "0.0005"])
    assert "the body does not run" in capsys.readouterr().out
    model = str(tmp_path / "output" / "warmup_model.pth")
    rows = {}
    for device in ("cuda", "cpu"):
        out = tmp_path / device
        inference.main(["--model", model, "--images", f"{splits}/val", "--output", str(out), "--device", device,
                        "--amp", "off", "--num-workers", "0", "--no-progress"])
        rows[device] = json.loads((out / "warmup_model_images.json").read_text())["predictions"]
    for gpu, cpu in zip(rows["cuda"], rows["cpu"]):
        assert gpu["path"] == cpu["path"] and gpu["top"][0]["class"] == cpu["top"][0]["class"]
        assert abs(gpu["top"][0]["probability"] - cpu["top"][0]["probability"]) < 1e-3


def test_heatmaps_on_the_gpu_peak_where_the_unfolded_fp32_ones_on_the_cpu_do(tmp_path):
    from make_images import make_discs

    from pyimagesearch.create_dataloaders import eval_image_folder
    from pyimagesearch.inference.gradcam import Explainer
    from pyimagesearch.utils.runtime import Compute

    make_discs(str(tmp_path / "train"), 24, 128, seed=0)  # tests/background.py's set-up, which does not diverge
    make_discs(str(tmp_path / "val"), 5, 128, seed=1)
    model_path = str(tmp_path / "output" / "finetune_model.pth")
    fine_tune.main(["--train", str(tmp_path / "train"), "--val", str(tmp_path / "val"), "--weights", "none",
                    "--image-size", "128", "--epochs", "6", "--lr", "0.001", "--batch-size", "8", "--device", "cuda",
                    "--amp", "auto", "--no-progress", "--no-report", "--plot", str(tmp_path / "output" / "finetune.png"),
                    "--model", model_path])
    gpu = Compute.from_settings(torch.device("cuda"), "auto", True, 0)
    plain, fast, meta = plain_and_fast(model_path, gpu)
    ds = eval_image_folder(str(tmp_path / "val"), meta["image_size"], meta["mean"], meta["std"])
    images = torch.stack([ds[i][0] for i in range(len(ds))])
    reference, probabilities = Explainer(plain, Compute(torch.device("cpu"))).maps(images)
    mapped, _ = Explainer(fast, gpu).maps(images, probabilities.argmax(1).tolist())
    peaks = [divmod(int(m.argmax()), m.shape[1]) for m in reference]
    gpu_peaks = [divmod(int(m.argmax()), m.shape[1]) for m in mapped]
    assert gpu.amp_dtype is not None and all(max(abs(a - c), abs(b - d)) <= 1 for (a, b), (c, d) in zip(peaks, gpu_peaks))
    assert sum(p == q for p, q in zip(peaks, gpu_peaks)) >= 0.9 * len(peaks)


def test_photos_decoded_once_or_copied_as_uint8_give_the_cpus_batches_on_the_gpu(tmp_path, splits, capsys):
    from pyimagesearch.create_dataloaders import eval_transforms, get_dataloader, train_transforms
    from pyimagesearch.data.batch_augment import TrainAugment
    from pyimagesearch.data.device_loaders import DecodedLoader, Uint8Loader

    val = f"{splits}/val"
    common = dict(num_workers=0, progress=False, decode_once="on")
    _, on_cpu = get_dataloader(val, eval_transforms(32), 4, False, device="cpu", **common)
    _, on_gpu = get_dataloader(val, eval_transforms(32), 4, False, device="cuda", **common)
    assert isinstance(on_gpu, DecodedLoader) and on_gpu.photos.photos[0].device.type == "cuda"
    for (x_cpu, y_cpu), (x_gpu, y_gpu) in zip(on_cpu, on_gpu):
        assert x_gpu.device.type == "cuda" and torch.equal(y_cpu, y_gpu)
        torch.testing.assert_close(x_gpu.cpu(), x_cpu, rtol=0, atol=1e-5)
    photos = [torch.randint(0, 256, (3, h, w), dtype=torch.uint8) for h, w in ((300, 400), (500, 240), (90, 90))]
    augment = TrainAugment(64, [0.5] * 3, [0.25] * 3)
    on_the_cpu = augment(photos, torch.Generator().manual_seed(3))
    on_the_gpu = augment([photo.cuda() for photo in photos], torch.Generator().manual_seed(3))
    assert (on_the_gpu.cpu() - on_the_cpu).abs().gt(1e-3).float().mean() < 0.01  # rounding ties may differ

    fine_tune.main(_cuda_args(tmp_path, splits, "finetune", "--decode-once", "auto", "--train",
                              f"{splits}/train", "--no-report"))
    out = capsys.readouterr().out
    assert "training photos: decoded once" in out and "on cuda" in out
    _, per_photo = get_dataloader(f"{splits}/train", train_transforms(32), 4, device="cuda", num_workers=0,
                                  decode_once="off", progress=False)
    assert isinstance(per_photo, Uint8Loader)  # photo by photo: copied as uint8, normalised on the GPU
    _, uint8 = get_dataloader(val, eval_transforms(32), 4, False, device="cuda", num_workers=0, decode_once="off",
                              progress=False)
    _, floats = get_dataloader(val, eval_transforms(32), 4, False, device="cpu", num_workers=0, decode_once="off",
                               progress=False)
    for (x_gpu, y_gpu), (x_cpu, y_cpu) in zip(uint8, floats):
        assert x_gpu.device.type == "cuda" and torch.equal(y_gpu, y_cpu)
        torch.testing.assert_close(x_gpu.cpu(), x_cpu, rtol=0, atol=1e-5)
