"""Drawing only: arrays in, matplotlib figures out, saved atomically as PNG.

Nothing here computes analysis results; every function takes what a method's
`compute` returned and lays it out.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


@dataclass
class Panel:
    suffix: str  # file is <method>[_<suffix>].png
    figure: plt.Figure
    caption: str


def unit(a: np.ndarray, axes=None) -> np.ndarray:
    """Min-max scale to [0, 1] over `axes` (default all); constant input -> 0.5."""
    lo = a.min(axis=axes, keepdims=True)
    hi = a.max(axis=axes, keepdims=True)
    span = hi - lo
    return np.where(span > 0, (a - lo) / np.where(span > 0, span, 1), 0.5)


def signed_unit(a: np.ndarray, axes=None) -> np.ndarray:
    """Map to [0, 1] with 0 at 0.5 (gradients, kernels with sign)."""
    m = np.abs(a).max(axis=axes, keepdims=True)
    return 0.5 + 0.5 * a / np.where(m > 0, m, 1)


def mosaic(tiles: np.ndarray, ncols: int, pad: int = 1, fill: float = 1.0) -> np.ndarray:
    """(N, H, W[, 3]) tiles in [0, 1] -> one (rows*(H+pad), ncols*(W+pad)[, 3]) image."""
    n, h, w = tiles.shape[:3]
    rows = -(-n // ncols)
    out = np.full((rows * (h + pad) - pad, ncols * (w + pad) - pad) + tiles.shape[3:], fill, dtype=float)
    for i in range(n):
        r, c = divmod(i, ncols)
        out[r * (h + pad): r * (h + pad) + h, c * (w + pad): c * (w + pad) + w] = tiles[i]
    return out


def show(ax, img: np.ndarray, title: str | None = None, cmap="gray", **kw) -> None:
    ax.imshow(img, cmap=cmap if img.ndim == 2 else None, interpolation="nearest", **kw)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=7)


def image_table(cells: list[list[np.ndarray | None]], titles: list[list[str]] | None = None,
                row_labels: list[str] | None = None, col_labels: list[str] | None = None,
                suptitle: str = "", overlay: list[list[np.ndarray | None]] | None = None,
                size: float = 1.3) -> plt.Figure:
    """A grid of images (None leaves a cell blank); `overlay` heatmaps drawn on top in jet."""
    nr, nc = len(cells), max(len(r) for r in cells)
    fig, axes = plt.subplots(nr, nc, figsize=(size * nc + 0.8, size * nr + 0.6), squeeze=False)
    for i in range(nr):
        for j in range(nc):
            ax = axes[i][j]
            img = cells[i][j] if j < len(cells[i]) else None
            if img is None:  # blank, but keep the row label
                ax.set_xticks([]), ax.set_yticks([])
                for spine in ax.spines.values():
                    spine.set_visible(False)
                if row_labels and j == 0:
                    ax.set_ylabel(row_labels[i], fontsize=7)
                continue
            show(ax, img, titles[i][j] if titles else None)
            if overlay is not None and overlay[i][j] is not None:
                ax.imshow(overlay[i][j], cmap="jet", alpha=0.45, interpolation="bilinear",
                          extent=(-0.5, img.shape[1] - 0.5, img.shape[0] - 0.5, -0.5))
            if row_labels and j == 0:
                ax.set_ylabel(row_labels[i], fontsize=7)
            if col_labels and i == 0 and not (titles and titles[i][j]):
                ax.set_title(col_labels[j], fontsize=7)
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout()
    return fig


def mosaic_figure(parts: list[tuple[str, np.ndarray]], suptitle: str, cmap="gray") -> plt.Figure:
    """Side-by-side mosaics, each with its own title."""
    fig, axes = plt.subplots(1, len(parts), figsize=(4.2 * len(parts), 4.6), squeeze=False)
    for ax, (title, img) in zip(axes[0], parts):
        show(ax, img, title, cmap=cmap)
    fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout()
    return fig


def scatter(panels: list[tuple[str, np.ndarray]], labels: np.ndarray, names: list[str],
            suptitle: str) -> plt.Figure:
    """2-D points (N, 2) per panel coloured by integer label, with one shared legend."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels) + 1.5, 4.8), squeeze=False)
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    for ax, (title, xy) in zip(axes[0], panels):
        for k, name in enumerate(names):
            sel = labels == k
            if sel.any():
                ax.scatter(xy[sel, 0], xy[sel, 1], s=8, color=cmap(k % cmap.N), label=name)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    handles, texts = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, texts, loc="center right", fontsize=7, markerscale=2)
    fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout(rect=(0, 0, 0.85, 1))
    return fig


