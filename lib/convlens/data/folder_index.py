"""An image folder's file list and its splits, without decoding a pixel: what the streamed path
(data/stream.py) reads, split as the in-memory path (image_folder.py, load.py, the Trainer)
splits the decoded images, so a seed picks the same test, validation and training images.

(The in-memory path drops unreadable files before it splits; a streamed run splits the files
and skips unreadable ones where it meets them. With no unreadable file the splits are equal.)
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from convlens.data.image_folder import check_classes, holdout, list_images
from convlens.data.images import split_indices, subset_indices

Items = list[tuple[str, int]]  # (file path, class index)


@dataclass
class FolderIndex:
    classes: list[str]
    train: Items  # the training split before the validation hold-out (after data.train_subset)
    test: Items

    def decoded_gb(self, image_size: int) -> float:
        """What the training split takes decoded, as uint8 RGB: what every in-memory worker holds."""
        return len(self.train) * 3 * image_size ** 2 / 1e9

    def train_val(self, val_fraction: float, seed: int) -> tuple[Items, Items]:
        """The Trainer's seeded (training, validation) split of the training files."""
        train_idx, val_idx = split_indices(len(self.train), val_fraction, seed)
        return pick(self.train, train_idx.tolist()), pick(self.train, val_idx.tolist())


def pick(items: Items, indices) -> Items:
    return [items[i] for i in indices]


def listed(root: Path, classes: list[str]) -> Items:
    return [(str(p), label) for p, label in list_images(root, classes)]


def index_folder(cfg) -> FolderIndex:
    """The files of data.path (class sub-folders, optionally under train/ and test/), split and
    subset as load_dataset does; an empty folder or class folder fails here, naming it."""
    path = Path(os.path.expanduser(cfg.path)).resolve()
    train_root, test_root = path / "train", path / "test"
    split = train_root.is_dir() and test_root.is_dir()
    root = train_root if split else path
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    items = listed(root, classes)
    check_classes(root, classes, items)
    if split:
        train, test = items, listed(test_root, classes)
        check_classes(test_root, classes, test)
    else:
        train_idx, test_idx = holdout(len(items))
        train, test = pick(items, train_idx.tolist()), pick(items, test_idx.tolist())
    return FolderIndex(classes, subset_items(train, cfg.train_subset, seed=1), subset_items(test, cfg.test_subset, seed=2))


def subset_items(items: Items, n: int | None, seed: int) -> Items:
    idx = subset_indices(len(items), n, seed)
    return items if idx is None else pick(items, idx.tolist())
