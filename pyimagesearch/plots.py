"""The tutorial's training plot: loss and accuracy per epoch, in matplotlib's ggplot style; and
the learning-rate range test's curve (--find-lr), in the same style.

The grids of pictures (predictions, mistakes) are drawn by ``utils/figures.py``, the report's
confusion matrices by ``reports/``.
"""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.ticker import MaxNLocator

from .utils.figures import plt, save_figure


def plot_history(history: Sequence[dict], path: str, title: str = "Training Loss and Accuracy on Dataset",
                 best_key: str = "val_acc") -> None:
    """The tutorial's ggplot curves, on two panels (loss and accuracy live on different scales),
    with the best validation epoch marked, and where a run was resumed or stopped early."""
    epochs = [r["epoch"] for r in history]
    best = max(history, key=lambda r: r.get(best_key, -1.0))
    with plt.style.context("ggplot"):
        fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 4.5))
        loss_ax.plot(epochs, [r["train_loss"] for r in history], "o-", label="train_loss")
        loss_ax.plot(epochs, [r["val_loss"] for r in history], "o-", label="val_loss")
        acc_ax.plot(epochs, [r["train_acc"] for r in history], "o-", label="train_acc")
        acc_ax.plot(epochs, [r["val_acc"] for r in history], "o-", label="val_acc")
        resumed = [r["epoch"] for r in history if r.get("resumed")]
        stopped = [r["epoch"] for r in history if r.get("stopped_early")]
        for ax, ylabel in ((loss_ax, "Loss"), (acc_ax, "Accuracy")):
            ax.axvline(best["epoch"], color="gray", linestyle="--", linewidth=1,
                       label=f"best {best_key} {best[best_key]:.3f} (epoch {best['epoch']})")
            for k, epoch in enumerate(resumed):  # between the last saved epoch and the first resumed one
                ax.axvline(epoch - 0.5, color="tab:purple", linestyle=":", linewidth=1.5,
                           label="resumed" if k == 0 else None)
            for epoch in stopped:
                ax.axvline(epoch, color="black", linestyle="-.", linewidth=1.5, label=f"early stop (epoch {epoch})")
            ax.set_xlabel("Epoch #")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylabel(ylabel)
            ax.legend(loc="best", fontsize=8)
        acc_ax.set_ylim(0, 1.02)
        fig.suptitle(title, parse_math=False)
        fig.tight_layout()
        save_figure(fig, path)


def plot_lr_find(rates: Sequence[float], losses: Sequence[float], smoothed: Sequence[float], path: str,
                 marks: dict[str, float], title: str) -> None:
    """The range test's curve, loss against learning rate on a log axis, as fastai draws it, with
    the suggested rates marked."""
    with plt.style.context("ggplot"):
        fig, ax = plt.subplots(figsize=(7.5, 4.5))
        ax.plot(rates[:len(losses)], losses, color="tab:gray", alpha=0.4, linewidth=1, label="loss (each batch)")
        ax.plot(rates[:len(smoothed)], smoothed, color="tab:blue", label="loss (smoothed)")
        for (name, rate), color in zip(marks.items(), ("tab:red", "tab:green", "tab:purple")):
            ax.axvline(rate, color=color, linestyle="--", linewidth=1.2, label=f"{name}: {rate:.1e}")
        ax.set_xscale("log")
        ax.set_xlabel("Learning rate")
        ax.set_ylabel("Loss")
        finite = [v for v in (*losses, *smoothed) if v == v and abs(v) != float("inf")]
        low, high = min(finite), max(smoothed[: max(1, len(smoothed) // 2)])
        ax.set_ylim(low - 0.1 * (high - low + 1e-9), high + 0.5 * (high - low + 1e-9))
        ax.legend(loc="best", fontsize=8)
        ax.set_title(title, parse_math=False)
        fig.tight_layout()
        save_figure(fig, path)
