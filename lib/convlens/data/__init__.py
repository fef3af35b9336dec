"""Datasets as uint8 tensors in memory, loaded once and cached on disk.

`load.load_dataset(cfg)` returns an `images.ImageData` whose images are (N, C, H, W) uint8 and
labels (N,) int64; augmentation happens later, in batches, on the training device (augment.py).

    load.py           a configured dataset: fetched when missing, read by its format's loader,
                      verified and cached on disk
    images.py         the dataset container (ImageData) and the seeded train/validation split
    download.py       fetching a dataset's published files, safely for many processes at once
    fashion_mnist.py  Fashion-MNIST from the original IDX files
    cifar.py          CIFAR-10 in torchvision's on-disk format
    image_folder.py   an image folder, one sub-folder per class, resized once
    folder_index.py   an image folder's files and their splits, listed without decoding a pixel
    folder_images.py  a streamed run's folder as its analysis and probes read it: only the
                      images they take are decoded
    stream.py         an image folder streamed through Ray Data (data.stream): decoded in Ray's
                      CPU pool, sharded to the Train workers, instead of held in memory
    augment.py        what happens to a uint8 batch on the training device before the model sees it
"""
