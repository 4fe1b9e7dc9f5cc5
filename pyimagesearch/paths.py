"""Every file name a run derives from another: one place, so the scripts, the checkpointer,
the report and the export agree on them."""

from __future__ import annotations

import os


def _beside(path: str, suffix: str, default_ext: str = ".pth") -> str:
    stem, ext = os.path.splitext(path)
    return f"{stem}{suffix}{ext or default_ext}"


def best_model_path(model_path: str) -> str:
    """output/finetune_model.pth -> output/finetune_model_best.pth"""
    return _beside(model_path, "_best")


def resume_path(model_path: str) -> str:
    """output/finetune_model.pth -> output/finetune_model_resume.pth"""
    return _beside(model_path, "_resume")


def history_path(plot_path: str, extension: str = ".json") -> str:
    """output/finetune.png -> output/finetune_history.json (or .csv)"""
    return f"{os.path.splitext(plot_path)[0]}_history{extension}"


def report_prefix(model_path: str) -> str:
    """output/finetune_model.pth -> output/finetune_model (report files are named after the model)."""
    return os.path.splitext(model_path)[0]


def onnx_metadata_path(onnx_path: str) -> str:
    """output/finetune_model.onnx -> output/finetune_model.json"""
    return f"{os.path.splitext(onnx_path)[0]}.json"


def feature_cache_folder(setting: str, model_path: str) -> str | None:
    """--feature-cache-dir: auto = feature_cache/ beside --model, none = no persistent cache."""
    if not setting or setting.lower() == "none":
        return None
    if setting.lower() == "auto":
        return os.path.join(os.path.dirname(model_path), "feature_cache")
    return setting
