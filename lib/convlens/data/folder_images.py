"""A streamed run's image folder as its analysis and probes read it: the file index of the run
(folder_index.py), and only the images asked for decoded, in the calling process.

Both it and the in-memory ImageData answer `take(split, indices) -> (uint8 images, labels)`,
so a caller picks its images by index and never needs the whole split in memory.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from convlens.data.folder_index import FolderIndex, index_folder
from convlens.data.image_folder import decode_image

DECODE_THREADS = 4  # PIL decodes outside the GIL: a few threads keep a core busy on JPEGs


@dataclass
class FolderImages:
    index: FolderIndex
    image_size: int
    in_chans = 3  # decode_image makes every image RGB

    @property
    def classes(self) -> list[str]:
        return self.index.classes

    @property
    def num_classes(self) -> int:
        return len(self.index.classes)

    def labels(self, split: str) -> torch.Tensor:
        """(N,) int64 labels of a split ("train" before the validation hold-out, or "test")."""
        return torch.tensor([label for _, label in getattr(self.index, split)], dtype=torch.int64)

    def take(self, split: str, indices) -> tuple[torch.Tensor, torch.Tensor]:
        """The split's images at `indices`, decoded: (n, 3, S, S) uint8 and (n,) int64 labels;
        an unreadable file is left out, and one line names the count and the first."""
        items = [getattr(self.index, split)[i] for i in torch.as_tensor(indices).tolist()]
        with ThreadPoolExecutor(DECODE_THREADS) as pool:
            decoded = list(pool.map(self.decode, [path for path, _ in items]))
        bad = [f"{path} ({img})" for (path, _), img in zip(items, decoded) if isinstance(img, str)]
        if bad:
            print(f"[convlens] skipped {len(bad)} unreadable image(s) of {len(items)}, the first {bad[0]}", flush=True)
        ok = [i for i, img in enumerate(decoded) if not isinstance(img, str)]
        x = np.stack([decoded[i] for i in ok]) if ok else np.zeros((0, 3, self.image_size, self.image_size), np.uint8)
        return torch.from_numpy(x), torch.tensor([items[i][1] for i in ok], dtype=torch.int64)

    def decode(self, path: str) -> np.ndarray | str:
        try:
            return decode_image(path, self.image_size)
        except Exception as err:  # PIL raises many kinds for a damaged file
            return type(err).__name__


def folder_images(cfg) -> FolderImages:
    """data.path's file index (split and subset as the run split it), nothing decoded yet."""
    return FolderImages(index_folder(cfg), cfg.image_size)

