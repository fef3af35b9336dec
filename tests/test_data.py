"""Datasets in their real on-disk formats, written small here; batch augmentation."""
import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from convlens.base.errors import DataError
from convlens.data.augment import crop, epoch_plan
from convlens.data.images import split_indices
from convlens.data.load import load_dataset
from convlens.specs.train import DataConfig


def write_idx(path, array):
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def make_idx_dataset(folder, n=40, n_test=10, label_max=9):
    """Random IDX files under Fashion-MNIST's names: read with data.download false (they are not
    Fashion-MNIST's content, which a downloading config verifies)."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    write_idx(folder / "train-images-idx3-ubyte.gz", rng.integers(0, 255, (n, 28, 28)))
    write_idx(folder / "train-labels-idx1-ubyte.gz", rng.integers(0, label_max + 1, n))
    write_idx(folder / "t10k-images-idx3-ubyte.gz", rng.integers(0, 255, (n_test, 28, 28)))
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", rng.integers(0, 10, n_test))
    return folder


def test_idx_roundtrip(tmp_path):
    folder = make_idx_dataset(tmp_path / "fm")
    data = load_dataset(DataConfig(path=str(folder), download=False, cache_dir=str(tmp_path / "cache")))
    assert data.train_x.shape == (40, 1, 28, 28) and data.train_x.dtype == torch.uint8
    assert data.test_y.shape == (10,) and data.num_classes == 10
    cached = list((tmp_path / "cache").glob("*.pt"))
    assert len(cached) == 1  # second load reads the cache
    again = load_dataset(DataConfig(path=str(folder), download=False, cache_dir=str(tmp_path / "cache")))
    assert torch.equal(again.train_x, data.train_x)


def test_label_out_of_range_and_truncated_file(tmp_path):
    folder = make_idx_dataset(tmp_path / "bad", label_max=12)
    with pytest.raises(DataError, match="out of range"):
        load_dataset(DataConfig(path=str(folder), download=False, cache_dir=str(tmp_path / "c")))
    folder = make_idx_dataset(tmp_path / "trunc")
    raw = gzip.decompress((folder / "train-images-idx3-ubyte.gz").read_bytes())
    (folder / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(raw[:-100]))
    with pytest.raises(DataError, match="truncated"):
        load_dataset(DataConfig(path=str(folder), download=False, cache_dir=str(tmp_path / "c")))


def write_cifar(root, n=20):
    """Files exactly as torchvision unpacks cifar-10-python.tar.gz."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"batch_label": name.encode(), b"labels": rng.integers(0, 10, n).tolist(),
                 b"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8), b"filenames": [b"x.png"] * n}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    names = [c.encode() for c in ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                                   "horse", "ship", "truck"]]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": names, b"num_cases_per_batch": n, b"num_vis": 3072}, f)
    return root


def test_cifar_format(tmp_path):
    root = write_cifar(tmp_path / "cifar")
    data = load_dataset(DataConfig(dataset="cifar10", path=str(root), download=False, cache_dir=str(tmp_path / "c")))
    assert data.train_x.shape == (100, 3, 32, 32) and data.test_x.shape == (20, 3, 32, 32)
    assert data.classes[0] == "airplane"
    # pixel layout: the first 1024 bytes are the red plane, row-major
    raw = pickle.load(open(root / "cifar-10-batches-py" / "data_batch_1", "rb"))[b"data"][0]
    assert torch.equal(data.train_x[0, 0].flatten(), torch.from_numpy(raw[:1024].copy()))


def test_cifar_refuses_foreign_pickle(tmp_path):
    root = write_cifar(tmp_path / "cifar")
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))
    with open(root / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({b"data": Evil()}, f)
    with pytest.raises(DataError, match="forbidden"):
        load_dataset(DataConfig(dataset="cifar10", path=str(root), download=False, cache_dir=str(tmp_path / "c")))
    assert not marker.exists()


def test_image_folder_with_corrupt_file(tmp_path):
    from PIL import Image
    for cls in ("cat", "dog"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(6):
            Image.new("RGB", (40, 30), (i * 40, 10, 200)).save(tmp_path / "imgs" / cls / f"{i}.png")
    (tmp_path / "imgs" / "dog" / "broken.png").write_bytes(b"not a png")
    cfg = dict(dataset="image_folder", path=str(tmp_path / "imgs"), image_size=16, cache_dir=str(tmp_path / "c"))
    with pytest.raises(DataError, match="broken.png"):
        load_dataset(DataConfig(**cfg))
    data = load_dataset(DataConfig(**cfg, corrupt_images="skip"))
    assert data.classes == ["cat", "dog"]
    assert len(data.train_y) + len(data.test_y) == 12 and data.train_x.shape[1:] == (3, 16, 16)


def test_split_is_seeded_and_disjoint():
    a_train, a_val = split_indices(100, 0.2, seed=3)
    b_train, b_val = split_indices(100, 0.2, seed=3)
    assert torch.equal(a_val, b_val) and len(a_val) == 20
    assert set(a_train.tolist()).isdisjoint(a_val.tolist())
    assert not torch.equal(a_val, split_indices(100, 0.2, seed=4)[1])


def test_crop_matches_padded_slice():
    x = torch.arange(2 * 1 * 5 * 5, dtype=torch.uint8).view(2, 1, 5, 5)
    shifts = torch.tensor([[0, 4], [2, 1]])
    out = crop(x, shifts, pad=2)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i, (dy, dx) in enumerate(shifts.tolist()):
        assert torch.equal(out[i], padded[i, :, dy:dy + 5, dx:dx + 5])


def test_epoch_plan_is_seeded_per_epoch():
    a, b = epoch_plan(50, 4, True, seed=0, epoch=1), epoch_plan(50, 4, True, seed=0, epoch=1)
    assert torch.equal(a.order, b.order) and torch.equal(a.shifts, b.shifts)
    assert not torch.equal(a.order, epoch_plan(50, 4, True, seed=0, epoch=2).order)
