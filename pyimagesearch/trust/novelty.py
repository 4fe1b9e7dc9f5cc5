"""How unlike every class the model knows a photo is, from the body's features: how far it lies
from the training photos nearest to it, measured two ways.

- **What fires** (the features' direction): cleanlab's ``OutOfDistribution``, the score ``--audit``
  ranks outliers by, averages the cosine distance to the K nearest training photos.
- **How strongly** (their magnitude): the same average with the Euclidean distance between
  log(1 + feature) vectors. A fine-tuned body can answer a picture of noise with the pattern of a
  known class, only many times stronger or weaker; the cosine cannot see that.

Each distance becomes the share of validation photos (photos the reference never saw) that lie
closer, and a photo's novelty is the larger of the two shares: 0.5 is as unusual as the median
validation photo, 1 is beyond every one of them (beyond, the novelty grows with the log of the
distance over the farthest validation photo's). A photo is flagged as unlike every class beyond
the PERCENTILE-th percentile of the validation photos' own novelty, so about 5 % of photos like
them are flagged too. A checkpoint keeps the reference (at most MAX_REFERENCE training photos'
features, as float16) and the validation photos' distances.
"""

from __future__ import annotations

import numpy as np
import torch

K = 10  # cleanlab's default, and the audit's
PERCENTILE = 95.0
MAX_REFERENCE = 5000  # 5,000 x 2,048 float16 features: 20 MB at most beside ResNet50's 94 MB
KINDS = ("direction", "magnitude")


def _magnitude(features: np.ndarray) -> np.ndarray:
    return np.log1p(np.clip(features, 0, None))


class _Distances:
    """The mean distance of photos to their K nearest reference photos, both ways: the index
    cleanlab's OutOfDistribution fits (cosine), and scikit-learn's Euclidean one on log features."""

    def __init__(self, reference: np.ndarray, k: int) -> None:
        from cleanlab.outlier import OutOfDistribution  # only here: cleanlab takes a second to import
        from sklearn.neighbors import NearestNeighbors

        self.k = min(k, len(reference) - 1)
        scorer = OutOfDistribution(params={"k": self.k})
        scorer.fit(features=reference, verbose=False)
        # the distances cleanlab's score is exp(-x) of, read before the exponential (which rounds
        # far photos to a score of 0 and loses their order)
        self.direction = scorer.params["knn"]
        self.magnitude = NearestNeighbors(n_neighbors=self.k, metric="euclidean").fit(_magnitude(reference))

    def __call__(self, features: np.ndarray) -> dict[str, np.ndarray]:
        features = np.asarray(features, dtype=np.float32)
        return {"direction": self.direction.kneighbors(features, n_neighbors=self.k)[0].mean(1),
                "magnitude": self.magnitude.kneighbors(_magnitude(features), n_neighbors=self.k)[0].mean(1)}


def _novelty(distances: dict[str, np.ndarray], validation: dict[str, np.ndarray]) -> np.ndarray:
    """The larger, over both ways, of the share of validation photos closer to the reference."""
    shares = []
    for kind in KINDS:
        known, found = np.sort(validation[kind]), distances[kind]
        share = np.searchsorted(known, found, side="left") / len(known)
        beyond = np.log(np.maximum(found, 1e-12) / max(known[-1], 1e-12))
        shares.append(np.where(found > known[-1], 1.0 + beyond, share))
    return np.max(shares, axis=0)


def fit(train_features: torch.Tensor, val_features: torch.Tensor, seed: int = 0) -> dict:
    """What a checkpoint keeps to score new photos: the reference features (float16), K, the
    validation photos' distances both ways, and the threshold at the PERCENTILE-th percentile
    of their novelty."""
    order = torch.randperm(len(train_features), generator=torch.Generator().manual_seed(seed))[:MAX_REFERENCE]
    reference = train_features[order.sort().values].to(torch.float16)
    validation = _Distances(reference.float().numpy(), K)(val_features.float().numpy())
    scores = _novelty(validation, validation)
    return {"reference": reference, "k": K, "percentile": PERCENTILE,
            "validation_distances": {kind: torch.from_numpy(validation[kind]).float() for kind in KINDS},
            "threshold": float(np.percentile(scores, PERCENTILE))}


class Novelty:
    """A checkpoint's novelty reference, ready to score photos: ``score`` gives each photo's
    novelty, ``threshold`` the value beyond which a photo counts as unlike every class."""

    def __init__(self, state: dict, percentile: float = PERCENTILE) -> None:
        self.distances = _Distances(state["reference"].float().numpy(), int(state["k"]))
        self.validation = {kind: state["validation_distances"][kind].numpy() for kind in KINDS}
        self.percentile = percentile
        self.threshold = float(np.percentile(_novelty(self.validation, self.validation), percentile))

    def score(self, features: torch.Tensor) -> np.ndarray:
        return _novelty(self.distances(features.float().cpu().numpy()), self.validation)

    def flags(self, scores: np.ndarray) -> np.ndarray:
        return np.asarray(scores) > self.threshold


def extra_bytes(state: dict) -> int:
    """What the reference and the validation distances add to a checkpoint."""
    tensors = [state["reference"], *state["validation_distances"].values()]
    return sum(t.numel() * t.element_size() for t in tensors)
