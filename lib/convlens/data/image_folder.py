"""An image folder: one sub-folder per class (optionally under train/ and test/), resized once."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from convlens.base.errors import DataError
from convlens.data.images import ImageData

SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def list_images(root: Path, classes: list[str]) -> list[tuple[Path, int]]:
    return [(p, label) for label, c in enumerate(classes)
            for p in sorted((root / c).rglob("*")) if p.suffix.lower() in SUFFIXES]


def check_classes(root: Path, classes: list[str], items: list[tuple[Path, int]]) -> None:
    """An image folder without class sub-folders, without images, or with a class folder that
    holds none fails, naming the folder (before any image is decoded)."""
    if not classes:
        raise DataError(f"data.path = {str(root)!r}: no class sub-folders")
    if not items:
        raise DataError(f"data.path = {str(root)!r}: no images ({', '.join(sorted(SUFFIXES))}) in {classes}")
    empty = sorted(set(range(len(classes))) - {label for _, label in items})
    if empty:
        raise DataError(f"data.path = {str(root)!r}: class folder {str(root / classes[empty[0]])!r} has no images"
                        + (f" ({len(empty) - 1} more empty)" if len(empty) > 1 else ""))


def decode_image(path, size: int) -> np.ndarray:
    """One image file as (3, size, size) uint8 RGB, resized bilinearly; both paths decode with it."""
    from PIL import Image
    with Image.open(path) as im:
        im = im.convert("RGB").resize((size, size), Image.BILINEAR)
        return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)


def holdout(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Without a test/ folder: a seeded 20% of the listed images is the test set; (train, test) indices."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    n_test = max(1, n // 5)
    return perm[n_test:].sort().values, perm[:n_test].sort().values


def read_images(items, size: int, corrupt: str) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys, bad = [], [], []
    for path, label in items:
        try:
            xs.append(decode_image(path, size))
            ys.append(label)
        except Exception as err:
            bad.append(f"{path} ({type(err).__name__})")
    if bad and corrupt == "fail":
        raise DataError(f"{len(bad)} unreadable image(s) (set data.corrupt_images=skip to skip them): "
                        + "; ".join(bad[:20]))
    if bad:
        print(f"[convlens] skipped {len(bad)} unreadable image(s): " + "; ".join(bad[:20]), flush=True)
    if not xs:
        raise DataError("no readable images")
    return torch.from_numpy(np.stack(xs)), torch.tensor(ys, dtype=torch.int64)


def load(path: Path, cfg) -> ImageData:
    train_root, test_root = path / "train", path / "test"
    split = train_root.is_dir() and test_root.is_dir()
    root = train_root if split else path
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    items = list_images(root, classes)
    check_classes(root, classes, items)
    x, y = read_images(items, cfg.image_size, cfg.corrupt_images)
    if split:
        tx, ty = read_images(list_images(test_root, classes), cfg.image_size, cfg.corrupt_images)
        return ImageData(x, y, tx, ty, classes)
    tr, te = holdout(len(y))
    return ImageData(x[tr], y[tr], x[te], y[te], classes)
