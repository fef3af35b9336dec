"""data.stream: an image folder decoded by Ray Data and sharded to the Train workers, against the
in-memory path, on a small real folder (300 Fashion-MNIST images as PNGs) and real Ray.

One streamed run (module fixture) serves every test of what a run does: two DDP workers, precise
batch norm, a broken PNG among the files and rank 0 killed in epoch 2; the analysis and probes
then read its checkpoint. Each other test trains nothing or something no other test trains."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError

from conftest import FMNIST, assert_nothing_lost, inject, read_metrics, tiny_spec
from convlens.base.errors import ConfigError, DataError
from convlens.data.folder_index import index_folder
from convlens.data.images import split_indices
from convlens.data.load import load_dataset
from convlens.data.stream import StreamedData, decide, image_dataset
from convlens.specs.base import validate
from convlens.specs.train import DataConfig, TrainJob
from convlens.training.streamed import Skipped, shard_batches

CLASSES = (0, 1, 8)  # T-shirt, trouser, bag: apart enough that a tiny net learns them in a few steps
PER_CLASS = 100
CHANCE = 1 / len(CLASSES)


@pytest.fixture(scope="module")
def png_folder(tmp_path_factory, cache_dir):
    """100 Fashion-MNIST training images of each of three classes as PNGs under class folders."""
    fm = load_dataset(DataConfig(dataset="fashion_mnist", path=str(FMNIST), download=False, cache_dir=cache_dir))
    root = tmp_path_factory.mktemp("folder") / "pngs"
    for c in CLASSES:
        (root / f"class{c}").mkdir(parents=True)
        for i, j in enumerate((fm.train_y == c).nonzero()[:PER_CLASS, 0].tolist()):
            Image.fromarray(fm.train_x[j, 0].numpy()).save(root / f"class{c}" / f"{i:03d}.png")
    return root


def folder_data(path, **fields) -> dict:
    return {"dataset": "image_folder", "path": str(path), "image_size": 28, "stream": True,
            "train_subset": None, "test_subset": None, "batch_size": 32, **fields}


def with_broken_training_file(png_folder, out):
    """A copy of the folder plus one broken PNG that the seeded hold-out puts among the training
    files (so the Train workers meet it, not only the final test)."""
    shutil.copytree(png_folder, out)
    for i in range(10):
        broken = out / "class1" / f"zz-broken{i}.png"
        broken.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
        index = index_folder(DataConfig(**folder_data(out)))
        if str(broken) in {p for p, _ in index.train}:
            return out, broken
        broken.unlink()
    raise AssertionError("no name put the broken file among the training files")


@pytest.fixture(scope="module")
def streamed_run(ray_cluster, png_folder, tmp_path_factory, cache_dir):
    """(job, summary, broken file) of one streamed run: 2 workers with synced batch norm, precise
    batch norm on, 3 epochs, a broken PNG among the training files, and rank 0 killed at step 2 of
    epoch 2 (max_failures 1): the retry resumes the stream from epoch 1's checkpoint."""
    from convlens.training.run import train
    tmp = tmp_path_factory.mktemp("streamed")
    folder, broken = with_broken_training_file(png_folder, tmp / "with-broken")
    job = validate(TrainJob, tiny_spec(tmp / "runs", cache_dir, "streamed", data=folder_data(folder),
                                       run={"epochs": 3, "workers": 2, "max_failures": 1},
                                       model={"layers": [1, 1], "width": 8, "sync_bn": True}))
    with pytest.MonkeyPatch.context() as mp:
        inject(mp, {"kind": "kill", "run": "streamed", "at": "0:2:2"})
        summary = train(job)
    return job, summary, broken


