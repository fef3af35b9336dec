"""Dataset container, the on-disk cache and the seeded train/validation split."""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch


class DataError(ValueError):
    """The dataset on disk is missing, malformed or unusable; the message names the path."""


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

    def mean_std(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and std of the training images, in [0, 1] units."""
        x = self.train_x[:20000].float().div_(255)
        return x.mean((0, 2, 3)).tolist(), x.std((0, 2, 3)).tolist()

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


def subset(x: torch.Tensor, y: torch.Tensor, n: int | None, seed: int):
    if n is None or n >= len(y):
        return x, y
    idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    return x[idx].contiguous(), y[idx].contiguous()


def fingerprint(path: Path, extra: dict) -> str:
    """Cache key from the files' names, sizes and mtimes plus loader options."""
    h = hashlib.sha1(json.dumps(extra, sort_keys=True).encode())
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for p in files:
        st = p.stat()
        h.update(f"{p}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def load_dataset(cfg, verbose: bool = False) -> ImageData:
    """Load the configured dataset, from the cache when the files are unchanged."""
    from convlens.data import cifar, fashion_mnist, image_folder
    loaders = {"fashion_mnist": fashion_mnist.load, "cifar10": cifar.load,
               "image_folder": image_folder.load}
    path = Path(os.path.expanduser(cfg.path)).resolve()
    if cfg.dataset == "cifar10" and cfg.download:
        cifar.ensure_downloaded(path)
    if not path.exists():
        raise DataError(f"data.path = {str(path)!r}: does not exist")
    opts = {"dataset": cfg.dataset, "image_size": cfg.image_size, "corrupt": cfg.corrupt_images, "v": 1}
    cache = Path(os.path.expanduser(cfg.cache_dir)) / f"{cfg.dataset}-{fingerprint(path, opts)}.pt"
    data = read_cache(cache)
    if data is None:
        if verbose:
            print(f"[convlens] reading {cfg.dataset} from {path} (cached at {cache})", flush=True)
        data = loaders[cfg.dataset](path, cfg)
        data.check(f"data.path = {str(path)!r}")
        write_cache(cache, data)
    train_x, train_y = subset(data.train_x, data.train_y, cfg.train_subset, seed=1)
    test_x, test_y = subset(data.test_x, data.test_y, cfg.test_subset, seed=2)
    return ImageData(train_x, train_y, test_x, test_y, data.classes)


def read_cache(path: Path) -> ImageData | None:
    if not path.is_file():
        return None
    try:
        d = torch.load(path, map_location="cpu", weights_only=True)
        return ImageData(d["train_x"], d["train_y"], d["test_x"], d["test_y"], list(d["classes"]))
    except Exception:
        return None  # a damaged cache is rebuilt from the source files


def write_cache(path: Path, data: ImageData) -> None:
    from convlens.checkpoint import write_atomic
    import io
    buf = io.BytesIO()
    torch.save({"train_x": data.train_x, "train_y": data.train_y, "test_x": data.test_x,
                "test_y": data.test_y, "classes": data.classes}, buf)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, buf.getvalue())
    except OSError as err:  # the cache is an optimisation; a read-only home must not stop a run
        print(f"[convlens] warning: could not write dataset cache {path}: {err}", flush=True)
