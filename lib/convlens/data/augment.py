"""Batch augmentation on the training device: random crop by translation, flip, normalize.

Random parameters are drawn per epoch for every training position from a seeded CPU
generator, so N DDP workers slicing one global batch see exactly what one worker would.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class EpochPlan:
    order: torch.Tensor  # (N,) permutation of training indices
    shifts: torch.Tensor  # (N, 2) crop offsets in [0, 2*pad]
    flips: torch.Tensor  # (N,) bool

    def to(self, device) -> "EpochPlan":
        """The whole epoch's plan in one copy: a host-to-device copy per step would make the
        CPU wait for the GPU."""
        return EpochPlan(self.order.to(device), self.shifts.to(device), self.flips.to(device))


def epoch_plan(n: int, pad: int, flip: bool, seed: int, epoch: int) -> EpochPlan:
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(n, generator=g)
    shifts = torch.randint(0, 2 * pad + 1, (n, 2), generator=g)
    flips = torch.rand(n, generator=g) < 0.5 if flip else torch.zeros(n, dtype=torch.bool)
    return EpochPlan(order, shifts, flips)


def crop(x: torch.Tensor, shifts: torch.Tensor, pad: int) -> torch.Tensor:
    """Zero-pad (B, C, H, W) by `pad` and take the HxW window at each image's shift."""
    if pad == 0:
        return x
    b, c, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    rows = (shifts[:, 0:1] + torch.arange(h, device=x.device))[:, None, :, None]  # (B,1,H,1)
    cols = (shifts[:, 1:2] + torch.arange(w, device=x.device))[:, None, None, :]  # (B,1,1,W)
    bidx = torch.arange(b, device=x.device)[:, None, None, None]
    cidx = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[bidx, cidx, rows, cols]


def normalize(x_uint8: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float32 standardized; mean/std shaped (1, C, 1, 1)."""
    return (x_uint8.float().div_(255) - mean) / std


def augment(x_uint8, shifts, flips, pad, mean, std):
    x = crop(x_uint8, shifts.to(x_uint8.device), pad)
    x = torch.where(flips.to(x.device)[:, None, None, None], x.flip(3), x)
    return normalize(x, mean, std)
