"""inference.py --audit: which photos of a class-folder tree are probably mislabeled, and which
belong to no class.

The checkpoint's body turns each photo into features (kept in the feature cache beside the model,
so a second audit of the same photos skips the body); a k-fold linear head and cleanlab then rank
the suspects (label_issues.py). Photos are only read: nothing is moved, renamed or deleted.
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch
from tqdm import tqdm

from .. import feature_cache
from ..create_dataloaders import eval_image_folder, make_loader
from ..data.images import IMAGE_EXTENSIONS
from ..model import Body
from ..utils.digest import folder_digest
from ..utils.fileio import NOT_REGULAR
from ..utils.text import printable
from ..utils.weights import weights_identity
from . import audit_report
from .audit_check import check_counts
from .label_issues import find_suspects
from .predict import ImageFiles, Predictor, collate_readable


def _cache(predictor: Predictor, model_path: str, ds, cache_dir: str | None, width: int):
    """Where the audit keeps the body's features of ``ds``: keyed by the checkpoint, the photos'
    contents and how the body runs."""
    if not cache_dir:
        return None
    meta, compute = predictor.meta, predictor.compute
    fields = {"format": feature_cache.FORMAT, "purpose": "audit", "torch": str(torch.__version__),
              "model": weights_identity(model_path), "images": folder_digest(ds.samples, ds.root, content=True),
              "image_size": meta["image_size"], "mean": list(meta["mean"]), "std": list(meta["std"]), "views": 0,
              "device": compute.device.type, "amp": str(compute.amp_dtype), "channels_last": compute.channels_last}
    shapes = {"plain": len(ds), "train": 0, "width": width, "classes": len(ds.classes)}
    return feature_cache.FeatureCache(cache_dir, fields, shapes, plain_name="audited photos'")


def _features(predictor: Predictor, model_path: str, ds, cache_dir: str | None, batch_size: int,
              progress: bool) -> tuple[torch.Tensor, list[int], list[tuple[str, str]]]:
    """The body's features of the photos that decode, their indices in ``ds.samples``, and the
    (path, reason) of those that do not. From the feature cache when its key matches; stored there
    only when every photo decoded, so that a cached set always covers the whole folder."""
    body = Body(predictor.model)
    cache = _cache(predictor, model_path, ds, cache_dir, body.width)
    stored = cache.reuse() if cache else None
    if stored is not None:
        return stored["plain"][0], list(range(len(ds))), []
    paths = [path for path, _ in ds.samples]
    loader = make_loader(ImageFiles(paths, predictor.transform(), predictor.meta["image_size"]), batch_size,
                         shuffle=False, num_workers=predictor.num_workers, device=str(predictor.compute.device),
                         collate_fn=collate_readable)
    features, kept, failures = [], [], []
    with torch.inference_mode():
        for images, indices, failed in tqdm(loader, desc="features", unit="batch", disable=not progress, leave=False):
            failures += [(paths[i], reason) for i, reason in failed]
            if indices:
                features.append(predictor.compute.infer(body, images).float().cpu())
                kept += indices
    features = torch.cat(features) if features else torch.empty(0, body.width)
    if cache and not failures:
        cache.save((features, torch.tensor(ds.targets, dtype=torch.long)), [])
        print(f"[INFO] stored the body's features in {cache.path}; the next audit of these photos reuses them")
    return features, kept, failures


def audit_folder(predictor: Predictor, model_path: str, folder: str, output: str, *, folds: int, seed: int,
                 batch_size: int, cache_dir: str | None, progress: bool) -> dict:
    """Rank the photos of ``folder`` by how likely their label is wrong, flag outliers, and write
    <output>/<model>_audit.csv/.json/.png; returns the summary."""
    ds = eval_image_folder(folder, predictor.meta["image_size"], predictor.meta["mean"], predictor.meta["std"])
    for path in ds.skipped:
        print(f"[WARN] skipped {printable(path)}: {NOT_REGULAR}")
    for path in ds.ignored:
        print(f"[WARN] skipped {printable(path)}: not an image file by its extension ({', '.join(IMAGE_EXTENSIONS)}); "
              "build_dataset.py leaves it out too")
    print(f"[INFO] auditing {len(ds)} photos of {len(ds.classes)} classes in {printable(folder)}")
    features, kept, failures = _features(predictor, model_path, ds, cache_dir, batch_size, progress)
    for path, reason in failures:
        print(f"[WARN] skipped {printable(path)}: {reason}")
    if failures:
        print(f"[WARN] {len(failures)} photo(s) could not be read (listed above) and are left out of the audit; its "
              "features are not kept until every photo reads. Fix or remove them (build_dataset.py skips them too).")
    labels = [ds.targets[i] for i in kept]
    check_counts(labels, ds.classes, folder, folds)
    started = time.perf_counter()
    suspects = find_suspects(features.numpy(), np.asarray(labels), folds, seed)
    seconds = time.perf_counter() - started
    paths = [ds.samples[i][0] for i in kept]
    rows = audit_report.rows(suspects, paths, ds.classes)
    label_errors, outliers = int(suspects.label_issue.sum()), int(suspects.outlier.sum())
    summary = {"model": model_path, "folder": folder, "audited": len(kept), "folds": folds, "seed": seed,
               "skipped": [{"path": path, "reason": reason} for path, reason in failures],
               "out_of_fold_accuracy": suspects.out_of_fold_accuracy, "label_errors": label_errors,
               "outliers": outliers, "seconds_after_features": round(seconds, 2),
               "per_class": audit_report.per_class_counts(rows, ds.classes)}
    prefix = os.path.join(output, f"{predictor.stem}_audit")
    written = audit_report.write(rows, prefix, summary)
    picture = audit_report.montage([row for row in rows if row["kind"]], f"{prefix}.png")
    header = (f"[INFO] {label_errors} likely label error(s) and {outliers} outlier(s) among {len(kept)} photos "
              f"({folds}-fold linear head on the body's features: {suspects.out_of_fold_accuracy:.3f} out-of-fold "
              f"accuracy; {seconds:.1f}s after the features)")
    print("\n".join(audit_report.summary_lines(rows, ds.classes, header)))
    print(f"[INFO] wrote {', '.join(written + ([picture] if picture else []))}. No photo was moved, renamed or "
          f"deleted; to leave photos out, keep the CSV rows you agree with and run "
          f"`python build_dataset.py --exclude {written[0]}`.")
    return summary
