"""Rows of the analysis tables W&B shows (tracking/media.py), from a method's raw arrays.

Pure functions: arrays in, (columns, rows) out, images as uint8 arrays (H, W) or (H, W, 3).
Each method that has a table keeps the arrays it needs in <method>.npz (RAW_KEYS).
"""
from __future__ import annotations

import numpy as np

RAW_KEYS = {  # method -> result keys saved to <method>.npz
    "knn": ("queries", "query_labels", "neighbours", "neighbour_labels", "neighbour_sims", "names"),
    "embeddings": ("tsne", "pca", "labels", "names", "thumbs"),
    "cam": ("images", "maps", "pred", "true", "conf", "picks", "names"),
    "gradcam": ("images", "maps", "pred", "true", "conf", "picks", "names"),
}


def raw_arrays(method: str, result: dict, classes: list[str]) -> dict[str, np.ndarray] | None:
    """The arrays of `method`'s table; names: the result's own label names (a rotation
    network's CAMs name rotations), else the dataset's classes."""
    keys = RAW_KEYS.get(method)
    if keys is None:
        return None
    out = {k: np.asarray(result[k]) for k in keys if k in result and k != "names"}
    out["names"] = np.asarray(list(result.get("names", classes)), dtype=str)
    return out


def to_uint8(img: np.ndarray) -> np.ndarray:
    """float [0, 1] (H, W) or (H, W, 3) -> uint8 of the same shape."""
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def heat_overlay(img: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """(H, W[, 3]) image in [0, 1] and (H, W) map in [0, 1] -> (H, W, 3) uint8, jet at half weight."""
    from matplotlib import colormaps
    rgb = np.repeat(img[..., None], 3, axis=-1) if img.ndim == 2 else img
    jet = colormaps["jet"](np.clip(heat, 0, 1))[..., :3]
    return to_uint8(0.5 * rgb + 0.5 * jet)


def knn_rows(r: dict) -> tuple[list[str], list[list]]:
    """One row per query: the query, its k neighbours (image columns), their labels and similarity."""
    names, k = r["names"], r["neighbours"].shape[1]
    columns = ["query", "label", *[f"neighbour_{i + 1}" for i in range(k)], "neighbour_labels", "similarities"]
    rows = []
    for q in range(len(r["queries"])):
        rows.append([to_uint8(r["queries"][q]), str(names[r["query_labels"][q]]),
                     *[to_uint8(n) for n in r["neighbours"][q]],
                     ", ".join(str(names[l]) for l in r["neighbour_labels"][q]),
                     ", ".join(f"{s:.3f}" for s in r["neighbour_sims"][q])])
    return columns, rows


def embedding_rows(r: dict) -> tuple[list[str], list[list]]:
    """One row per point: t-SNE and PCA coordinates, class and thumbnail (an interactive scatter)."""
    names = r["names"]
    columns = ["tsne_x", "tsne_y", "pca_x", "pca_y", "class", "thumbnail"]
    rows = [[float(t[0]), float(t[1]), float(p[0]), float(p[1]), str(names[y]), to_uint8(img)]
            for t, p, y, img in zip(r["tsne"], r["pca"], r["labels"], r["thumbs"])]
    return columns, rows


def cam_rows(r: dict) -> tuple[list[str], list[list]]:
    """One row per picked image (per class the most confident right and wrong): the image, its
    map over it, true and predicted class, confidence."""
    names = r["names"]
    rows = []
    for i in sorted({int(i) for i in r["picks"].flatten() if i >= 0}):
        m = r["maps"][i]
        if m.ndim != 2:
            continue
        unit = (m - m.min()) / (np.ptp(m) + 1e-12)
        rows.append([to_uint8(r["images"][i]), heat_overlay(r["images"][i], unit), str(names[r["true"][i]]),
                     str(names[r["pred"][i]]), float(r["conf"][i])])
    return ["image", "overlay", "true", "predicted", "confidence"], rows


BUILDERS = {"knn": knn_rows, "embeddings": embedding_rows, "cam": cam_rows, "gradcam": cam_rows}