def test_streamed_split_labels_classes_and_pixels_match_in_memory(ray_cluster, png_folder, tmp_path):
    cfg = DataConfig(dataset="image_folder", path=str(png_folder), image_size=20, cache_dir=str(tmp_path),
                     train_subset=200)
    data, index = load_dataset(cfg), index_folder(cfg)
    assert index.classes == data.classes == ["class0", "class1", "class8"]
    assert [label for _, label in index.train] == data.train_y.tolist()
    assert [label for _, label in index.test] == data.test_y.tolist()
    train, val = index.train_val(0.1, seed=3)
    assert len(val) == 20 and not set(train) & set(val)
    rows = {r["path"]: r for r in image_dataset(index.train, 20).take_all()}  # any order: keyed by file
    streamed = np.stack([rows[path]["image"] for path, _ in index.train])
    assert torch.equal(torch.from_numpy(streamed), data.train_x)
    _, val_idx = split_indices(len(data.train_y), 0.1, seed=3)  # the Trainer's validation split
    assert torch.equal(torch.from_numpy(np.stack([rows[path]["image"] for path, _ in val])), data.train_x[val_idx])
    measured = StreamedData(index, 20)
    measured.measure()
    assert np.allclose(measured.mean_std(), data.mean_std(), atol=1e-5)


def test_stream_auto_chooses_by_the_memory_budget(png_folder):
    index = index_folder(DataConfig(dataset="image_folder", path=str(png_folder), image_size=28))
    small = DataConfig(dataset="image_folder", path=str(png_folder), image_size=28, memory_budget_gb=1e-4)
    streams, line = decide(small, index)
    assert streams and line.startswith(f"data.stream = auto: streaming ({len(index.train)} training images")
    streams, line = decide(small.model_copy(update={"memory_budget_gb": 1.0}), index)
    assert not streams and "in memory" in line
    with pytest.raises(ValidationError, match="data.stream"):
        DataConfig(dataset="fashion_mnist", path=str(FMNIST), stream=True)
    with pytest.raises(ValidationError, match="stream"):
        TrainJob.model_validate({"data": {"dataset": "cifar10", "path": "/tmp", "stream": True}})


def test_unreadable_images_are_skipped_and_counted(ray_cluster, png_folder, tmp_path):
    good = [(str(p), 0) for p in sorted((png_folder / "class0").glob("*.png"))[:10]]
    (tmp_path / "garbage.png").write_bytes(b"not an image")
    (tmp_path / "cut.png").write_bytes((png_folder / "class0" / "000.png").read_bytes()[:60])
    items = good + [(str(tmp_path / "garbage.png"), 1), (str(tmp_path / "cut.png"), 1)]
    skipped = Skipped()
    ds = image_dataset(items, 16)
    batches = list(shard_batches(ds.iterator(), 4, torch.device("cpu"), skipped, drop_last=False))
    assert sum(len(y) for _, y, _ in batches) == 10 and skipped.count == 2
    assert set(skipped.errors) == {items[-2][0], items[-1][0]}
    other_rank = {items[-1][0]: "UnidentifiedImageError", "/elsewhere.png": "OSError"}
    line = Skipped.merged([skipped.errors, other_rank]).line("run", 1)
    assert line.startswith("[convlens] run epoch 1: skipped 3 unreadable image(s), the first ")


def test_empty_class_folder_or_folder_without_images_fails_before_a_worker(tiny_job, tmp_path):
    from convlens.training.run import prepare
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "a" / "x.png")
    with pytest.raises(DataError, match=r"class folder '.*/b' has no images"):
        prepare(tiny_job("empty-class", data=folder_data(tmp_path)))
    (tmp_path / "a" / "x.png").unlink()
    with pytest.raises(DataError, match="no images"):
        prepare(tiny_job("no-images", data=folder_data(tmp_path)))


def test_workers_holding_every_cpu_are_refused_before_they_start(ray_cluster, tiny_job, png_folder):
    """Ray Data would get no CPU to decode with, and the first batch would never come."""
    from convlens.training.run import train
    job = tiny_job("stream-no-cpu", data=folder_data(png_folder), run={"workers": 4})
    with pytest.raises(ConfigError, match=r"run.cpus_per_worker = 1 leaves under one of the Ray cluster's 4 CPUs"):
        train(job)
    assert not job.run_dir.exists()


def test_a_streamed_ddp_run_learns(streamed_run):
    """Two workers take equal shards of every split (the same number of batches, or DDP's
    collectives would hang) and the run learns, well above chance."""
    job, summary, _ = streamed_run
    history = read_metrics(job.run_dir)
    assert summary["workers"] == 2 and summary["test_accuracy"] > CHANCE + 0.2
    assert len(history[-1]["peak_rss_gb"]) == 2 and history[-1]["first_batch_seconds"] > 0


