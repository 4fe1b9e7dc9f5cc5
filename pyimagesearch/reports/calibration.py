"""The reliability diagram: how often the model is right at each confidence it claims, before and
after temperature scaling, from the reliability tables ``trust/temperature.py`` measures."""

from __future__ import annotations

from ..utils.figures import drawable_lines, plt, save_figure

SUFFIX = "_calibration.png"


def _panel(ax, bins: list[dict], title: str) -> None:
    width = bins[0]["upper"] - bins[0]["lower"]
    centres = [(row["lower"] + row["upper"]) / 2 for row in bins]
    used = [row["count"] > 0 for row in bins]
    accuracy = [row["accuracy"] if u else 0.0 for row, u in zip(bins, used)]
    ax.bar(centres, accuracy, width=width * 0.95, color="#4c72b0", edgecolor="black", label="accuracy")
    for centre, row, u in zip(centres, bins, used):
        if u:  # the gap between what the model claims and what it gets, in red
            low, high = sorted((row["accuracy"], row["confidence"]))
            ax.bar(centre, high - low, bottom=low, width=width * 0.95, fill=False, hatch="///", edgecolor="#cc2222",
                   label="gap to the confidence" if centre == centres[used.index(True)] else None)
            ax.text(centre, 0.015, str(row["count"]), ha="center", fontsize=7, color="white", rotation=90)
    ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfectly calibrated")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("confidence (top-1 probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(title, fontsize=10, parse_math=False)
    ax.legend(loc="upper left", fontsize=8)


def plot_reliability(judged: dict, path: str, title: str) -> None:
    """Raw probabilities on the left, temperature-scaled on the right (when there is a temperature
    to judge), each bin's photo count at its foot, the ECE in each panel's title."""
    calibrated = "bins_calibrated" in judged
    fig, axes = plt.subplots(1, 2 if calibrated else 1, figsize=(11 if calibrated else 5.5, 5), squeeze=False)
    _panel(axes[0][0], judged["bins_raw"], f"raw softmax: ECE {judged['ece_raw']:.3f}")
    if calibrated:
        used = judged.get("declined", judged["temperature"])
        _panel(axes[0][1], judged["bins_calibrated"], f"temperature {used:.2f}: ECE {judged['ece_calibrated']:.3f}"
               + (" (declined: no better)" if "declined" in judged else ""))
    fig.suptitle(drawable_lines(title), parse_math=False)
    fig.tight_layout()
    save_figure(fig, path)


def judged_on(judged: dict) -> str:
    """Which photos the figures come from, and whether the temperature saw them."""
    if judged.get("note"):
        return f"{judged['photos']} photos; {judged['note']}"
    if "folds" in judged:
        return (f"{judged['photos']} validation photos, each fold judged by a temperature fitted on the other "
                f"{judged['folds'] - 1} folds")
    if judged.get("fitted", True) is False:
        return f"{judged['photos']} photos, too few to fit a temperature"
    return f"{judged['photos']} photos the temperature was not fitted on"
