"""The dataset container and the seeded train/validation split."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch

from convlens.base.errors import DataError


@dataclass
class ImageData:
    train_x: torch.Tensor  # (N, C, H, W) uint8
    train_y: torch.Tensor  # (N,) int64
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_chans(self) -> int:
        return self.train_x.shape[1]

    def labels(self, split: str) -> torch.Tensor:
        """(N,) int64 labels of "train" (before the validation hold-out) or "test"."""
        return self.train_y if split == "train" else self.test_y

    def take(self, split: str, indices) -> tuple[torch.Tensor, torch.Tensor]:
        """The split's (uint8 images, labels) at `indices` (folder_images.FolderImages too)."""
        x = self.train_x if split == "train" else self.test_x
        return x[indices], self.labels(split)[indices]

    def mean_std(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and std of the training images, in [0, 1] units."""
        x = self.train_x[:20000].float().div_(255)
        return x.mean((0, 2, 3)).tolist(), x.std((0, 2, 3)).tolist()

    def norm_stats(self, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """mean_std as (1, C, 1, 1) tensors on `device`, as augment.normalize takes them."""
        mean, std = self.mean_std()
        return (torch.tensor(mean, device=device).view(1, -1, 1, 1),
                torch.tensor(std, device=device).view(1, -1, 1, 1))

    def check(self, source: str) -> None:
        for split, x, y in (("train", self.train_x, self.train_y), ("test", self.test_x, self.test_y)):
            if x.dtype != torch.uint8 or x.ndim != 4:
                raise DataError(f"{source}: {split} images must be (N, C, H, W) uint8, got {tuple(x.shape)} {x.dtype}")
            if len(x) != len(y):
                raise DataError(f"{source}: {split} has {len(x)} images but {len(y)} labels")
            if len(y) == 0:
                raise DataError(f"{source}: {split} split is empty")
            bad = (y < 0) | (y >= self.num_classes)
            if bad.any():
                i = int(bad.nonzero()[0])
                raise DataError(f"{source}: {split} label {int(y[i])} at index {i} is out of range "
                                f"[0, {self.num_classes}) for classes {self.classes}")


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded disjoint (train, val) index split of range(n)."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = int(round(n * val_fraction))
    return perm[n_val:].sort().values, perm[:n_val].sort().values


def subset_indices(total: int, n: int | None, seed: int) -> torch.Tensor | None:
    """A seeded sorted choice of n of range(total); None where n keeps them all."""
    if n is None or n >= total:
        return None
    return torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:n].sort().values


def subset(x: torch.Tensor, y: torch.Tensor, n: int | None, seed: int):
    idx = subset_indices(len(y), n, seed)
    if idx is None:
        return x, y
    return x[idx].contiguous(), y[idx].contiguous()


def batches(data, split: str, indices, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """data.take(split, ...) in batches of batch_size: (uint8 images, labels), whether data is an
    ImageData or a FolderImages (which decodes each batch's files as it comes)."""
    indices = torch.as_tensor(indices)
    for start in range(0, len(indices), batch_size):
        yield data.take(split, indices[start:start + batch_size])