def test_a_killed_worker_resumes_the_stream_losing_nothing(streamed_run):
    job, _, _ = streamed_run
    train, _ = index_folder(job.data).train_val(job.data.val_fraction, job.run.seed)
    assert len(list((job.run_dir / ".faults").glob("kill-*"))) == 1
    assert_nothing_lost(job.run_dir, 3, len(train) // job.data.batch_size, [1, 2])


def test_a_broken_file_is_skipped_and_counted_once_an_epoch(streamed_run):
    """Training, precise batch norm and validation may all meet it: it counts once an epoch."""
    job, _, _ = streamed_run
    per_epoch = [m["skipped_images"] for m in read_metrics(job.run_dir)]
    assert max(per_epoch) == 1 and sum(per_epoch) >= 1, per_epoch


def test_analysis_and_probes_read_only_the_images_they_need(streamed_run, monkeypatch, tmp_path):
    """The checkpoint records the run's normalization and that it streamed; the analysis and the
    probes then decode the files they pick (each once), never load the whole folder."""
    from convlens.analysis.base import build_context
    from convlens.analysis.job import analyze
    from convlens.analysis.probes import probe_run
    from convlens.data import folder_images
    from convlens.specs.analyze import AnalyzeJob, AnalyzeOptions
    from convlens.specs.probe import ProbeJob
    from convlens.storage import checkpoint as ckpt, restore
    job, _, broken = streamed_run
    best = ckpt.best_checkpoint(job.run_dir)
    recorded = ckpt.load_checkpoint(best)["data"]
    assert recorded["streamed"] is True and len(recorded["mean"]) == len(recorded["std"]) == 3
    decoded = []
    monkeypatch.setattr(restore, "load_dataset", lambda cfg: pytest.fail("loaded the whole dataset"))
    monkeypatch.setattr(folder_images, "decode_image",
                        lambda path, size: decoded.append(path) or np.zeros((3, size, size), np.uint8))
    ctx = build_context(best, AnalyzeOptions(num_images=16, num_train=32))
    assert len(decoded) == len(set(decoded)) == 48 and len(ctx.labels) == 16
    assert ctx.mean.flatten().tolist() == pytest.approx(recorded["mean"])
    index = index_folder(job.data)
    decoded.clear()
    probe = ProbeJob(runs=[str(job.run_dir)], stages=[1, 2], probe_epochs=1, max_train=64)
    result = probe_run(job.run_dir, probe)
    assert len(decoded) == len(set(decoded)) == 64 + len(index.test)
    assert result["chance"] == pytest.approx(CHANCE) and set(result["stages"]) == {"1", "2"}
    monkeypatch.undo()  # the real files, in Ray tasks
    out = analyze(validate(AnalyzeJob, {"runs": [str(job.run_dir)], "methods": ["gradcam"], "out": str(tmp_path / "a"),
                                        "options": {"num_images": 16, "num_train": 32}, "similarity": False,
                                        "compare": "none", "quiet": True}))
    assert [f["method"] for f in json.loads((out / "index.json").read_text())["files"]][:1] == ["gradcam"]


def test_a_sweep_leaves_each_trial_a_cpu_to_decode_with(ray_cluster, png_folder, tmp_path, cache_dir, capsys):
    """Tune counts a trial's own CPUs only; a streamed trial also needs one for Ray Data, or two
    trials would hold all 4 CPUs and neither's first batch would come. (A whole streamed sweep
    costs minutes here; one ran by hand: the README's CPU figures.)"""
    from convlens.specs.sweep import SweepJob, TrialResources
    from convlens.sweep.tune_runner import concurrency
    base = validate(TrainJob, tiny_spec(tmp_path, cache_dir, "base", data=folder_data(png_folder)))
    sweep = SweepJob.model_construct(max_concurrent=2, resources=TrialResources())
    assert concurrency(sweep, base) == 1  # 0.5 (trial) + 1 (worker) + 1 (Ray Data) per trial
    assert "data.stream = true: streaming" in capsys.readouterr().out
    in_memory = base.model_copy(update={"data": base.data.model_copy(update={"stream": False})})
    assert concurrency(sweep, in_memory) == 2