def matrix(m: np.ndarray, names: list[str], title: str, xlabel: str, ylabel: str) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(1.2 + 0.45 * len(names), 1.0 + 0.45 * len(names)))
    im = ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(len(names)), names, rotation=60, fontsize=7, ha="right")
    ax.set_yticks(range(len(names)), names, fontsize=7)
    for (i, j), v in np.ndenumerate(m):
        ax.text(j, i, f"{v:g}", ha="center", va="center", fontsize=6,
                color="white" if v > m.max() / 2 else "black")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def heatmap(m: np.ndarray, rows: list[str], cols: list[str], title: str, xlabel: str, ylabel: str,
            vmax: float = 1.0) -> plt.Figure:
    """A matrix in [0, vmax] with its values written in the cells (CKA between stages)."""
    fig, ax = plt.subplots(figsize=(1.8 + 0.7 * len(cols), 1.4 + 0.5 * len(rows)))
    im = ax.imshow(m, cmap="viridis", vmin=0, vmax=vmax, aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=30, fontsize=7, ha="right")
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    for (i, j), v in np.ndenumerate(m):
        ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="white" if v < vmax / 2 else "black")
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def bars(values: np.ndarray, names: list[str], title: str, ylabel: str) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(1.5 + 0.5 * len(names), 3.2))
    ax.bar(range(len(names)), values, color="tab:blue")
    ax.set_xticks(range(len(names)), names, rotation=60, fontsize=7, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def lines(panels: list[tuple[str, np.ndarray, dict[str, np.ndarray]]], suptitle: str, xlabel: str,
          ylabel: str) -> plt.Figure:
    """Side-by-side line plots: each panel (title, x, {label: y}), one legend per panel."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.6), squeeze=False)
    for ax, (title, x, ys) in zip(axes[0], panels):
        for label, y in ys.items():
            ax.plot(x, y, marker=".", label=label)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout()
    return fig


def save_png(fig: plt.Figure, path: Path, dpi: int = 110) -> Path:
    """Render to a temp file beside `path`, then rename over it (readers never see half a PNG)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        fig.savefig(tmp, format="png", dpi=dpi)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return path


def compose(images: list[list[Path | None]], row_labels: list[str], col_labels: list[str],
            suptitle: str, width: float = 4.0) -> plt.Figure:
    """Existing PNGs laid out in a table (for compare pages and epoch strips)."""
    nr, nc = len(images), max(len(r) for r in images)
    fig, axes = plt.subplots(nr, nc, figsize=(width * nc + 1, width * 0.8 * nr + 0.6), squeeze=False)
    for i in range(nr):
        for j in range(nc):
            ax = axes[i][j]
            ax.axis("off")
            path = images[i][j] if j < len(images[i]) else None
            if path is not None and Path(path).is_file():
                ax.imshow(plt.imread(path))
            if i == 0:
                ax.set_title(col_labels[j], fontsize=9)
            if j == 0:
                ax.text(-0.02, 0.5, row_labels[i], transform=ax.transAxes, rotation=90,
                        ha="right", va="center", fontsize=9)
    fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    return fig
