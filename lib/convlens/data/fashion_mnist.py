"""Fashion-MNIST from the original IDX files (gzipped or not)."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import torch

from convlens.data.images import ImageData
from convlens.errors import DataError

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
FILES = {"train_x": "train-images-idx3-ubyte", "train_y": "train-labels-idx1-ubyte",
         "test_x": "t10k-images-idx3-ubyte", "test_y": "t10k-labels-idx1-ubyte"}


def read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file: magic (0, 0, dtype=0x08 for uint8, ndim), big-endian dims, data."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise DataError(f"{path}: cannot read IDX file ({err})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path}: not a uint8 IDX file (bad magic number)")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DataError(f"{path}: header says {dims} but holds {body.size} values (truncated?)")
    return body.reshape(dims)


def find(path: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx")):
        if (path / name).is_file():
            return path / name
    raise DataError(f"data.path = {str(path)!r}: missing {stem}[.gz]")


def load(path: Path, cfg) -> ImageData:
    arrays = {key: read_idx(find(path, stem)) for key, stem in FILES.items()}
    images = {k: torch.from_numpy(arrays[k].copy()).unsqueeze(1) for k in ("train_x", "test_x")}
    labels = {k: torch.from_numpy(arrays[k].astype(np.int64)) for k in ("train_y", "test_y")}
    return ImageData(images["train_x"], labels["train_y"], images["test_x"], labels["test_y"], CLASSES)
