"""Weighted k-nearest-neighbour classification on cosine similarity, as in DINO's eval_knn.

Used by the analysis job's kNN method and by the feature probes. Pure tensor functions: the
(Q, K) similarity matrix is built one chunk of queries at a time and never held whole.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


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
