"""Temperature scaling (Guo et al., 2017): one number T that divides every logit, fitted on the
validation photos so that the softmax's confidence matches how often the model is right.

A network trained with cross-entropy is usually overconfident: of the photos it calls 0.95, far
fewer than 95 % are right. Dividing the logits by T > 1 softens every probability alike, which
never changes the predicted class, only how sure it claims to be. T is the value that minimises
the validation photos' negative log-likelihood; the expected calibration error (ECE, the gap
between confidence and accuracy, averaged over 15 confidence bins) says how far off each is.

A temperature judged on the photos it was fitted on flatters itself; ``judge`` fits it on all
folds but one and measures it on the one left out, in turn.
"""

from __future__ import annotations

import math

import numpy as np
import torch

BINS = 15  # Guo et al.'s equal-width confidence bins
LOWEST, HIGHEST = 0.05, 20.0  # the temperatures searched: from 20x sharper to 20x softer
MIN_PHOTOS = 20  # fewer validation photos than this fit noise, not a temperature
FOLDS = 5


def negative_log_likelihood(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> float:
    """The mean cross-entropy of ``logits`` / ``temperature`` against ``labels``."""
    scaled = logits.double() / temperature
    return float(torch.nn.functional.cross_entropy(scaled, labels.long()))


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The T in [LOWEST, HIGHEST] that minimises the negative log-likelihood of ``logits`` / T.

    The likelihood is convex in 1/T, so a golden-section search over log T finds its one minimum
    to a precision far finer than the data can tell apart (no learning rate, no iterations to tune).
    """
    low, high = math.log(LOWEST), math.log(HIGHEST)
    ratio = (math.sqrt(5) - 1) / 2
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    fa, fb = (negative_log_likelihood(logits, labels, math.exp(x)) for x in (a, b))
    for _ in range(60):
        if fa < fb:
            high, b, fb = b, a, fa
            a = high - ratio * (high - low)
            fa = negative_log_likelihood(logits, labels, math.exp(a))
        else:
            low, a, fa = a, b, fb
            b = low + ratio * (high - low)
            fb = negative_log_likelihood(logits, labels, math.exp(b))
    return math.exp((low + high) / 2)


def reliability(probabilities: torch.Tensor, labels: torch.Tensor, bins: int = BINS) -> list[dict[str, float]]:
    """Per equal-width bin of top-1 confidence: its range, how many photos fell in it, their mean
    confidence and their accuracy (the reliability diagram's bars)."""
    confidence, predicted = probabilities.float().max(1)
    right = (predicted == labels).float()
    edges = torch.linspace(0, 1, bins + 1)
    index = torch.bucketize(confidence, edges[1:-1], right=True)  # (lower, upper]; 0 falls in the first bin
    rows = []
    for b in range(bins):
        chosen = index == b
        count = int(chosen.sum())
        rows.append({"lower": float(edges[b]), "upper": float(edges[b + 1]), "count": count,
                     "confidence": float(confidence[chosen].mean()) if count else 0.0,
                     "accuracy": float(right[chosen].mean()) if count else 0.0})
    return rows


def expected_calibration_error(probabilities: torch.Tensor, labels: torch.Tensor, bins: int = BINS) -> float:
    """Sum over the bins of (share of photos) x |accuracy - mean confidence|: 0 is perfectly calibrated."""
    return _ece(reliability(probabilities, labels, bins))


def _ece(rows: list[dict[str, float]]) -> float:
    """The expected calibration error of a reliability table."""
    total = sum(row["count"] for row in rows)
    return sum(row["count"] / total * abs(row["accuracy"] - row["confidence"]) for row in rows) if total else 0.0


def _folds(labels: np.ndarray, seed: int):
    """Stratified folds when every class has a photo in each, plain shuffled folds otherwise."""
    from sklearn.model_selection import KFold, StratifiedKFold

    smallest = np.bincount(labels)[np.bincount(labels) > 0].min()
    if smallest >= FOLDS:
        return StratifiedKFold(FOLDS, shuffle=True, random_state=seed).split(labels, labels)
    return KFold(FOLDS, shuffle=True, random_state=seed).split(labels)


def judge(logits: torch.Tensor, labels: torch.Tensor, seed: int = 0) -> dict:
    """The temperature fitted on every photo, and how well temperature scaling works on photos it
    was not fitted on: each fold's probabilities come from a T fitted on the other folds. Returns
    the temperature, ECE and negative log-likelihood raw and calibrated, and both reliability
    tables; with fewer than MIN_PHOTOS photos, T stays 1 and ``fitted`` is False.

    A temperature is declined (T stays 1, ``declined`` keeps the value fitted and ``reason`` says
    why) when it does not lower the held-out folds' negative log-likelihood, or when the photos
    cannot bound it: with every validation photo right, the likelihood only improves as T falls
    (to an end of the range searched), and nothing in the photos says how sure to be."""
    logits, labels = logits.float().cpu(), labels.long().cpu()
    bins_raw = reliability(logits.softmax(1), labels)
    result = {"photos": len(labels), "ece_raw": _ece(bins_raw), "nll_raw": negative_log_likelihood(logits, labels)}
    if len(labels) < MIN_PHOTOS:
        return {**result, "fitted": False, "temperature": 1.0}
    result["bins_raw"] = bins_raw
    calibrated = torch.empty_like(logits)
    nll = 0.0
    for fit, held in _folds(labels.numpy(), seed):
        fold_t = fit_temperature(logits[fit], labels[fit])
        calibrated[held] = (logits[held] / fold_t).softmax(1)
        nll += negative_log_likelihood(logits[held], labels[held], fold_t) * len(held)
    bins_calibrated = reliability(calibrated, labels)
    result.update({"fitted": True, "temperature": fit_temperature(logits, labels), "folds": FOLDS,
                   "ece_calibrated": _ece(bins_calibrated), "nll_calibrated": nll / len(labels),
                   "bins_calibrated": bins_calibrated})
    reason = None
    if bool((logits.argmax(1) == labels).all()):
        reason = "every validation photo is predicted right: nothing in them tells how sure the model should be"
    elif not LOWEST * 1.01 < result["temperature"] < HIGHEST / 1.01:
        reason = "it lies at an end of the range searched: the validation photos do not tell how sure to be"
    elif result["nll_calibrated"] >= result["nll_raw"]:
        reason = "it did no better on the validation photos it was not fitted on"
    if reason:  # raw it is
        result.update({"declined": result["temperature"], "temperature": 1.0, "reason": reason})
    return result


def measure(logits: torch.Tensor, labels: torch.Tensor, temperature: float) -> dict:
    """ECE, negative log-likelihood and reliability table of the raw and of the ``temperature``-scaled
    probabilities, for photos the temperature was not fitted on (``--evaluate`` on another folder).
    The reliability tables need MIN_PHOTOS photos: with fewer, the bins say nothing."""
    logits, labels = logits.float().cpu(), labels.long().cpu()
    bins_raw, bins_calibrated = reliability(logits.softmax(1), labels), reliability((logits / temperature).softmax(1), labels)
    result = {"photos": len(labels), "temperature": temperature,
              "ece_raw": _ece(bins_raw), "nll_raw": negative_log_likelihood(logits, labels),
              "ece_calibrated": _ece(bins_calibrated), "nll_calibrated": negative_log_likelihood(logits, labels, temperature)}
    if len(labels) < MIN_PHOTOS:
        return result
    return {**result, "bins_raw": bins_raw, "bins_calibrated": bins_calibrated}
