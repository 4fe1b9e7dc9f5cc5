"""Photos decoded once and transformed in batches on the device: the tutorial's augmentations drawn as
torchvision draws them, the same pixels, the same validation batches, and the memory it takes said."""

from __future__ import annotations

import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as F
from PIL import Image

import fine_tune
from conftest import make_image_folder
from pyimagesearch import config
from pyimagesearch.create_dataloaders import eval_transforms, get_dataloader, train_transforms
from pyimagesearch.data import decoded
from pyimagesearch.data.batch_augment import TrainAugment
from pyimagesearch.data.device_loaders import DecodedLoader
from pyimagesearch.utils.errors import UserError

SHAPES = [(300, 400), (500, 240), (240, 500), (333, 333), (224, 224), (1000, 50)]  # the last falls back to a centre crop


def tutorial_draws(shapes, seed: int) -> list:
    """What the tutorial's Compose draws per photo, from the global generator: RandomResizedCrop's
    box, RandomHorizontalFlip's coin, RandomRotation(90)'s angle, in that order."""
    torch.manual_seed(seed)
    draws = []
    for height, width in shapes:
        box = T.RandomResizedCrop.get_params(torch.empty(3, height, width), [0.08, 1.0], [3 / 4, 4 / 3])
        flip = bool(torch.rand(1) < 0.5)
        draws.append((box, flip, T.RandomRotation.get_params([-90.0, 90.0])))
    return draws


def test_every_draw_is_the_tutorials_from_the_same_generator_state():
    shapes = SHAPES * 50
    ours = TrainAugment(224, config.MEAN, config.STD).draw(shapes, torch.Generator().manual_seed(7))
    assert ours == tutorial_draws(shapes, 7)
    flips = [flip for _, flip, _ in ours]
    assert 0.4 < sum(flips) / len(flips) < 0.6
    angles = torch.tensor([angle for _, _, angle in ours])
    assert angles.min() >= -90 and angles.max() <= 90 and angles.min() < -80 and angles.max() > 80


def test_a_batch_is_torchvisions_transforms_applied_photo_by_photo():
    torch.manual_seed(0)
    photos = [torch.randint(0, 256, (3, h, w), dtype=torch.uint8) for h, w in SHAPES * 3]
    augment = TrainAugment(64, config.MEAN, config.STD)
    batch = augment(photos, torch.Generator().manual_seed(5))
    expected = []
    for photo, (box, flip, angle) in zip(photos, augment.draw([p.shape[-2:] for p in photos],
                                                              torch.Generator().manual_seed(5))):
        x = F.resized_crop(photo, *box, [64, 64], antialias=True)
        x = F.hflip(x) if flip else x
        x = F.rotate(x, angle, T.InterpolationMode.NEAREST, fill=[0.0, 0.0, 0.0])
        expected.append(F.normalize(x.float() / 255, config.MEAN, config.STD))
    assert batch.shape == (len(photos), 3, 64, 64) and batch.dtype == torch.float32
    torch.testing.assert_close(batch, torch.stack(expected), rtol=0, atol=1e-5)


@pytest.fixture(scope="module")
def photos_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("decode") / "train"
    make_image_folder(str(root), per_class=4, size=48)
    Image.new("RGB", (120, 80), (10, 200, 30)).save(root / "green" / "wide.png")  # not a JPEG, not square
    return str(root)


def test_validation_batches_decoded_once_are_the_per_photo_batches(photos_folder):
    common = dict(num_workers=0, device="cpu", progress=False)
    ds, per_photo = get_dataloader(photos_folder, eval_transforms(32), 5, False, decode_once="off", **common)
    ds_once, once = get_dataloader(photos_folder, eval_transforms(32), 5, False, decode_once="on", **common)
    assert isinstance(once, DecodedLoader) and len(once) == len(per_photo) == 3
    assert "decoded once" in ds_once.pipeline and "photo by photo" in ds.pipeline
    for (x, y), (x_once, y_once) in zip(per_photo, once):
        assert torch.equal(y, y_once)
        torch.testing.assert_close(x_once, x, rtol=0, atol=1e-6)


def test_photos_are_decoded_when_first_read_and_only_once(photos_folder, monkeypatch):
    decodes = []
    real = decoded.PhotoDecoder.__getitem__
    monkeypatch.setattr(decoded.PhotoDecoder, "__getitem__", lambda self, i: decodes.append(i) or real(self, i))
    ds, loader = get_dataloader(photos_folder, train_transforms(32), 5, num_workers=0, device="cpu", decode_once="on",
                                progress=False)
    assert decodes == [] and len(loader) == 3  # a run whose features are cached never reads it
    for _ in range(2):
        assert sum(len(y) for _, y in loader) == len(ds)
    assert sorted(decodes) == list(range(len(ds)))


