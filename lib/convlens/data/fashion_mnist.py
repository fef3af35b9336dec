"""Fashion-MNIST from the original IDX files (gzipped or not), downloaded when missing."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import torch

from convlens.base.errors import DataError
from convlens.data import download
from convlens.data.images import ImageData

TITLE = "Fashion-MNIST"
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
FILES = {"train_x": "train-images-idx3-ubyte", "train_y": "train-labels-idx1-ubyte",
         "test_x": "t10k-images-idx3-ubyte", "test_y": "t10k-labels-idx1-ubyte"}
# The published location: torchvision's FashionMNIST.mirrors (tests/test_download.py checks they agree).
MIRRORS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)
# sha256 of each file's decompressed content: the published archives and Debian's re-compressed
# copies (other .gz bytes) hold the same bytes.
SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
REMOTES = {stem: download.Remote(f"{stem}.gz", tuple(m + f"{stem}.gz" for m in MIRRORS), "sha256:" + SHA256[stem],
                                 gunzipped=True) for stem in FILES.values()}


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


def locate(path: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx")):
        if (path / name).is_file():
            return path / name
    return None


def find(path: Path, stem: str) -> Path:
    file = locate(path, stem)
    if file is None:
        raise DataError(f"data.path = {str(path)!r}: missing {stem}[.gz]")
    return file


def ensure(path: Path, mirror: str | None) -> list[str]:
    """Download the missing files into path (verified); returns their names."""
    return download.fetch(path, TITLE, lambda: [r for stem, r in REMOTES.items() if locate(path, stem) is None],
                          mirror)


def verify(path: Path, skip: list[str] = ()) -> None:
    """Each file's content against its sha256 (`skip`: files just downloaded, already checked)."""
    for stem, remote in REMOTES.items():
        file = find(path, stem)
        if file.name not in skip:
            download.check(file, remote.checksum, TITLE, gunzipped=True)


def load(path: Path, cfg) -> ImageData:
    arrays = {key: read_idx(find(path, stem)) for key, stem in FILES.items()}
    images = {k: torch.from_numpy(arrays[k].copy()).unsqueeze(1) for k in ("train_x", "test_x")}
    labels = {k: torch.from_numpy(arrays[k].astype(np.int64)) for k in ("train_y", "test_y")}
    return ImageData(images["train_x"], labels["train_y"], images["test_x"], labels["test_y"], CLASSES)
