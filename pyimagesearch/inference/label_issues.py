"""Which photos are probably mislabeled, and which belong to no class: confident learning over
the body's features.

Each photo is predicted by a linear head that never saw it (stratified k-fold cross-validation of
a logistic regression over the features), and cleanlab compares those out-of-fold probabilities
with the given labels (confident learning, Northcutt et al. 2021). Outliers come from cleanlab's
OutOfDistribution score on the features (the mean distance to the nearest neighbours), flagged by
the rule cleanlab's Datalab applies by default.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

FOLDS = 5
# from this many photos on, the folds are fitted side by side in worker processes (one per core,
# joblib's): a fit of 3,000 photos' features takes seconds, while starting the workers takes about one
PARALLEL_FROM = 1000
# Datalab flags a photo whose mean k-NN distance lies beyond Q3 + (1 / 0.37037 - 1) x IQR of them all
DATALAB_OUTLIER_THRESHOLD = 0.37037


@dataclass
class Suspects:
    """Per photo: the given and the suggested class, cleanlab's label quality (the out-of-fold
    probability of the given class; low is suspect), the outlier score (low is atypical), and
    what was flagged. ``ranking`` orders every photo from most to least suspect."""

    given: np.ndarray
    suggested: np.ndarray
    label_quality: np.ndarray
    outlier_score: np.ndarray
    label_issue: np.ndarray
    outlier: np.ndarray
    out_of_fold_accuracy: float

    @property
    def ranking(self) -> np.ndarray:
        """Flagged label errors first (by label quality), then outliers (by score), then the rest
        by label quality."""
        group = np.where(self.label_issue, 0, np.where(self.outlier, 1, 2))
        return np.lexsort((np.where(group == 1, self.outlier_score, self.label_quality), group))

    def kind(self, index: int) -> str:
        kinds = [name for name, flagged in (("label", self.label_issue), ("outlier", self.outlier)) if flagged[index]]
        return "+".join(kinds)


def too_small(labels: Sequence[int], class_names: Sequence[str], folds: int) -> list[tuple[str, int]]:
    """The classes with fewer photos than folds: each fold's head must see every class."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(class_names))
    return [(name, int(count)) for name, count in zip(class_names, counts) if count < folds]


def out_of_fold_probabilities(features: np.ndarray, labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """(N, classes) probabilities, each row from a head trained on the other folds: standardised
    features, then scikit-learn's default logistic regression (multinomial, L2, C=1)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    head = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    splits = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    workers = min(folds, os.cpu_count() or 1) if len(labels) >= PARALLEL_FROM else 1
    with warnings.catch_warnings():  # a head that stops short of full convergence still ranks well
        warnings.filterwarnings("ignore", message=".*(converge|ITERATIONS REACHED).*")
        return cross_val_predict(head, features, labels, cv=splits, method="predict_proba", n_jobs=workers)


def _datalab_outliers(scores: np.ndarray) -> np.ndarray:
    """Datalab's default rule. OutOfDistribution's score is exp(-c x mean k-NN distance), so
    -log(score) is that distance times a positive constant, and the fence on it flags the same photos."""
    distance = -np.log(np.clip(scores, 1e-300, None))
    q1, q3 = np.percentile(distance, [25, 75])
    return distance > q3 + (1 / DATALAB_OUTLIER_THRESHOLD - 1) * (q3 - q1)


def find_suspects(features: np.ndarray, labels: np.ndarray, folds: int = FOLDS, seed: int = 0) -> Suspects:
    """Likely label errors and outliers among photos with these features and given labels."""
    from cleanlab.filter import find_label_issues
    from cleanlab.outlier import OutOfDistribution
    from cleanlab.rank import get_label_quality_scores

    labels = np.asarray(labels, dtype=np.int64)
    features = np.asarray(features, dtype=np.float32)
    probabilities = out_of_fold_probabilities(features, labels, folds, seed)
    issues = find_label_issues(labels, probabilities, n_jobs=1)  # n_jobs=1: no worker pool of its own
    quality = get_label_quality_scores(labels, probabilities)
    neighbours = min(10, len(labels) - 1)
    scores = OutOfDistribution(params={"k": neighbours}).fit_score(features=features, verbose=False)
    suggested = probabilities.argmax(1)
    return Suspects(given=labels, suggested=suggested, label_quality=quality, outlier_score=scores,
                    label_issue=np.asarray(issues, dtype=bool), outlier=_datalab_outliers(scores),
                    out_of_fold_accuracy=float((suggested == labels).mean()))
