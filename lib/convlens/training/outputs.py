"""What a run leaves for a person: curves, the per-class table and summary.json."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_curves(history: list[dict], out: Path, title: str) -> list[Path]:
    """loss.png and accuracy.png: train vs validation per epoch."""
    epochs = [h["epoch"] for h in history]
    paths = []
    for metric in ("loss", "accuracy"):
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
        path = Path(out) / f"{metric}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def write_per_class(path: Path, names: list[str], val: list[float], test: list[float]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["class", "val_accuracy_at_best_epoch", "test_accuracy"])
        for name, v, t in zip(names, val, test):
            w.writerow([name, f"{v:.4f}", f"{t:.4f}"])


def write_json(path: Path, obj) -> None:
    from convlens.checkpoint import write_atomic
    write_atomic(Path(path), (json.dumps(obj, indent=2) + "\n").encode())


def read_json(path: Path):
    return json.loads(Path(path).read_text())