def test_training_batches_keep_large_photos_at_the_side_that_keeps_the_smallest_crop_sharp(tmp_path):
    root = tmp_path / "train"
    make_image_folder(str(root), per_class=1, size=32)
    Image.new("RGB", (2400, 1800), (200, 30, 30)).save(root / "red" / "big.jpg", quality=90)
    ds, loader = get_dataloader(str(root), train_transforms(224), 8, True, num_workers=0, device="cpu",
                                decode_once="on", progress=False)
    shapes = {tuple(photo.shape) for photo in loader.photos.photos}
    assert (3, 32, 32) in shapes and (3, 915, 1220) in shapes  # short side 1800 -> 915
    x, y = next(iter(loader))
    assert x.shape == (4, 3, 224, 224) and sorted(y.tolist()) == sorted(ds.targets)
    assert decoded.planned_bytes([path for path, _ in ds.samples], decoded.TRAIN, 224) == loader.photos.nbytes


def test_photos_too_large_for_the_memory_are_refused_before_decoding_when_asked_for(photos_folder, monkeypatch):
    monkeypatch.setattr(decoded, "free_memory", lambda device: 10_000)
    with pytest.raises(UserError, match=r"do not fit.*--decode-once off"):
        get_dataloader(photos_folder, train_transforms(32), 4, num_workers=0, device="cpu", decode_once="on",
                       progress=False)


def test_auto_leaves_a_cpu_to_its_workers(photos_folder):
    ds, loader = get_dataloader(photos_folder, train_transforms(32), 4, num_workers=0, device="cpu", decode_once="auto",
                                progress=False)
    assert isinstance(loader, torch.utils.data.DataLoader) and "photo by photo" in ds.pipeline


def test_a_config_value_that_is_not_a_choice_is_refused_like_the_flag(monkeypatch, capsys):
    monkeypatch.setattr(config, "DECODE_ONCE", "yes")
    with pytest.raises(SystemExit) as stopped:
        fine_tune.build_parser().parse_args([])
    assert stopped.value.code == 2 and "decode" in capsys.readouterr().err


def test_the_one_off_decode_takes_this_processs_share_of_the_cores(monkeypatch):
    from pyimagesearch import create_dataloaders

    monkeypatch.setattr(create_dataloaders, "cpu_count", lambda: 16)
    assert create_dataloaders.decode_workers(0, "cuda") == 0  # a loader without workers decodes in-process
    assert create_dataloaders.decode_workers(3, "cuda") == 16
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # torchrun's four processes on this machine
    assert create_dataloaders.decode_workers(1, "cuda") == 4
    assert create_dataloaders.decode_workers(6, "cpu") == 6


def test_uint8_batches_normalised_on_the_device_are_the_workers_float_batches(photos_folder):
    """On a GPU the workers stop at uint8 and the batch is normalised there; here on the CPU, the
    same loader against the DataLoader that normalises in its workers."""
    from pyimagesearch.create_dataloaders import image_folder, per_photo_loader
    from pyimagesearch.data.device_loaders import Uint8Loader

    ds = image_folder(photos_folder, eval_transforms(32), draft_size=32)
    common = dict(num_workers=0, device="cpu", seed=0, equal_shares=False, start_method=None)
    floats = per_photo_loader(ds, eval_transforms(32), 5, False, uint8=False, **common)
    uint8 = per_photo_loader(ds, eval_transforms(32), 5, False, uint8=True, **common)
    assert isinstance(uint8, Uint8Loader) and uint8.dataset is ds and "copied as uint8" in ds.pipeline
    assert ds[0][0].dtype == torch.float32  # the caller's dataset keeps the tutorial's transforms
    assert len(uint8) == len(floats) == 3 and uint8.generator is uint8.loader.generator
    for (x, y), (x8, y8) in zip(floats, uint8):
        assert torch.equal(y, y8)
        torch.testing.assert_close(x8, x, rtol=0, atol=1e-6)


def test_transforms_edited_away_from_the_tutorials_are_refused_on_batches_in_one_paragraph(photos_folder):
    edited = T.Compose([T.RandomResizedCrop(32), T.ColorJitter(0.4), T.ToTensor(), T.Normalize(config.MEAN, config.STD)])
    with pytest.raises(UserError, match=r"not the tutorial's train_transforms or eval_transforms.*--decode-once off"):
        get_dataloader(photos_folder, edited, 4, num_workers=0, device="cpu", decode_once="on", progress=False)
