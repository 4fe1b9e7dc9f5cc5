"""The network: heads, freezing, BatchNorm folding, the offline stand-in, backbone weights and checkpoints."""

from __future__ import annotations

import json
import os
import re
import sys

import pytest
import torch
from torch import nn
from torchvision.models import ResNet50_Weights, resnet50

import build_dataset
import fine_tune
import inference
import train_feature_extraction
from conftest import (
    PRECISIONS,
    ROOT,
    error_text,
    make_image_folder,
    train_args,
)
from pyimagesearch import checkpoint, config
from pyimagesearch.freezing import freeze_batchnorm, freeze_body, set_train_mode
from pyimagesearch.model import build_model
from pyimagesearch.utils.errors import UserError, run_cli
from pyimagesearch.utils.weights import load_backbone_weights


def _batchnorm_layers() -> int:
    """BatchNorm layers of the network the scripts build (53 in ResNet50; fewer in the tests' tiny one)."""
    return sum(isinstance(m, nn.BatchNorm2d) for m in build_model(3).modules())


def _bn_state(state: dict) -> dict:
    names = {name for name, m in resnet50().named_modules() if isinstance(m, nn.BatchNorm2d)}
    return {k: v for k, v in state.items() if k.rsplit(".", 1)[0] in names}


def _resnet18_with_three_outputs() -> dict:
    from torchvision.models import resnet18

    state = resnet18(num_classes=3).state_dict()
    return state


@pytest.mark.parametrize("extra", [[], ["--no-feature-cache"], ["--feature-cache", "--cache-views", "2"]])
def test_feature_extraction_leaves_the_body_untouched(tmp_path, splits, resnet_weights_file, extra):
    source = torch.load(resnet_weights_file, weights_only=True)
    train_feature_extraction.main(train_args(tmp_path, splits, "warmup", "--weights", resnet_weights_file, *extra))
    trained = torch.load(tmp_path / "output" / "warmup_model.pth", weights_only=True)["model"]
    for key, value in source.items():
        if not key.startswith("fc."):
            assert torch.equal(trained[key], value), key  # BN statistics and conv weights alike
    assert trained["fc.weight"].shape == (3, 2048)


@pytest.mark.parametrize(("extra", "train_passes"), [([], 1), (["--no-feature-cache"], 3),
                                                    (["--feature-cache", "--cache-views", "2"], 2)])
def test_feature_extraction_runs_the_body_only_where_its_input_changes(tmp_path, splits, monkeypatch, extra,
                                                                       train_passes):
    """Validation images pass through the frozen body once, whatever the mode; training images
    once per cached view, or once per epoch when they are augmented afresh every epoch, and once
    more, un-augmented, for the novelty reference when no cached view is un-augmented."""
    from pyimagesearch.model import Body

    seen = []
    forward = Body.forward
    monkeypatch.setattr(Body, "forward", lambda self, x: seen.append(len(x)) or forward(self, x))
    train_feature_extraction.main(train_args(tmp_path, splits, "warmup", "--epochs", "3", "--no-report", *extra))
    train_count = sum(len(files) for _, _, files in os.walk(os.path.join(splits, "train")))
    val_count = sum(len(files) for _, _, files in os.walk(os.path.join(splits, "val")))
    novelty_pass = 0 if extra == [] else 1  # the default caches one un-augmented view, which serves as it is
    assert sum(seen) == (train_passes + novelty_pass) * train_count + val_count


def test_fine_tuning_freezes_every_batchnorm_and_trains_the_rest(tmp_path, splits, resnet_weights_file, capsys):
    """With the photos decoded once and augmented in batches (--decode-once on), as a GPU runs it."""
    source = torch.load(resnet_weights_file, weights_only=True)
    fine_tune.main(train_args(tmp_path, splits, "finetune", "--weights", resnet_weights_file, "--lr", "0.01",
                              "--decode-once", "on"))
    out = capsys.readouterr().out
    assert "[INFO] training photos: decoded once when first read, kept as uint8" in out and "augmented there" in out
    assert "[INFO] validation photos: decoded once" in out
    trained = torch.load(tmp_path / "output" / "finetune_model.pth", weights_only=True)["model"]
    bn = _bn_state(source)
    assert len(bn) == _batchnorm_layers() * 5  # weight, bias, running_mean, running_var, num_batches_tracked
    for key, value in bn.items():
        assert torch.equal(trained[key], value), key
    last_conv = [k for k in source if k.startswith("layer4.") and k.endswith(".conv3.weight")][-1]
    assert not torch.equal(trained[last_conv], source[last_conv])
    assert not torch.equal(trained["conv1.weight"], source["conv1.weight"])
    assert trained["fc.6.weight"].shape == (3, 256)


def test_fine_tuning_uses_lr_finetune():

    args = fine_tune.build_parser().parse_args([])
    assert args.lr == config.LR_FINETUNE and args.batch_size == config.FINETUNE_BATCH_SIZE


