"""CIFAR-10 in torchvision's on-disk format (cifar-10-batches-py/), downloaded by torchvision."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from convlens.data.images import ImageData
from convlens.errors import DataError

FOLDER = "cifar-10-batches-py"
TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
TEST = ["test_batch"]


def ensure_downloaded(path: Path) -> None:
    """Fetch and unpack with torchvision (verifies the archive's md5) unless already present."""
    if (path / FOLDER / "batches.meta").is_file():
        return
    from torchvision.datasets import CIFAR10
    try:
        CIFAR10(root=str(path), train=True, download=True)
    except Exception as err:
        raise DataError(f"data.path = {str(path)!r}: CIFAR-10 download failed ({err}); "
                        f"place {FOLDER}/ there or check the network") from None


class _ArraysOnly(pickle.Unpickler):
    """CIFAR batches are pickles of dicts of numpy arrays; refuse anything else."""
    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct"), ("collections", "OrderedDict")}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"forbidden object {module}.{name}")


def read_batch(file: Path) -> dict:
    try:
        with open(file, "rb") as f:
            return _ArraysOnly(f, encoding="bytes").load()
    except FileNotFoundError:
        raise DataError(f"{file}: missing (expected torchvision's CIFAR-10 layout)") from None
    except Exception as err:
        raise DataError(f"{file}: not a CIFAR-10 batch ({err})") from None


def load_split(folder: Path, names: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for name in names:
        batch = read_batch(folder / name)
        data, labels = batch.get(b"data"), batch.get(b"labels")
        if data is None or labels is None or np.asarray(data).shape[1:] != (3072,):
            raise DataError(f"{folder / name}: expected b'data' (N, 3072) and b'labels'")
        xs.append(np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32))
        ys.append(np.asarray(labels, dtype=np.int64))
    return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))


def load(path: Path, cfg) -> ImageData:
    folder = path / FOLDER if (path / FOLDER).is_dir() else path
    meta = read_batch(folder / "batches.meta")
    classes = [c.decode() if isinstance(c, bytes) else str(c) for c in meta[b"label_names"]]
    train_x, train_y = load_split(folder, TRAIN)
    test_x, test_y = load_split(folder, TEST)
    return ImageData(train_x, train_y, test_x, test_y, classes)
