"""Linear centered kernel alignment (Kornblith et al. 2019) with the unbiased HSIC estimator
accumulated over minibatches (Nguyen et al. 2021), so the cost is per batch, not per n^2:

    CKA(X, Y) = mean_b HSIC_1(K_b, L_b) / sqrt(mean_b HSIC_1(K_b, K_b) * mean_b HSIC_1(L_b, L_b))

with K_b = X_b X_b^T, L_b = Y_b Y_b^T the linear Gram matrices of minibatch b. 1 for the same
representation up to an orthogonal transform and isotropic scaling; about 0 for independent
ones (the unbiased estimator has no positive bias from the feature dimension).
"""
from __future__ import annotations

import torch


def gram(x: torch.Tensor) -> torch.Tensor:
    """(n, ...) features -> (n, n) linear kernel, in float64."""
    x = x.flatten(1).double()
    return x @ x.T


def hsic_unbiased(k: torch.Tensor, l: torch.Tensor) -> torch.Tensor:
    """Song et al. (2012)'s unbiased HSIC of two (n, n) Gram matrices, n > 3."""
    n = k.shape[0]
    if n < 4:
        raise ValueError(f"the unbiased HSIC needs at least 4 samples, got {n}")
    k = k - torch.diag_embed(torch.diagonal(k))
    l = l - torch.diag_embed(torch.diagonal(l))
    kl = (k * l).sum()  # trace(K L) for symmetric matrices
    both = k.sum() * l.sum() / ((n - 1) * (n - 2))
    cross = 2 * (k.sum(0) @ l.sum(1)) / (n - 2)  # 2/(n-2) * 1^T K L 1
    return (kl + both - cross) / (n * (n - 3))


class MinibatchCKA:
    """CKA between every representation of one set (rows) and of another (columns), from
    minibatches of the same images: update(xs, ys) with lists of (n, ...) features."""

    def __init__(self, rows: int, cols: int):
        self.xy = torch.zeros(rows, cols, dtype=torch.float64)
        self.xx = torch.zeros(rows, dtype=torch.float64)
        self.yy = torch.zeros(cols, dtype=torch.float64)

    def update(self, xs: list[torch.Tensor], ys: list[torch.Tensor]) -> None:
        ks, ls = [gram(x) for x in xs], [gram(y) for y in ys]
        self.xx += torch.stack([hsic_unbiased(k, k) for k in ks])
        self.yy += torch.stack([hsic_unbiased(l, l) for l in ls])
        self.xy += torch.stack([torch.stack([hsic_unbiased(k, l) for l in ls]) for k in ks])

    def value(self) -> torch.Tensor:
        """(rows, cols) CKA; the batch count cancels between numerator and denominator."""
        return self.xy / torch.sqrt(self.xx[:, None].clamp_min(1e-30) * self.yy[None, :].clamp_min(1e-30))


def cka(x: torch.Tensor, y: torch.Tensor, batch: int = 256) -> float:
    """CKA of two (N, ...) feature sets of the same images, in minibatches of `batch`
    (a last batch under 4 images is left out)."""
    acc = MinibatchCKA(1, 1)
    for i in range(0, len(x), batch):
        if len(x[i:i + batch]) >= 4:
            acc.update([x[i:i + batch]], [y[i:i + batch]])
    return float(acc.value()[0, 0])
