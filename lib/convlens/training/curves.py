"""What a run leaves for a person to look at: learning curves and the per-class table."""
from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from convlens.storage.rundir import RunDir  # noqa: E402


def plot_curves(history: list[dict], run: RunDir, title: str) -> list[Path]:
    """loss.png and accuracy.png: train vs validation per epoch."""
    epochs = [h["epoch"] for h in history]
    paths = []
    for name in RunDir.CURVES:
        metric = name.removesuffix(".png")
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.plot(epochs, [h[f"train_{metric}"] for h in history], "o-", label="train")
        ax.plot(epochs, [h[f"val_{metric}"] for h in history], "s-", label="validation")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(metric)
        ax.set_title(f"{title}: {metric}")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(run / name, dpi=110)
        plt.close(fig)
        paths.append(run / name)
    return paths


def write_per_class(run: RunDir, names: list[str], val: list[float], test: list[float]) -> None:
    with open(run / RunDir.PER_CLASS, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["class", "val_accuracy_at_best_epoch", "test_accuracy"])
        for name, v, t in zip(names, val, test):
            w.writerow([name, f"{v:.4f}", f"{t:.4f}"])
