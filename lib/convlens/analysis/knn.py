"""k-nearest neighbours on cosine similarity: the maths, and the analysis method built on it.

Weighted kNN classification as in DINO's eval_knn: pure tensor functions that build the (Q, K)
similarity matrix one chunk of queries at a time and never hold it whole (top_k_cosine,
knn_predict, knn_classify), which the feature probes (probes.py) use too. The analysis
method "knn": the nearest training images by cosine similarity of penultimate features, and the
kNN classifier they make (a similarity-weighted vote).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from convlens.analysis import base, plots
from convlens.analysis.registry import register


def top_k_cosine(queries: torch.Tensor, keys: torch.Tensor, k: int,
                 chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """(Q, D) queries, (K, D) keys -> similarities (Q, k') and indices (Q, k') of the
    k' = min(k, K) most similar keys by cosine, most similar first."""
    q = F.normalize(queries.float(), dim=1)
    kn = F.normalize(keys.float(), dim=1)
    sims, idx = [], []
    for i in range(0, len(q), chunk):
        s, j = (q[i:i + chunk] @ kn.T).topk(min(k, len(kn)), dim=1)
        sims.append(s), idx.append(j)
    return torch.cat(sims), torch.cat(idx)


def knn_predict(sims: torch.Tensor, idx: torch.Tensor, key_labels: torch.Tensor, n_classes: int,
                temperature: float | None = None) -> torch.Tensor:
    """Each query's class (Q,) by its neighbours' summed vote weights per class.

    The weight of a neighbour is its similarity (temperature None), or exp(sim / T), DINO's
    choice, which for small T lets the closest neighbours dominate."""
    weights = sims if temperature is None else (sims / temperature).exp()
    votes = torch.zeros(len(sims), n_classes, dtype=weights.dtype, device=weights.device)
    votes.scatter_add_(1, key_labels.to(idx.device)[idx], weights)
    return votes.argmax(1)


def knn_classify(train_f: torch.Tensor, train_y: torch.Tensor, test_f: torch.Tensor, k: int,
                 temperature: float | None, num_classes: int, chunk: int = 1024) -> torch.Tensor:
    """Predicted classes (Q,) of test features (Q, D) from labelled train features (N, D)."""
    sims, idx = top_k_cosine(test_f, train_f, k, chunk)
    return knn_predict(sims, idx, train_y, num_classes, temperature)


def distinct_classes(labels: np.ndarray, n: int) -> np.ndarray:
    """Indices of the first image of each of the first n classes that occur."""
    _, first = np.unique(labels, return_index=True)
    return np.sort(first)[:n]


def grid(tiles: np.ndarray, rows: int) -> np.ndarray:
    return tiles.reshape((rows, -1) + tiles.shape[1:])


def compute(ctx) -> dict:
    train = torch.from_numpy(base.features(ctx, ctx.train_images))
    test = torch.from_numpy(base.features(ctx, ctx.images))
    sims, idx = top_k_cosine(test, train, ctx.opts.knn_k)
    pred = knn_predict(sims, idx, ctx.train_labels, len(ctx.classes))
    q = distinct_classes(ctx.labels.numpy(), 5)
    return {"accuracy": float((pred == ctx.labels).float().mean()), "k": ctx.opts.knn_k,
            "queries": base.display(ctx.images[q]), "query_labels": ctx.labels[q].numpy(),
            "neighbours": grid(base.display(ctx.train_images[idx[q].flatten()]), len(q)),
            "neighbour_labels": ctx.train_labels[idx[q]].numpy(), "neighbour_sims": sims[q].numpy(),
            "num_train": len(train), "num_test": len(test)}


def draw(r: dict, ctx) -> list[plots.Panel]:
    names = ctx.classes
    cells, titles = [], []
    for qi in range(len(r["queries"])):
        cells.append([r["queries"][qi]] + list(r["neighbours"][qi]))
        titles.append([f"query: {names[r['query_labels'][qi]]}"] +
                      [f"{names[l]} {s:.2f}" for l, s in zip(r["neighbour_labels"][qi], r["neighbour_sims"][qi])])
    fig = plots.image_table(cells, titles, suptitle=f"{ctx.title}  {r['k']} nearest of {r['num_train']} train "
                                                    f"images (cosine); kNN accuracy {r['accuracy']:.3f} "
                                                    f"on {r['num_test']} test images", size=1.2)
    return [plots.Panel("", fig, f"nearest train images by cosine similarity; "
                                 f"{r['k']}-NN accuracy {r['accuracy']:.3f} on {r['num_test']} test "
                                 f"images, {r['num_train']} train images to vote")]


register("knn", draw, title="k-nearest-neighbour evaluation",
         explanation="A kNN classifier on normalised penultimate features, each of the k nearest training "
                     "images voting with its cosine similarity: how good the representation is without "
                     "training a new head (the standard probe for self-supervised features).",
         caption="nearest neighbours in feature space", table=("accuracy", "k", "num_train"))(compute)
