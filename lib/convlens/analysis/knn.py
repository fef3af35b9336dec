"""Nearest training images by cosine similarity of penultimate features, and the kNN
classifier they make (a similarity-weighted vote; the maths is convlens.knn)."""
from __future__ import annotations

import numpy as np
import torch

from convlens.analysis import base, plots
from convlens.analysis.registry import register
from convlens.knn import knn_predict, top_k_cosine


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
