"""An image folder streamed through Ray Data instead of held decoded in every Train worker.

The driver lists the files (folder_index.py); reading, decoding and resizing run as Ray Data
tasks in the CPUs the Train workers leave free, and each worker takes its shard of every split
through Ray Train's dataset sharding, as uint8 batches for the same on-device augmentation as
the in-memory path. An unreadable file becomes a row marked with its error, which the worker
drops and counts: one bad JPEG must not end an epoch halfway.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from convlens.base.errors import ConfigError
from convlens.data.folder_index import FolderIndex, Items
from convlens.data.image_folder import decode_image
from convlens.raycluster import allocation
from convlens.raycluster.env import verbose

# A block (and decoding task) holds about BLOCK_BYTES of decoded images, within BLOCK_ROWS files:
# Ray's cost per task and block is about that of decoding 50 small PNGs, so 128-file blocks of
# 28 px images held streaming to 1-3k images/s; 16 MB is 106 images at 224 px, 1024 at 28 px.
BLOCK_BYTES = 16 * 2 ** 20
BLOCK_ROWS = (32, 1024)
DECODE_BATCH = 256  # images per decoding call at most
STATS_IMAGES = 2048  # training images the normalization statistics are taken from
EVAL_PIXELS = 512 * 64 * 64  # an evaluation batch's pixels at most: 512 images of 64 px, 41 of 224 px


def node_memory_gb() -> float:
    """The memory this job has on its node: what Slurm granted it where it set a limit, else the
    machine's (every node of a Slurm job is granted the same)."""
    granted = allocation.granted(cpus=0, gpus=0).mem_bytes
    return (granted or os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")) / 1e9


def memory_budget_gb(cfg) -> float:
    return cfg.memory_budget_gb or node_memory_gb() / 4


def decide(cfg, index: FolderIndex) -> tuple[bool, str]:
    """Whether to stream, and the line that says which path and why."""
    size, budget = index.decoded_gb(cfg.image_size), memory_budget_gb(cfg)
    figures = (f"{len(index.train)} training images at {cfg.image_size} px take {size:.2f} GB decoded, "
               f"data.memory_budget_gb {budget:.2f}")
    if cfg.stream != "auto":
        return cfg.stream, f"data.stream = {str(cfg.stream).lower()}: {'streaming' if cfg.stream else 'in memory'} ({figures})"
    stream = size > budget
    return stream, f"data.stream = auto: {'streaming' if stream else 'in memory'} ({figures})"


def eval_batch_size(job) -> int:
    """run.eval_batch_size, capped to EVAL_PIXELS' worth of the network's input (but never under a
    worker's training batch): at 224 px a batch of 512 would add about 1 GB of activations to
    the worker, more than all its streamed data."""
    side = job.data.resize or job.data.image_size
    cap = max(job.data.batch_size // job.run.workers, EVAL_PIXELS // side ** 2)
    return min(job.run.eval_batch_size, cap)


def decode_batch(batch: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
    """Ray Data's decoding step: paths and labels in, (B, 3, size, size) uint8 images out, with
    `error` empty or naming what made a file unreadable (its image then zeros)."""
    images, errors = [], []
    for path in batch["path"]:
        try:
            images.append(decode_image(path, size))
            errors.append("")
        except Exception as err:  # PIL raises many kinds for a damaged file
            images.append(np.zeros((3, size, size), np.uint8))
            errors.append(type(err).__name__)
    return {"image": np.stack(images), "label": batch["label"].astype(np.int64), "path": batch["path"],
            "error": np.array(errors, dtype=object)}


def quiet_data() -> None:
    """Ray Data's progress bars and per-execution log lines stay off unless --verbose (the
    datasets, and the Train workers, take the driver's DataContext with them)."""
    import logging
    from ray.data import DataContext
    if verbose():
        return
    ctx = DataContext.get_current()
    ctx.enable_progress_bars = ctx.print_on_execution_start = ctx.enable_auto_log_stats = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)


def block_rows(size: int) -> int:
    """Files per block for images of size x size px: about BLOCK_BYTES decoded, within BLOCK_ROWS."""
    return int(min(max(BLOCK_BYTES // (3 * size * size), BLOCK_ROWS[0]), BLOCK_ROWS[1]))


def image_dataset(items: Items, size: int, shuffle_seed: int | None = None, cpus: float = 1.0):
    """A Ray Dataset of the decoded images. shuffle_seed: the files in a seeded order whose
    blocks come in a new seeded order every epoch (Ray Data's cheap alternative to a global
    shuffle; the worker's local shuffle buffer mixes the blocks' rows). cpus: what one decoding
    task asks Ray for (decode_cpus)."""
    import ray.data
    from ray.data import RandomSeedConfig
    rows = block_rows(size)
    quiet_data()
    if shuffle_seed is not None:
        order = torch.randperm(len(items), generator=torch.Generator().manual_seed(shuffle_seed)).tolist()
        items = [items[i] for i in order]
    ds = ray.data.from_items([{"path": p, "label": label} for p, label in items],
                             override_num_blocks=max(1, -(-len(items) // rows)))
    if shuffle_seed is not None:
        ds = ds.randomize_block_order(seed=RandomSeedConfig(seed=shuffle_seed, reseed_after_execution=True))
    return ds.map_batches(decode_batch, fn_kwargs={"size": size}, batch_size=min(rows, DECODE_BATCH),
                          batch_format="numpy", num_cpus=cpus)


def channel_sums(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-channel sums of x and x^2 over a decoded batch's readable images, in [0, 1] units."""
    x = batch["image"][batch["error"] == ""].astype(np.float64) / 255
    return {"sum": x.sum((0, 2, 3))[None], "sq": (x ** 2).sum((0, 2, 3))[None],
            "n": np.array([x.shape[0] * x.shape[2] * x.shape[3]])}


def mean_std(items: Items, size: int) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the first STATS_IMAGES training images, decoded by Ray Data
    (the in-memory path takes the same images' statistics while there are at most that many)."""
    sums = image_dataset(items[:STATS_IMAGES], size).map_batches(channel_sums, batch_format="numpy")
    rows = sums.take_all()
    s, sq = sum(r["sum"] for r in rows), sum(r["sq"] for r in rows)
    n = sum(int(r["n"]) for r in rows)
    mean = s / n
    std = np.sqrt(np.maximum(sq - n * mean ** 2, 0) / max(n - 1, 1))
    return mean.tolist(), std.tolist()


@dataclass
class StreamedData:
    """The driver's view of a streamed dataset: its files and splits, classes and statistics."""
    index: FolderIndex
    image_size: int
    mean: list[float] | None = None
    std: list[float] | None = None

    @property
    def classes(self) -> list[str]:
        return self.index.classes

    @property
    def num_classes(self) -> int:
        return len(self.index.classes)

    in_chans = 3  # decode_image makes every image RGB

    def measure(self) -> None:
        """Fill mean and std (Ray must be up: its tasks decode the images)."""
        self.mean, self.std = mean_std(self.index.train, self.image_size)

    def mean_std(self) -> tuple[list[float], list[float]]:
        return self.mean, self.std

    def norm_stats(self, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.tensor(self.mean, device=device).view(1, -1, 1, 1),
                torch.tensor(self.std, device=device).view(1, -1, 1, 1))

    def datasets(self, job) -> dict:
        """The splits the Train workers shard: training (reshuffled every epoch), validation and
        the fixed images precise batch norm recomputes its statistics on."""
        train, val = self.index.train_val(job.data.val_fraction, job.run.seed)
        n_bn = min(job.run.precise_bn_images, len(train)) // job.data.batch_size * job.data.batch_size
        cpus = decode_cpus(job.run)
        out = {"train": image_dataset(train, self.image_size, shuffle_seed=job.run.seed, cpus=cpus),
               "val": image_dataset(val, self.image_size, cpus=cpus)}
        return {**out, "bn": image_dataset(train[:n_bn], self.image_size, cpus=cpus)} if n_bn else out

    def test_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The test split's readable images, decoded by Ray Data, for the driver's final test;
        one line names the unreadable ones' count and the first."""
        ds = image_dataset(self.index.test, self.image_size)
        bad = []
        for batch in ds.iter_batches(batch_size=batch_size, batch_format="numpy"):
            ok = batch["error"] == ""
            bad += [f"{p} ({e})" for p, e in zip(batch["path"][~ok], batch["error"][~ok])]
            yield torch.from_numpy(batch["image"][ok]), torch.from_numpy(batch["label"][ok])
        if bad:
            print(f"[convlens] test split: skipped {len(bad)} unreadable image(s), the first {bad[0]}", flush=True)

    def worker_config(self, job) -> dict:
        """What a Train worker needs besides its shards."""
        n_train = len(self.index.train_val(job.data.val_fraction, job.run.seed)[0])
        bn = min(job.run.precise_bn_images, n_train) >= job.data.batch_size
        return {"classes": self.classes, "n_train": n_train, "mean": self.mean, "std": self.std, "bn": bn}


def decode_cpus(run) -> float:
    """What one decoding task asks Ray for: a CPU, or where the workers are spread over several
    nodes (run.placement spread), the least a node has left beside its share of the workers:
    two workers of 0.5 CPU on two one-CPU nodes leave half a CPU on each, and tasks asking for
    a whole one would never start (the first batch would never come)."""
    import ray
    if run.placement == "pack":
        return 1.0
    nodes = [n["Resources"].get("CPU", 0) for n in ray.nodes() if n["Alive"]]
    held = -(-run.workers // len(nodes)) * run.cpus_per_worker  # the most workers a node holds
    return min([1.0, *(cpus - held for cpus in nodes if cpus - held > 1e-9)])


def data_config(run):
    """Ray Train's DataConfig: Ray Data plans with the cluster's CPUs less the Train workers'
    (Ray Train V2 does not subtract them itself, and Data would count on CPUs it cannot get)."""
    import ray
    import ray.train
    from ray.data import ExecutionOptions, ExecutionResources
    free = ray.cluster_resources().get("CPU", 0) - run.workers * run.cpus_per_worker
    return ray.train.DataConfig(execution_options=ExecutionOptions(resource_limits=ExecutionResources(cpu=free)))


def check_cpus_left(run) -> None:
    """Fail now if the Train workers would hold every CPU: Ray Data could decode nothing and the
    first batch would never come."""
    import ray
    total = ray.cluster_resources().get("CPU", 0)
    if total - run.workers * run.cpus_per_worker < 1 - 1e-9:
        raise ConfigError(f"data.stream: run.workers = {run.workers} x run.cpus_per_worker = {run.cpus_per_worker:g} "
                          f"leaves under one of the Ray cluster's {total:g} CPUs to decode the streamed images; "
                          f"lower run.cpus_per_worker (e.g. {max(0.5, (total - 1) / run.workers):g})")
