"""CIFAR-10 in torchvision's on-disk format (cifar-10-batches-py/), downloaded when missing."""
from __future__ import annotations

import os
import pickle
import shutil
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import torch

from convlens.base.errors import DataError, DownloadError
from convlens.data import download
from convlens.data.images import ImageData

TITLE = "CIFAR-10"
FOLDER = "cifar-10-batches-py"
TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
TEST = ["test_batch"]
META = "batches.meta"
# The published archive and checksums: torchvision's CIFAR10.url and .tgz_md5, and the md5 of
# each unpacked file (tests/test_download.py checks they agree).
ARCHIVE = download.Remote("cifar-10-python.tar.gz", ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
                          "md5:c58f30108f718f92721af3b95e74349a")
MD5 = {"data_batch_1": "c99cafc152244af753f735de768cd75f", "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
       "data_batch_3": "54ebc095f3ab1f0389bbae665268c751", "data_batch_4": "634d18415352ddfa80567beed471001a",
       "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb", "test_batch": "40351d587109b95175f43aff81a1287e",
       META: "5ff9c542aee3614f3951f8cda6e48888"}


def batches(path: Path) -> Path:
    """The folder of the batches: path/cifar-10-batches-py, or path itself."""
    return path / FOLDER if (path / FOLDER).is_dir() else path


def present(path: Path) -> bool:
    return (path / FOLDER).is_dir() or (path / META).is_file()


def ensure(path: Path, mirror: str | None) -> list[str]:
    """Download and unpack the archive unless the batches are there; returns what was fetched."""
    return download.fetch(path, TITLE, lambda: [] if present(path) else [ARCHIVE], mirror,
                          place=lambda archive, _: unpack(archive, path))


def unpack(archive: Path, path: Path) -> None:
    """Extract with torchvision into a temporary folder in path, then rename the batches into
    place (a reader never sees half of them); the archive is kept beside them, as torchvision does."""
    from torchvision.datasets.utils import extract_archive
    tmp = Path(tempfile.mkdtemp(dir=path, prefix=download.TEMP_PREFIX))
    try:
        extract_archive(archive, tmp)
        if not (tmp / FOLDER).is_dir():
            raise DownloadError(f"{archive.name}: holds no {FOLDER}/, not {TITLE}'s archive")
        os.replace(tmp / FOLDER, path / FOLDER)
    except (tarfile.TarError, EOFError) as err:
        raise DownloadError(f"{archive.name}: cannot unpack it ({err})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if archive != path / ARCHIVE.name:
        os.replace(archive, path / ARCHIVE.name)


def verify(path: Path, skip: list[str] = ()) -> None:
    """Each unpacked file against torchvision's md5 (`skip` naming the archive: just unpacked from
    a verified archive)."""
    if ARCHIVE.name in skip:
        return
    folder = batches(path)
    for name, md5 in MD5.items():
        download.check(folder / name, "md5:" + md5, TITLE, remove=folder)


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
    folder = batches(path)
    meta = read_batch(folder / META)
    classes = [c.decode() if isinstance(c, bytes) else str(c) for c in meta[b"label_names"]]
    train_x, train_y = load_split(folder, TRAIN)
    test_x, test_y = load_split(folder, TEST)
    return ImageData(train_x, train_y, test_x, test_y, classes)
