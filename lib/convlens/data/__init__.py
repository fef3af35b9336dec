"""Datasets as uint8 tensors in memory, loaded once and cached on disk.

`load_dataset(cfg)` returns an ImageData whose images are (N, C, H, W) uint8 and
labels (N,) int64; augmentation happens later, in batches, on the training device.
"""
from convlens.data.core import ImageData, DataError, load_dataset, split_indices

__all__ = ["ImageData", "DataError", "load_dataset", "split_indices"]
