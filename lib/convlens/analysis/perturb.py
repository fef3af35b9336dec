"""Deletion and insertion curves (Petsiuk et al. 2018, RISE): remove (or reveal) pixels in the
order a saliency map ranks them and follow the target class's probability. A faithful map makes
the probability fall fast on deletion (small area under the curve) and rise fast on insertion
(large area). Removed pixels get a constant fill (the dataset mean: 0 after normalization) or
ROAD's noisy linear imputation from their neighbours (Rong et al. 2022), which keeps the
perturbed images closer to the data than a constant patch.

Pure tensor maths, batched: every method's images at one step go through one forward.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

FILLS = ("mean", "road")
# ROAD's neighbour weights: 1/6 for the 4 direct neighbours, 1/12 for the 4 diagonal ones
ROAD_KERNEL = torch.tensor([[1 / 12, 1 / 6, 1 / 12], [1 / 6, 0.0, 1 / 6], [1 / 12, 1 / 6, 1 / 12]])


def pixel_scores(maps: torch.Tensor) -> torch.Tensor:
    """A map per image -> one score per pixel location (B, H*W): heatmaps (B, H, W) as they are,
    signed gradient images (B, C, H, W) by absolute value summed over channels."""
    if maps.ndim == 4:
        maps = maps.abs().sum(1)
    return maps.flatten(1).float()


def ranks(scores: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, P) scores -> (B, P) rank of each pixel, 0 = most salient; ties broken at random (a
    CAM is zero over large areas, and row-major order there would be a bias, not a ranking)."""
    shuffle = torch.rand(scores.shape, generator=generator).argsort(1).to(scores.device)
    order = shuffle.gather(1, scores.gather(1, shuffle).argsort(dim=1, descending=True, stable=True))
    arange = torch.arange(scores.shape[1], device=scores.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, arange)


def road_fill(x: torch.Tensor, removed: torch.Tensor, iters: int = 40, noise: float = 0.05,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """Noisy linear imputation: each removed pixel becomes the weighted mean of its neighbours
    (ROAD's linear system, solved by Jacobi iterations started from the mean of the kept pixels;
    deep inside a large hole the fill stays near that mean), plus Gaussian noise of std `noise`
    in normalized units. x (B, C, H, W); removed (B, 1, H, W) bool. Returns the filled image."""
    keep = (~removed).float()
    k = ROAD_KERNEL.to(x)[None, None].expand(x.shape[1], 1, 3, 3)
    weight = F.conv2d(F.pad(torch.ones_like(keep), (1, 1, 1, 1)), ROAD_KERNEL.to(x)[None, None])  # border-aware
    start = (x * keep).sum((2, 3), keepdim=True) / keep.sum((2, 3), keepdim=True).clamp_min(1)
    v = x * keep + start * (1 - keep)
    for _ in range(iters):
        v = x * keep + F.conv2d(F.pad(v, (1, 1, 1, 1)), k, groups=x.shape[1]) / weight * (1 - keep)
    eps = torch.randn(x.shape, generator=generator).to(x) * noise
    return v + eps * (1 - keep)


def perturbed(x: torch.Tensor, rank: torch.Tensor, n: int, mode: str, fill: str,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """x with its n top-ranked pixels removed ("deletion") or with only them shown ("insertion");
    rank (B, H*W)."""
    top = (rank < n).view(x.shape[0], 1, *x.shape[-2:])
    removed = top if mode == "deletion" else ~top
    if fill == "road":
        return road_fill(x, removed, generator=generator)
    return torch.where(removed, torch.zeros((), dtype=x.dtype, device=x.device), x)


def curves(score: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, maps: dict[str, torch.Tensor],
           steps: int = 16, fill: str = "mean", seed: int = 0) -> dict[str, torch.Tensor]:
    """Deletion and insertion curves of each map.

    score: (N, C, H, W) -> (N,) the quantity followed, for images in the order of x (called on
    len(maps) * 2 copies of the batch, so it must tile its targets); x (B, C, H, W);
    maps: name -> (B, H, W) or (B, C, H, W). Returns "<mode>/<name>" -> (B, steps + 1) at the
    fractions 0, 1/steps, ..., 1 of pixels removed (deletion) or revealed (insertion).
    """
    if fill not in FILLS:
        raise ValueError(f"fill {fill!r}; known: {FILLS}")
    g = torch.Generator().manual_seed(seed)
    names = list(maps)
    rank = {m: ranks(pixel_scores(maps[m]), g) for m in names}
    pixels = x.shape[-1] * x.shape[-2]
    out = {f"{mode}/{m}": [] for mode in ("deletion", "insertion") for m in names}
    for k in range(steps + 1):
        n = round(pixels * k / steps)
        keys = [(mode, m) for mode in ("deletion", "insertion") for m in names]
        batch = torch.cat([perturbed(x, rank[m], n, mode, fill, g) for mode, m in keys])
        with torch.no_grad():
            s = score(batch).view(len(keys), len(x))  # one forward for every map and mode
        for (mode, m), row in zip(keys, s):
            out[f"{mode}/{m}"].append(row)
    return {k: torch.stack(v, 1) for k, v in out.items()}


def auc(curve: torch.Tensor) -> torch.Tensor:
    """Area under (..., S + 1) curves sampled evenly on [0, 1] (trapezoid rule)."""
    return (curve[..., 1:] + curve[..., :-1]).mean(-1) / 2


def target_probability(model, target: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """score for `curves`: the softmax probability of each image's target class, the targets
    tiled over however many copies of the batch come in."""
    def score(batch: torch.Tensor) -> torch.Tensor:
        t = target.repeat(len(batch) // len(target))
        return model(batch).softmax(1).gather(1, t[:, None])[:, 0]
    return score
