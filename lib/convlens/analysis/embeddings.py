"""Penultimate features in two dimensions: t-SNE and PCA, coloured by true class, with each
map's trustworthiness (how well it keeps the feature space's nearest neighbours)."""
from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE, trustworthiness

from convlens.analysis import base, plots
from convlens.analysis.registry import register


def tsne(feats: np.ndarray, seed: int) -> np.ndarray:
    """(N, D) -> (N, 2); deterministic for a seed (PCA init, exact single-threaded gradients)."""
    perplexity = float(min(30.0, max(2.0, (len(feats) - 1) / 3)))
    return TSNE(2, perplexity=perplexity, init="pca", random_state=seed,
                learning_rate="auto", max_iter=500).fit_transform(feats.astype(np.float64))


def pca(feats: np.ndarray, seed: int) -> np.ndarray:
    return PCA(2, random_state=seed).fit_transform(feats.astype(np.float64))


def compute(ctx) -> dict:
    n = min(ctx.opts.tsne_points, len(ctx.images))
    feats = base.features(ctx, ctx.images[:n])  # (N, D)
    labels = ctx.labels[:n].numpy()
    k = max(1, min(5, n // 2 - 1))
    out = {"labels": labels, "names": ctx.classes, "thumbs": base.display(ctx.images[:n])}
    for name, fn in (("tsne", tsne), ("pca", pca)):
        xy = fn(feats, ctx.opts.seed)
        out[name] = xy
        out[f"trust_{name}"] = float(trustworthiness(feats, xy, n_neighbors=k))
    return out


def draw(r: dict, ctx) -> list[plots.Panel]:
    fig = plots.scatter([(f"t-SNE (trustworthiness {r['trust_tsne']:.3f})", r["tsne"]),
                         (f"PCA (trustworthiness {r['trust_pca']:.3f})", r["pca"])],
                        r["labels"], r["names"], f"{ctx.title}  penultimate features, {len(r['labels'])} "
                                                 f"test images by true class")
    return [plots.Panel("", fig, f"t-SNE and PCA of penultimate features; trustworthiness "
                                 f"{r['trust_tsne']:.3f} / {r['trust_pca']:.3f}")]


register("embeddings", draw, title="Embeddings (t-SNE / PCA)",
         explanation="Pooled penultimate features of test images projected to 2-D: PCA keeps global linear "
                     "structure, t-SNE keeps neighbourhoods; well-separated clusters mean easy classes.",
         caption="t-SNE and PCA of penultimate features", table=("trust_tsne", "trust_pca"))(compute)
