"""Datasets as uint8 tensors in memory, loaded once and cached on disk.

`load.load_dataset(cfg)` returns an `images.ImageData` whose images are (N, C, H, W) uint8 and
labels (N,) int64; augmentation happens later, in batches, on the training device (augment.py).
"""
