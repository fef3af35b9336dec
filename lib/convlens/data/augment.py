"""What happens to a uint8 batch on the training device before the model sees it.

Training: random crop by translation (or a random resized crop), horizontal flip, optional
colour jitter and resize, then normalization; evaluation: the resize and normalization only.
Random parameters are drawn per epoch for every training position from a seeded CPU
generator (an EpochPlan), so N DDP workers slicing one global batch see exactly what one
worker would. Every operation works on whole batches.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F


@dataclass
class EpochPlan:
    order: torch.Tensor  # (N,) permutation of training indices
    shifts: torch.Tensor  # (N, 2) crop offsets in [0, 2*pad]
    flips: torch.Tensor  # (N,) bool
    boxes: torch.Tensor | None = None  # (N, 4) random resized crop: width, height, centre x, y (fractions)
    jitter: torch.Tensor | None = None  # (N, 3) brightness, contrast, saturation factors

    def to(self, device) -> "EpochPlan":
        """The whole epoch's plan in one copy: a host-to-device copy per step would make the
        CPU wait for the GPU."""
        return EpochPlan(**{f.name: None if getattr(self, f.name) is None else getattr(self, f.name).to(device)
                            for f in fields(self)})


def epoch_plan(n: int, pad: int, flip: bool, seed: int, epoch: int, rrc=None, jitter=None) -> EpochPlan:
    """The epoch's random parameters for n training positions; rrc: (scale, ratio) ranges,
    jitter: (brightness, contrast, saturation) strengths, each drawn only when set."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(n, generator=g)
    shifts = torch.randint(0, 2 * pad + 1, (n, 2), generator=g)
    flips = torch.rand(n, generator=g) < 0.5 if flip else torch.zeros(n, dtype=torch.bool)
    boxes = resized_crop_boxes(n, rrc[0], rrc[1], g) if rrc else None
    factors = torch.stack([1 + s * (2 * torch.rand(n, generator=g) - 1) for s in jitter], 1) if jitter else None
    return EpochPlan(order, shifts, flips, boxes, factors)


def resized_crop_boxes(n: int, scale, ratio, g: torch.Generator) -> torch.Tensor:
    """(n, 4) boxes of area fraction in `scale` and aspect ratio in `ratio` (log-uniform), as
    width, height and centre in fractions of the image side (as torchvision's RandomResizedCrop
    draws them, but clamped into the image instead of retried)."""
    area = scale[0] + (scale[1] - scale[0]) * torch.rand(n, generator=g)
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * torch.rand(n, generator=g)
    w = torch.sqrt(area * log_r.exp()).clamp(max=1.0)
    h = torch.sqrt(area / log_r.exp()).clamp(max=1.0)
    cx = w / 2 + (1 - w) * torch.rand(n, generator=g)
    cy = h / 2 + (1 - h) * torch.rand(n, generator=g)
    return torch.stack([w, h, cx, cy], 1)


def crop(x: torch.Tensor, shifts: torch.Tensor, pad: int) -> torch.Tensor:
    """Zero-pad (B, C, H, W) by `pad` and take the HxW window at each image's shift."""
    if pad == 0:
        return x
    b, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    rows = (shifts[:, 0:1] + torch.arange(h, device=x.device))[:, None, :, None]  # (B,1,H,1)
    cols = (shifts[:, 1:2] + torch.arange(w, device=x.device))[:, None, None, :]  # (B,1,1,W)
    bidx = torch.arange(b, device=x.device)[:, None, None, None]
    cidx = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[bidx, cidx, rows, cols]


def flip(x: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    return torch.where(flips[:, None, None, None], x.flip(3), x)


def random_resized_crop(x: torch.Tensor, boxes: torch.Tensor, flips: torch.Tensor, size: int) -> torch.Tensor:
    """Each image's box resampled bilinearly to size x size, mirrored where flips: one affine
    grid_sample for the batch. x: (B, C, H, W) float."""
    w, h, cx, cy = boxes.to(x.dtype).unbind(1)
    sign = 1 - 2 * flips.to(x.dtype)
    zero = torch.zeros_like(w)
    theta = torch.stack([torch.stack([w * sign, zero, 2 * cx - 1], 1),
                         torch.stack([zero, h, 2 * cy - 1], 1)], 1)  # (B, 2, 3), output -> input coords
    grid = F.affine_grid(theta, [len(x), x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def grey(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) in [0, 1] -> (B, 1, H, W) luma, with torchvision's weights."""
    if x.shape[1] == 1:
        return x
    return 0.2989 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]


def color_jitter(x: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Brightness, contrast, then saturation blends per image (torchvision's formulas), each
    clamped to [0, 1]. x: (B, C, H, W) in [0, 1]; factors: (B, 3)."""
    b, c, s = (f.to(x.dtype)[:, None, None, None] for f in factors.unbind(1))
    x = (x * b).clamp(0, 1)
    mean = grey(x).mean((1, 2, 3), keepdim=True)
    x = ((x - mean) * c + mean).clamp(0, 1)
    g = grey(x)
    return ((x - g) * s + g).clamp(0, 1)


def resize(x: torch.Tensor, size: int | None) -> torch.Tensor:
    if size is None or x.shape[-1] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=size < x.shape[-1])


def normalize(x_uint8: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float32 standardized; mean/std shaped (1, C, 1, 1)."""
    return (x_uint8.float().div_(255) - mean) / std


def augment(x_uint8, shifts, flips, pad, mean, std):
    """Crop by translation, flip and normalize: the whole augmentation of most runs."""
    x = crop(x_uint8, shifts.to(x_uint8.device), pad)
    return normalize(flip(x, flips.to(x.device)), mean, std)


class Augment:
    """A data config's training augmentation and evaluation view, on the batch's device."""

    def __init__(self, cfg, mean: torch.Tensor, std: torch.Tensor):
        self.pad, self.flip, self.size = cfg.crop_padding, cfg.flip, cfg.resize
        self.rrc = (cfg.random_resized_crop.scale, cfg.random_resized_crop.ratio) if cfg.random_resized_crop else None
        j = cfg.color_jitter
        self.jitter = (j.brightness, j.contrast, j.saturation) if j else None
        self.mean, self.std = mean, std

    def plan(self, n: int, seed: int, epoch: int) -> EpochPlan:
        return epoch_plan(n, self.pad, self.flip, seed, epoch, self.rrc, self.jitter)

    def train(self, x_uint8: torch.Tensor, plan: EpochPlan, pos: slice) -> torch.Tensor:
        """The training batch at plan positions `pos` (this worker's slice of the global batch)."""
        if self.rrc is None and self.jitter is None and self.size is None:
            return augment(x_uint8, plan.shifts[pos], plan.flips[pos], self.pad, self.mean, self.std)
        x = x_uint8.float().div_(255)
        if self.rrc is not None:
            x = random_resized_crop(x, plan.boxes[pos], plan.flips[pos], self.size or x.shape[-1])
        else:
            x = resize(flip(crop(x, plan.shifts[pos], self.pad), plan.flips[pos]), self.size)
        if self.jitter is not None:
            x = color_jitter(x, plan.jitter[pos])
        return (x - self.mean) / self.std

    def eval(self, x_uint8: torch.Tensor) -> torch.Tensor:
        """Evaluation and analysis: resized (if set) and normalized, nothing random."""
        if self.size is None:
            return normalize(x_uint8, self.mean, self.std)
        return (resize(x_uint8.float().div_(255), self.size) - self.mean) / self.std