def test_freeze_helpers_pick_the_right_tensors():
    model = build_model(5, head="mlp")
    freeze_batchnorm(model)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            assert not any(p.requires_grad for p in module.parameters())
        elif isinstance(module, (nn.Conv2d, nn.Linear)):
            assert all(p.requires_grad for p in module.parameters())
    set_train_mode(model)
    assert all(not m.training for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert model.fc.training and model.layer1[0].conv1.training

    model = build_model(5, head="linear")
    freeze_body(model)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["fc.weight", "fc.bias"]
    set_train_mode(model)
    assert model.fc.training and not model.layer3.training and not model.bn1.training


@pytest.mark.resnet50
def test_weights_load_from_the_torch_hub_cache_offline(tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.manual_seed(7)
    state = resnet50().state_dict()
    torch.save(state, cache / os.path.basename(ResNet50_Weights.IMAGENET1K_V1.url))
    loaded = load_backbone_weights("IMAGENET1K_V1")
    assert torch.equal(loaded["layer2.0.conv1.weight"], state["layer2.0.conv1.weight"])
    model = build_model(4, weights=loaded)
    assert torch.equal(model.state_dict()["bn1.running_var"], state["bn1.running_var"])


def test_offline_without_cache_stops_and_names_the_fix(tmp_path, monkeypatch, no_network, splits, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    with pytest.raises(UserError) as info:
        load_backbone_weights("IMAGENET1K_V1", timeout_s=5)
    message = str(info.value)
    assert "resnet50-0676ba61.pth" in message
    assert str(tmp_path / "empty-torch-home" / "hub" / "checkpoints") in message
    assert "--weights PATH" in message and "--weights none" in message
    with pytest.raises(UserError, match=r"resnet50-11ad3fa6\.pth"):  # DEFAULT is IMAGENET1K_V2
        load_backbone_weights("DEFAULT", timeout_s=5)

    args = train_args(tmp_path, splits, "warmup")
    args[args.index("--weights") + 1] = "IMAGENET1K_V1"
    assert run_cli(train_feature_extraction.main, args) == 2
    assert "--weights none" in " ".join(capsys.readouterr().err.split())
    assert not (tmp_path / "output" / "warmup_model.pth").exists()


def test_weights_spec_errors_are_clear(tmp_path):
    with pytest.raises(UserError, match="IMAGENET1K_V2"):
        load_backbone_weights("IMAGENET_V9")
    with pytest.raises(UserError, match="does not exist"):
        load_backbone_weights(str(tmp_path / "missing.pth"))
    bad = tmp_path / "bad.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, bad)
    with pytest.raises(UserError, match="do not fit ResNet50"):
        build_model(3, weights=load_backbone_weights(str(bad)))


def test_checkpoint_refuses_pickled_models(tmp_path):
    path = tmp_path / "whole_model.pth"
    torch.save(nn.Linear(2, 2), path)  # what the tutorial's torch.save(model) wrote
    with pytest.raises(UserError, match="not a flowers-transfer checkpoint"):
        checkpoint.load(str(path))


def test_folding_frozen_batchnorm_changes_speed_not_results(resnet_weights_file):
    from pyimagesearch.freezing import fold_frozen_batchnorm

    weights = torch.load(resnet_weights_file, weights_only=True)
    torch.manual_seed(0)
    plain = build_model(3, head="mlp", weights=weights)
    folded = build_model(3, head="mlp", weights=weights)
    folded.load_state_dict(plain.state_dict())
    for model in (plain, folded):
        freeze_batchnorm(model)
    assert fold_frozen_batchnorm(folded) == _batchnorm_layers()  # every one (53 in ResNet50)
    assert list(folded.state_dict()) == list(plain.state_dict())  # checkpoints keep their format
    x = torch.randn(2, 3, 64, 64)
    for model in (plain, folded):
        set_train_mode(model)
        model.fc.eval()  # dropout off, so the two forwards are comparable
    out_plain, out_folded = plain(x), folded(x)
    assert torch.allclose(out_plain, out_folded, rtol=1e-4, atol=1e-4)
    out_plain.sum().backward()
    out_folded.sum().backward()
    grad_plain, grad_folded = plain.layer2[0].conv2.weight.grad, folded.layer2[0].conv2.weight.grad
    assert torch.allclose(grad_plain, grad_folded, rtol=1e-3, atol=1e-5 * grad_plain.abs().max().item())
    assert folded.bn1.weight.grad is None

    trainable = build_model(3, head="mlp")
    assert fold_frozen_batchnorm(trainable) == 0  # BatchNorm still learning: nothing to fold


@pytest.mark.parametrize("precision", PRECISIONS)
def test_offline_stand_in_makes_random_weights_learn_and_says_so(tmp_path, capsys, precision):
    """`--weights none` (the demo): without the stand-in a random body gives chance-level features
    (5 classes: 0.2). Over 6 seeds in each precision it reached 0.83-0.91."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    from make_images import DISTINCT_CLASSES, make_flowers

    data = make_flowers(str(tmp_path / "photos"), per_class=20, size=64, classes=DISTINCT_CLASSES)
    base = str(tmp_path / "dataset")
    build_dataset.main(["--data", data, "--output", base, "--val-split", "0.34", "--no-progress"])
    train_feature_extraction.main(train_args(tmp_path, base, "warmup", "--epochs", "20", "--batch-size", "16",
                                             "--image-size", "64", "--no-report", "--amp", precision))
    out = capsys.readouterr().out
    assert "zero_init_residual" in out and re.search(r"calibrated on [0-9]+ training images", out)
    history = json.loads((tmp_path / "output" / "warmup_history.json").read_text())
    assert history[-1]["val_acc"] >= 0.7 and history[-1]["train_loss"] < history[0]["train_loss"] / 2


def test_offline_stand_in_sets_identity_blocks_and_data_statistics():
    from pyimagesearch.utils.stand_in import offline_stand_in

    torch.manual_seed(0)
    model = resnet50().eval()
    images = [torch.rand(4, 3, 32, 32) for _ in range(3)]
    assert offline_stand_in(model, images) == 12
    assert all(int(torch.count_nonzero(block.bn3.weight)) == 0 for layer in (model.layer1, model.layer4) for block in layer)
    with torch.no_grad():
        stem = model.conv1(torch.cat(images))
    torch.testing.assert_close(model.bn1.running_mean, stem.mean((0, 2, 3)), rtol=1e-4, atol=1e-5)
    assert model.bn1.momentum == 0.1 and not model.bn1.training  # settings restored after measuring


def test_the_stand_in_calibrates_when_the_last_batch_holds_one_image(tmp_path, capsys):
    import build_dataset

    data = make_image_folder(str(tmp_path / "photos"), per_class=10)
    base = str(tmp_path / "dataset")
    build_dataset.main(["--data", data, "--output", base, "--val-split", "0.4", "--no-progress"])
    train = sum(len(os.listdir(os.path.join(base, "train", c))) for c in os.listdir(os.path.join(base, "train")))
    assert train == 18
    os.remove(os.path.join(base, "train", "red", sorted(os.listdir(os.path.join(base, "train", "red")))[0]))
    # 17 images: calibration batches of 16 and 1; the one image cannot give BatchNorm a variance
    fine_tune.main(train_args(tmp_path, base, "finetune", "--epochs", "1", "--no-report"))
    assert "calibrated on 16 training images" in capsys.readouterr().out


def test_a_file_that_would_run_code_is_refused_without_torchs_weights_only_advice(tmp_path, capsys):
    class Evil:
        def __reduce__(self):
            return (print, ("this ran",))

    path = tmp_path / "evil.pth"
    torch.save({"model": Evil()}, path)
    code = run_cli(inference.main, ["--model", str(path), "--output", str(tmp_path / "o")])
    captured = capsys.readouterr()
    assert code == 2 and "run Python code" in captured.err and "print" in captured.err
    assert "weights_only" not in captured.err and "this ran" not in captured.out


def test_a_checkpoint_with_non_finite_weights_is_never_written(tmp_path):
    model = torch.nn.Linear(2, 2)
    with torch.no_grad():
        model.weight[0, 0] = float("nan")
    with pytest.raises(UserError, match="NaN or infinite"):
        checkpoint.save(str(tmp_path / "m.pth"), model, {})
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("tamper,message", [
    ("empty", "not a flowers-transfer checkpoint"),
    (lambda p: p["class_names"].append("extra"), "4 outputs"),
    (lambda p: p.update(head="transformer"), "head 'transformer'"),
    (lambda p: p.update(image_size=-1), "image_size"),
    (lambda p: p.update(image_size=0), "image_size"),
    (lambda p: p.update(image_size="abc"), "image_size"),
    (lambda p: p.update(mean=[0.5]), "mean must be three numbers"),
    (lambda p: p.update(std=[0.2, 0.2, 0.0]), "std must be positive"),
    (lambda p: p.update(model=_resnet18_with_three_outputs()), "does not hold resnet50 weights"),
    (lambda p: p.update(arch="vit_b_16"), "'vit_b_16'"),
])
def test_inconsistent_checkpoints_are_one_paragraph(tmp_path, trained, capsys, tamper, message):
    path = tmp_path / "broken.pth"
    if tamper == "empty":
        path.write_bytes(b"")
    else:
        payload = torch.load(trained[1], weights_only=True)
        tamper(payload)
        torch.save(payload, path)
    code = run_cli(inference.main, ["--model", str(path), "--images", trained[0], "--output", str(tmp_path / "o")])
    err = error_text(capsys)
    assert code == 2 and message in err and str(path) in err and "Traceback" not in err
