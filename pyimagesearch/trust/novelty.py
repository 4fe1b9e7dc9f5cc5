"""How unlike every class the model knows a photo is: its distance, in the body's feature space, to
the training photos nearest to it.

cleanlab's ``OutOfDistribution`` (the same score ``--audit`` ranks outliers by) averages the cosine
distance to the K nearest training photos, and divides it by the median of that average among the
training photos themselves. A novelty of 1 is as far as a typical training photo lies from its
neighbours; a cat in a model of flowers lies much further.

Where "much further" begins is read from the validation photos, which the score never saw: a photo
beyond their PERCENTILE-th percentile is flagged, so about 5 % of photos like the validation ones
are flagged too. The reference set (at most MAX_REFERENCE training photos' features, as float16)
and every validation photo's score are what a checkpoint keeps.
"""

from __future__ import annotations

import numpy as np
import torch

K = 10  # cleanlab's default, and the audit's
PERCENTILE = 95.0
MAX_REFERENCE = 5000  # 5,000 x 2,048 float16 features: 20 MB at most beside ResNet50's 94 MB


def _scorer(reference: np.ndarray, k: int):
    from cleanlab.outlier import OutOfDistribution  # only here: cleanlab takes a second to import

    scorer = OutOfDistribution(params={"k": min(k, len(reference) - 1)})
    scorer.fit(features=reference, verbose=False)
    return scorer


def _novelty(scorer, features: np.ndarray) -> np.ndarray:
    """The mean distance to the K nearest training photos over the training photos' median of it:
    what cleanlab's score is exp(-x) of, read before the exponential (which would round far photos
    to a score of 0 and lose their order)."""
    k = scorer.params["k"]
    distances, _ = scorer.params["knn"].kneighbors(np.asarray(features, dtype=np.float32), n_neighbors=k)
    return distances.mean(1) / scorer.params["scaling_factor"]


def fit(train_features: torch.Tensor, val_features: torch.Tensor, seed: int = 0) -> dict:
    """What a checkpoint keeps to score new photos: the reference features (float16), K, every
    validation photo's novelty, and the threshold at the PERCENTILE-th percentile of those."""
    order = torch.randperm(len(train_features), generator=torch.Generator().manual_seed(seed))[:MAX_REFERENCE]
    reference = train_features[order.sort().values].to(torch.float16)
    scores = _novelty(_scorer(reference.float().numpy(), K), val_features.float().numpy())
    return {"reference": reference, "k": K, "validation_scores": torch.from_numpy(np.sort(scores)).float(),
            "percentile": PERCENTILE, "threshold": float(np.percentile(scores, PERCENTILE))}


class Novelty:
    """A checkpoint's novelty reference, ready to score photos: ``score`` gives each photo's
    novelty, ``threshold`` the value beyond which a photo counts as unlike every class."""

    def __init__(self, state: dict, percentile: float = PERCENTILE) -> None:
        self.reference = state["reference"].float().numpy()
        self.scorer = _scorer(self.reference, int(state["k"]))
        self.percentile = percentile
        self.threshold = float(np.percentile(state["validation_scores"].numpy(), percentile))

    def score(self, features: torch.Tensor) -> np.ndarray:
        return _novelty(self.scorer, features.float().cpu().numpy())

    def flags(self, scores: np.ndarray) -> np.ndarray:
        return np.asarray(scores) > self.threshold


def extra_bytes(state: dict) -> int:
    """What the reference and the validation scores add to a checkpoint."""
    return sum(t.numel() * t.element_size() for t in state.values() if isinstance(t, torch.Tensor))
