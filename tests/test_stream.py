"""data.stream: an image folder decoded by Ray Data and sharded to the Train workers, against the
in-memory path, on small real folders (Fashion-MNIST exported as PNGs) and real Ray."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError

from conftest import FMNIST, assert_nothing_lost, inject, read_metrics, steps_per_epoch
from convlens.data.folder_index import index_folder
from convlens.data.load import load_dataset
from convlens.data.stream import StreamedData, decide, image_dataset
from convlens.base.errors import DataError
from convlens.specs.train import DataConfig, TrainJob
from convlens.training.streamed import Skipped, shard_batches

CLASSES = (0, 1, 8)  # T-shirt, trouser, bag: apart enough that a tiny net learns them in two epochs


@pytest.fixture(scope="module")
def png_folder(tmp_path_factory):
    """120 Fashion-MNIST images of each of three classes as PNGs under class folders."""
    fm = load_dataset(DataConfig(dataset="fashion_mnist", path=str(FMNIST), download=False,
                                 cache_dir=str(tmp_path_factory.mktemp("fm-cache"))))
    root = tmp_path_factory.mktemp("folder") / "pngs"
    for c in CLASSES:
        (root / f"class{c}").mkdir(parents=True)
        for i, j in enumerate((fm.train_y == c).nonzero()[:120, 0].tolist()):
            Image.fromarray(fm.train_x[j, 0].numpy()).save(root / f"class{c}" / f"{i:03d}.png")
    return root


def folder_job(tiny_job, path, name, stream=True, **sections):
    data = {"dataset": "image_folder", "path": str(path), "image_size": 28, "stream": stream,
            "train_subset": None, "test_subset": None, "batch_size": 32, **sections.pop("data", {})}
    return tiny_job(name, data=data, run={"epochs": 2, **sections.pop("run", {})}, **sections)


def test_streamed_split_labels_classes_and_pixels_match_in_memory(ray_cluster, png_folder, tmp_path):
    cfg = DataConfig(dataset="image_folder", path=str(png_folder), image_size=20, cache_dir=str(tmp_path),
                     train_subset=250)
    data, index = load_dataset(cfg), index_folder(cfg)
    assert index.classes == data.classes == ["class0", "class1", "class8"]
    assert [label for _, label in index.train] == data.train_y.tolist()
    assert [label for _, label in index.test] == data.test_y.tolist()
    train, val = index.train_val(0.1, seed=3)
    assert len(val) == 25 and not set(train) & set(val)
    rows = {r["path"]: r for r in image_dataset(index.train, 20).take_all()}  # any order: keyed by file
    streamed = np.stack([rows[path]["image"] for path, _ in index.train])
    assert torch.equal(torch.from_numpy(streamed), data.train_x)
    measured = StreamedData(index, 20)
    measured.measure()
    assert np.allclose(measured.mean_std(), data.mean_std(), atol=1e-5)


def test_stream_auto_chooses_by_the_memory_budget(png_folder):
    index = index_folder(DataConfig(dataset="image_folder", path=str(png_folder), image_size=28))
    small = DataConfig(dataset="image_folder", path=str(png_folder), image_size=28, memory_budget_gb=1e-4)
    streams, line = decide(small, index)
    assert streams and line.startswith("data.stream = auto: streaming (288 training images")
    streams, line = decide(small.model_copy(update={"memory_budget_gb": 1.0}), index)
    assert not streams and "in memory" in line
    with pytest.raises(ValidationError, match="data.stream"):
        DataConfig(dataset="fashion_mnist", path=str(FMNIST), stream=True)


def test_unreadable_images_are_skipped_and_counted(ray_cluster, png_folder, tmp_path):
    good = [(str(p), 0) for p in sorted((png_folder / "class0").glob("*.png"))[:10]]
    (tmp_path / "garbage.png").write_bytes(b"not an image")
    (tmp_path / "cut.png").write_bytes((png_folder / "class0" / "000.png").read_bytes()[:60])
    items = good + [(str(tmp_path / "garbage.png"), 1), (str(tmp_path / "cut.png"), 1)]
    skipped = Skipped()
    ds = image_dataset(items, 16)
    batches = list(shard_batches(ds.iterator(), 4, torch.device("cpu"), skipped, drop_last=False))
    assert sum(len(y) for _, y, _ in batches) == 10 and skipped.count == 2
    assert "garbage.png (" in skipped.first or "cut.png (" in skipped.first
    assert "skipped 2 unreadable image(s), the first" in skipped.line("run", 1, 0)


def test_empty_class_folder_or_folder_without_images_fails_before_a_worker(tiny_job, png_folder, tmp_path):
    from convlens.training.run import prepare
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "a" / "x.png")
    with pytest.raises(DataError, match=r"class folder '.*/b' has no images"):
        prepare(folder_job(tiny_job, tmp_path, "empty-class"))
    (tmp_path / "a" / "x.png").unlink()
    with pytest.raises(DataError, match="no images"):
        prepare(folder_job(tiny_job, tmp_path, "no-images"))


def test_a_short_streamed_run_learns_despite_a_bad_file(ray_cluster, tiny_job, png_folder, tmp_path, capfd):
    import shutil
    from convlens.training.run import train
    folder = tmp_path / "with-bad"
    shutil.copytree(png_folder, folder)
    (folder / "class1" / "zz-broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    job = folder_job(tiny_job, folder, "streamed", run={"quiet": False}, optim={"lr": 0.05})
    summary = train(job)
    assert summary["test_accuracy"] > 0.55  # chance: 1/3
    assert [m["epoch"] for m in read_metrics(job.run_dir)] == [1, 2]
    out = capfd.readouterr().out
    assert "data.stream = true: streaming (289 training images" in out
    assert "streamed epoch 1: rank 0 skipped 1 unreadable image(s), the first " in out and "zz-broken.png (" in out


def test_resume_continues_a_streamed_run(ray_cluster, tiny_job, png_folder, monkeypatch):
    """A worker killed mid-epoch 2 (max_failures 1): the retry resumes the stream at epoch 2
    from epoch 1's checkpoint and finishes."""
    from convlens.training.run import train
    job = folder_job(tiny_job, png_folder, "stream-retry", run={"epochs": 3, "max_failures": 1})
    inject(monkeypatch, {"kind": "kill", "run": "stream-retry", "at": "0:2:2"})
    train(job)
    assert len(list((job.run_dir / ".faults").glob("kill-*"))) == 1
    assert_nothing_lost(job.run_dir, 3, (288 - 29) // 32, [1, 2])


def test_stream_job_spec_names_the_field():
    with pytest.raises(ValidationError, match="stream"):
        TrainJob.model_validate({"data": {"dataset": "cifar10", "path": "/tmp", "stream": True}})


def test_two_workers_stream_equal_shards(ray_cluster, tiny_job, png_folder):
    """DDP over a streamed folder: each rank takes its shard of every split (the same number of
    batches, or the collectives would hang) and the run learns as one worker's does."""
    from convlens.training.run import train
    job = folder_job(tiny_job, png_folder, "stream-ddp", run={"workers": 2},
                     model={"layers": [1, 1], "width": 8, "sync_bn": True})
    summary = train(job)
    history = read_metrics(job.run_dir)
    assert [m["steps"] for m in history] == [8, 16]
    assert len(history[-1]["peak_rss_gb"]) == 2 and history[-1]["first_batch_seconds"] > 0
    assert summary["test_accuracy"] > 0.55 and summary["workers"] == 2


def test_workers_holding_every_cpu_are_refused_before_they_start(ray_cluster, tiny_job, png_folder):
    """Ray Data would get no CPU to decode with, and the first batch would never come."""
    from convlens.base.errors import ConfigError
    from convlens.training.run import train
    job = folder_job(tiny_job, png_folder, "stream-no-cpu", run={"workers": 4})
    with pytest.raises(ConfigError, match=r"run.cpus_per_worker = 1 leaves under one of the Ray cluster's 4 CPUs"):
        train(job)
    assert not job.run_dir.exists()
