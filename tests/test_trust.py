"""Calibrated probabilities and photos unlike every class: the temperature each run fits, the
novelty reference it keeps, and what inference.py does with both."""

from __future__ import annotations

import csv
import json
import os
import shutil

import numpy as np
import pytest
import torch
from make_images import make_discs
from PIL import Image

import inference
from background import DISC_SIZE
from conftest import PRECISIONS, error_text
from pyimagesearch.trust import novelty, temperature
from pyimagesearch.utils.errors import run_cli


def _sampled(count: int, classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels drawn from their own softmax: perfectly calibrated at temperature 1."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(count, classes, generator=generator) * 2.5
    labels = torch.multinomial(logits.softmax(1), 1, generator=generator).squeeze(1)
    return logits, labels


def test_temperature_scaling_finds_the_overconfidence_and_keeps_every_prediction():
    logits, labels = _sampled(1200, 5, seed=0)
    overconfident = logits * 3  # a network three times too sure of itself
    fitted = temperature.fit_temperature(overconfident, labels)
    assert fitted == pytest.approx(3.0, rel=0.1)
    judged = temperature.judge(overconfident, labels)
    assert judged["fitted"] and "declined" not in judged and judged["ece_calibrated"] < judged["ece_raw"] / 3
    assert judged["nll_calibrated"] < judged["nll_raw"]
    assert torch.equal((overconfident / fitted).argmax(1), overconfident.argmax(1))


def test_the_temperature_is_judged_on_photos_it_was_not_fitted_on(monkeypatch):
    logits, labels = _sampled(60, 3, seed=1)
    fits = []
    real = temperature.fit_temperature
    monkeypatch.setattr(temperature, "fit_temperature", lambda x, y: fits.append(len(x)) or real(x, y))
    judged = temperature.judge(logits, labels)
    # one fit per fold on the other folds' photos, then one on every photo for the checkpoint
    assert fits[:-1] == [48] * temperature.FOLDS and fits[-1] == 60 and judged["folds"] == temperature.FOLDS


def test_expected_calibration_error_is_the_gap_between_confidence_and_accuracy():
    # ten photos called at 0.9 (two classes), six of them right: a gap of 0.3
    probabilities = torch.tensor([[0.9, 0.1]] * 10)
    labels = torch.tensor([0] * 6 + [1] * 4)
    assert temperature.expected_calibration_error(probabilities, labels) == pytest.approx(0.3, abs=1e-6)
    # and ten more at 0.6, all right: 0.5 x 0.3 + 0.5 x 0.4
    probabilities = torch.cat([probabilities, torch.tensor([[0.6, 0.4]] * 10)])
    labels = torch.cat([labels, torch.zeros(10, dtype=torch.long)])
    assert temperature.expected_calibration_error(probabilities, labels) == pytest.approx(0.35, abs=1e-6)


def test_a_temperature_that_does_not_help_on_held_out_folds_is_declined():
    # logits calibrated already: a fitted temperature near 1 fits noise, and mostly does worse on
    # the folds it did not see (5 of these 6 sets); the overconfident set above is never declined
    judged = [temperature.judge(*_sampled(400, 4, seed=seed)) for seed in range(6)]
    declined = [j for j in judged if "declined" in j]
    assert len(declined) >= 4
    assert all(j["temperature"] == 1.0 and j["nll_calibrated"] >= j["nll_raw"] for j in declined)


def test_a_temperature_the_photos_cannot_bound_is_declined():
    # every photo right by a wide margin: the likelihood only improves as the temperature falls
    logits = torch.eye(3).repeat(10, 1) * 5
    labels = torch.arange(3).repeat(10)
    judged = temperature.judge(logits, labels)
    assert judged["declined"] < 0.5 and judged["temperature"] == 1.0  # it would sharpen them to certainty
    assert "every validation photo is predicted right" in judged["reason"]


def test_too_few_validation_photos_leave_the_probabilities_raw():
    logits, labels = _sampled(temperature.MIN_PHOTOS - 1, 3, seed=2)
    judged = temperature.judge(logits * 4, labels)
    assert not judged["fitted"] and judged["temperature"] == 1.0 and "bins_raw" not in judged


def _clusters(per_class: int, centres: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
    """Non-negative features around each centre, as a ReLU network's pooled features are."""
    points = np.repeat(centres, per_class, axis=0) + rng.normal(0, 0.15, (per_class * len(centres), centres.shape[1]))
    return torch.from_numpy(np.clip(points, 0, None)).float()


def test_novelty_flags_what_lies_far_from_every_training_photo(monkeypatch):
    rng = np.random.default_rng(0)
    known, unknown = rng.uniform(0, 1, (3, 64)), rng.uniform(0, 1, (2, 64))
    monkeypatch.setattr(novelty, "MAX_REFERENCE", 120)
    state_val = _clusters(20, known, rng)
    state = novelty.fit(_clusters(60, known, rng), state_val, seed=0)
    assert state["reference"].shape == (120, 64) and state["reference"].dtype == torch.float16
    scorer = novelty.Novelty(state)
    assert scorer.threshold == pytest.approx(state["threshold"])
    # the validation photos' own novelty is their rank among them: 5 % of them lie beyond the threshold
    assert scorer.flags(scorer.score(state_val)).mean() == pytest.approx(0.05, abs=0.02)
    fresh, far = _clusters(30, known, rng), _clusters(30, unknown, rng)
    assert scorer.flags(scorer.score(far)).mean() >= 0.95
    # features that fire as a known class's do, only ten times as strongly: unlike every class too
    assert scorer.flags(scorer.score(fresh * 10)).mean() >= 0.95
    assert scorer.flags(scorer.score(fresh)).mean() <= 0.15
    # a higher percentile flags fewer of the photos like the validation ones, never more
    stricter = novelty.Novelty(state, percentile=100)
    assert stricter.flags(stricter.score(fresh)).sum() <= scorer.flags(scorer.score(fresh)).sum()


def test_both_checkpoints_keep_their_temperature_and_novelty_reference_as_plain_data(disc_model):
    best, val, _ = disc_model
    for path in (best, best.replace("_best", "")):
        payload = torch.load(path, weights_only=True)
        calibration, reference = payload["calibration"], payload["novelty"]
        assert calibration["fitted"] and calibration["photos"] == 20 and 0 < calibration["temperature"] < 20
        assert calibration["folder"] == os.path.realpath(val)
        assert reference["reference"].shape == (96, 2048) and reference["reference"].dtype == torch.float16
        assert [len(reference["validation_distances"][kind]) for kind in novelty.KINDS] == [20, 20]
        assert reference["percentile"] == 95


def _unlike_and_known(root) -> tuple[list[str], list[str]]:
    """Photos of no class the disc models saw (a purple disc, generated flowers, noise, flat
    colour), and fresh discs of their own four colours."""
    from make_images import DISTINCT_CLASSES, make_flowers

    unseen = list(make_discs(str(root / "unseen"), 10, DISC_SIZE, seed=3, colours={"purple": (150, 40, 200)}))
    flowers = make_flowers(str(root / "flowers"), 3, DISC_SIZE, seed=5, classes=DISTINCT_CLASSES)
    unseen += sorted(os.path.join(folder, name) for folder, _, names in os.walk(flowers) for name in names)
    known = make_discs(str(root / "known"), 5, DISC_SIZE, seed=2)
    rng = np.random.default_rng(4)
    for i in range(10):
        noise, flat = root / f"noise_{i}.png", root / f"flat_{i}.png"
        Image.fromarray(rng.integers(0, 256, (DISC_SIZE, DISC_SIZE, 3), dtype=np.uint8)).save(noise)
        Image.new("RGB", (DISC_SIZE, DISC_SIZE), tuple(int(c) for c in rng.integers(0, 256, 3))).save(flat)
        unseen += [str(noise), str(flat)]
    return unseen, list(known)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_photos_of_no_known_class_are_flagged_and_known_ones_seldom(disc_models, tmp_path, precision):
    """Over 4 seeds in each precision, the disc models scored these at an AUROC of 0.95 to 1.00,
    flagged 0.93 to 1.00 of the photos of no class and 0.05 to 0.20 of the known ones (chance
    would flag about 0.05 of each, at an AUROC of 0.5)."""
    from sklearn.metrics import roc_auc_score

    model, _, _ = disc_models[precision]
    unlike, known = _unlike_and_known(tmp_path)
    out = tmp_path / "out"
    inference.main(["--model", model, "--images", *unlike, *known, "--output", str(out), "--amp", precision,
                    "--num-workers", "0", "--no-progress"])
    rows = {row["path"]: row for row in json.loads((out / "finetune_model_best_images.json").read_text())["predictions"]}
    recall = np.mean([rows[p]["unlike_every_class"] for p in unlike])
    false_alarms = np.mean([rows[p]["unlike_every_class"] for p in known])
    auroc = roc_auc_score([1] * len(unlike) + [0] * len(known), [rows[p]["novelty"] for p in unlike + known])
    assert auroc >= 0.85 and recall >= 0.8 and false_alarms <= 0.3, (auroc, recall, false_alarms)
    assert all(len(row["top"]) == 3 for row in rows.values())  # the classes are still listed


def test_the_tables_the_picture_and_the_annotated_photos_carry_the_flag(disc_model, tmp_path, capsys):
    model, _, _ = disc_model
    unlike, known = _unlike_and_known(tmp_path)
    photos = [unlike[0], known[0]]
    out = tmp_path / "out"
    inference.main(["--model", model, "--images", *photos, "--output", str(out), "--annotate", str(out / "annotated"),
                    "--num-workers", "0", "--no-progress"])
    printed = capsys.readouterr().out
    with open(out / "finetune_model_best_images.csv") as handle:
        table = {row["path"]: row for row in csv.DictReader(handle)}
    assert table[unlike[0]]["unlike_every_class"] == "1" and table[known[0]]["unlike_every_class"] == "0"
    assert float(table[unlike[0]]["novelty"]) > float(table[known[0]]["novelty"])
    assert "1 of 2 photo(s) (50.0%) unlike every class" in printed and "[unlike every class: novelty" in printed
    # the label of a photo unlike every class is drawn in red, the others in the tutorial's green
    from pyimagesearch.inference.output_folder import annotated_names

    names = dict(zip(photos, annotated_names(photos)))  # both are disc_0000.png: the second is numbered

    def red_pixels(photo: str) -> int:
        name = names[photo]
        pixels = np.asarray(Image.open(out / "annotated" / name).convert("RGB")).astype(int)
        return int(((pixels[..., 0] > 200) & (pixels[..., 1] < 60) & (pixels[..., 2] < 60)).sum())

    assert red_pixels(unlike[0]) > 100 and red_pixels(known[0]) < 10  # the grey noise may hold a stray red pixel


def test_no_calibration_gives_the_raw_softmax(disc_model, tmp_path, capsys):
    model, val, _ = disc_model
    photo = os.path.join(val, "red", sorted(os.listdir(os.path.join(val, "red")))[0])
    tops = {}
    for flag in ("--calibration", "--no-calibration"):
        out = tmp_path / flag
        inference.main(["--model", model, "--images", photo, "--output", str(out), "--top-k", "4", flag,
                        "--num-workers", "0", "--no-progress"])
        row = json.loads((out / "finetune_model_best_images.json").read_text())["predictions"][0]
        tops[flag] = {t["class"]: t["probability"] for t in row["top"]}
    t = torch.load(model, weights_only=True)["calibration"]["temperature"]
    raw = torch.tensor(list(tops["--no-calibration"].values()))
    expected = raw ** (1 / t) / (raw ** (1 / t)).sum()  # softmax(z / T) from softmax(z)
    assert torch.allclose(torch.tensor([tops["--calibration"][c] for c in tops["--no-calibration"]]), expected,
                          atol=1e-4)
    assert "--no-calibration: probabilities are the network's raw softmax" in capsys.readouterr().out


def test_a_checkpoint_without_calibration_or_novelty_loads_as_before_and_says_so(trained, tmp_path, capsys):
    base, model = trained
    payload = torch.load(model, weights_only=True)
    assert not payload["calibration"]["fitted"]  # 6 validation photos: too few for a temperature
    assert len(payload["novelty"]["reference"]) == 12  # but every training photo is a reference
    del payload["calibration"], payload["novelty"]
    old = tmp_path / "old_model.pth"
    torch.save(payload, old)
    photo = os.path.join(base, "val", "red", sorted(os.listdir(os.path.join(base, "val", "red")))[0])
    inference.main(["--model", str(old), "--images", photo, "--output", str(tmp_path / "out"), "--num-workers", "0",
                    "--no-progress"])
    printed = capsys.readouterr().out
    assert "carries no temperature" in printed and "carries no novelty reference" in printed
    row = json.loads((tmp_path / "out" / "old_model_images.json").read_text())["predictions"][0]
    assert row["novelty"] is None and row["unlike_every_class"] is False


@pytest.mark.parametrize("damage,what", [({"calibration": {"temperature": -1.0}}, "temperature"),
                                          ({"novelty": {"reference": "x"}}, "novelty reference"),
                                          ({"novelty": {"reference": torch.zeros(4, 16), "k": 3, "validation_distances": {
                                              "direction": torch.ones(3), "magnitude": torch.ones(3)}}},
                                           "novelty reference")])
def test_a_damaged_temperature_or_reference_is_one_paragraph(trained, tmp_path, capsys, damage, what):
    _, model = trained
    payload = {**torch.load(model, weights_only=True), **damage}
    broken = tmp_path / "broken.pth"
    torch.save(payload, broken)
    code = run_cli(inference.main, ["--model", str(broken), "--images", str(broken), "--output", str(tmp_path / "o")])
    err = error_text(capsys)
    assert code == 2 and f"carries a damaged {what}" in err and "Traceback" not in err
    assert not (tmp_path / "o" / "broken_images.json").exists()


def _with_calibration(model: str, folder: str, **calibration) -> str:
    """A copy of ``model`` whose temperature is the one given, fitted (it says) on ``folder``."""
    from pyimagesearch import checkpoint

    copy = os.path.join(folder + "_models", os.path.basename(model))
    os.makedirs(os.path.dirname(copy), exist_ok=True)
    torch.save(torch.load(model, weights_only=True), copy)
    checkpoint.amend(copy, calibration={"fitted": True, "folder": os.path.realpath(folder), **calibration})
    return copy


def test_evaluate_judges_the_temperature_honestly_and_counts_the_flagged_photos(disc_model, tmp_path, capsys):
    model, val, _ = disc_model
    model = _with_calibration(model, str(tmp_path / "val"), temperature=2.0)
    shutil.copytree(val, tmp_path / "val")
    fresh = tmp_path / "fresh"
    make_discs(str(fresh), 5, DISC_SIZE, seed=2)
    reports = {}
    for name, folder in (("fitted_on", str(tmp_path / "val")), ("fresh", str(fresh))):
        out = tmp_path / name
        inference.main(["--model", model, "--evaluate", folder, "--output", str(out), "--num-workers", "0",
                        "--no-progress"])
        reports[name] = json.loads((out / "finetune_model_best_report.json").read_text()), capsys.readouterr().out
        assert (out / "finetune_model_best_calibration.png").stat().st_size > 10_000
    (fitted_on, said_fitted), (fresh_report, said_fresh) = reports["fitted_on"], reports["fresh"]
    # on the photos it was fitted on, the temperature is judged by cross-validation, and the report says so
    assert fitted_on["calibration"]["folds"] == temperature.FOLDS and "fitted on" in fitted_on["calibration"]["note"]
    assert "these are the photos the temperature was fitted on" in said_fitted
    assert "validation photo(s)" in said_fitted and "unlike every class" in said_fitted
    # on other photos, the checkpoint's own temperature is measured as it is
    assert fresh_report["calibration"]["temperature"] == 2.0 and "folds" not in fresh_report["calibration"]
    assert "with the temperature 2.00 (the temperature was fitted on other photos" in said_fresh
    assert fresh_report["novelty"]["photos"] == 20 and 0 <= fresh_report["novelty"]["unlike_every_class"] <= 20


def test_a_declined_temperature_leaves_the_probabilities_raw_and_says_why(disc_model, tmp_path, capsys):
    model, val, _ = disc_model
    model = _with_calibration(model, str(tmp_path / "elsewhere"), temperature=1.0, declined=0.4)
    inference.main(["--model", model, "--evaluate", val, "--output", str(tmp_path / "out"), "--num-workers", "0",
                    "--no-progress"])
    said = capsys.readouterr().out
    assert "its temperature was declined at the end of training" in said and "the temperature was declined" in said
    report = json.loads((tmp_path / "out" / "finetune_model_best_report.json").read_text())
    assert "ece_calibrated" not in report["calibration"] and report["calibration"]["photos"] == 20


def test_an_exported_model_carries_its_temperature_and_says_it_has_no_novelty(exported, tmp_path, capsys):
    base, model, onnx = exported
    meta = json.loads(open(onnx[:-5] + ".json").read())
    stored = torch.load(model, weights_only=True)["calibration"]
    assert meta["calibration"] == {"temperature": stored["temperature"], "fitted": stored["fitted"]}
    photo = os.path.join(base, "val", "red", sorted(os.listdir(os.path.join(base, "val", "red")))[0])
    inference.main(["--model", onnx, "--images", photo, "--output", str(tmp_path / "o"), "--no-progress"])
    assert "an exported ONNX model gives logits only" in capsys.readouterr().out
