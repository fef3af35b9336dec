"""A Trainer whose images stream in as this rank's Ray Data shards (data/stream.py) instead of
lying on its device: the same steps, augmentation, precise batch norm and validation.

Ray Train splits every dataset into equal shards, so every rank takes the same number of
batches: DDP's collectives stay in step. An unreadable image leaves its batch one image short
and is counted; rank 0 names the epoch's count, over every rank, and the first such file in one line.
"""
from __future__ import annotations

import resource
import time
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from convlens.data.stream import eval_batch_size
from convlens.training.dist import all_gather_objects
from convlens.training.evaluate import evaluate_batches
from convlens.training.trainer import Trainer

SHUFFLE_BATCHES = 8


@dataclass
class ShardData:
    """A worker's view of a streamed dataset: its shards and what the driver measured."""
    shards: dict  # split name -> ray.data.DataIterator
    classes: list[str]
    n_train: int
    mean: list[float]
    std: list[float]
    in_chans: int = 3

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def norm_stats(self, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.tensor(self.mean, device=device).view(1, -1, 1, 1),
                torch.tensor(self.std, device=device).view(1, -1, 1, 1))


class Skipped:
    """Unreadable files met in one epoch, each counted once though training, precise batch norm
    and validation, on any rank, may each meet it: path -> error, in the order first met."""

    def __init__(self, errors: dict[str, str] | None = None):
        self.errors = dict(errors or {})

    @property
    def count(self) -> int:
        return len(self.errors)

    def note(self, paths: np.ndarray, errors: np.ndarray) -> None:
        for path, error in zip(paths.tolist(), errors.tolist()):
            self.errors.setdefault(path, error)

    @classmethod
    def merged(cls, ranks: list[dict[str, str]]) -> Skipped:
        """Every rank's files (all_gather_objects of each rank's `errors`), rank 0's first."""
        out = cls()
        for errors in ranks:
            for path, error in errors.items():
                out.errors.setdefault(path, error)
        return out

    def line(self, name: str, epoch: int) -> str | None:
        if not self.count:
            return None
        path, error = next(iter(self.errors.items()))
        return f"[convlens] {name} epoch {epoch}: skipped {self.count} unreadable image(s), the first {path} ({error})"


def shard_batches(shard, batch_size: int, device, skipped: Skipped, drop_last: bool, shuffle: bool = False
                  ) -> Iterator[tuple[torch.Tensor, torch.Tensor, np.ndarray]]:
    """(uint8 images, labels) on the device and the readable rows' mask, per batch of the shard;
    shuffle: rows mixed in a buffer of SHUFFLE_BATCHES batches (training)."""
    buffer = SHUFFLE_BATCHES * batch_size if shuffle else None
    for batch in shard.iter_batches(batch_size=batch_size, batch_format="numpy", drop_last=drop_last,
                                    prefetch_batches=2, local_shuffle_buffer_size=buffer):
        ok = batch["error"] == ""
        if not ok.all():
            skipped.note(batch["path"][~ok], batch["error"][~ok])
        images, labels = batch["image"][ok], batch["label"][ok]  # a copy: Ray's arrays are read-only
        yield (torch.from_numpy(images).to(device, non_blocking=True),
               torch.from_numpy(labels).to(device, non_blocking=True), ok)


class StreamTrainer(Trainer):
    streamed = True

    def use_data(self, data: ShardData) -> int:
        self.shards, self.skipped, self.first_batch_seconds = data.shards, Skipped(), None
        return data.n_train

    def batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's steps of the epoch as its shard delivers them (Ray Data reshuffles the files
        every epoch); the random crop and flip come from the epoch's plan by stream position."""
        B, b = self.job.data.batch_size, self.local_batch
        plan = self.augment.plan(self.steps * B, self.job.run.seed, epoch).to(self.device)
        stream = shard_batches(self.shards["train"], b, self.device, self.skipped, drop_last=True, shuffle=True)
        asked = time.perf_counter()
        for step, (x, y, ok) in zip(range(self.steps), stream):
            if step == 0:
                self.first_batch_seconds = time.perf_counter() - asked
            start = step * B + self.rank * b
            pos = torch.arange(start, start + b, device=self.device)[torch.from_numpy(ok).to(self.device)]
            yield self.inputs(self.augment.train(x, plan, pos), y)

    def bn_batches(self) -> Iterator[torch.Tensor]:
        if "bn" not in self.shards:
            return
        for x, y, _ in shard_batches(self.shards["bn"], self.local_batch, self.device, self.skipped, drop_last=True):
            yield self.inputs(self.augment.eval(x), y)[0]

    def validate(self) -> dict:
        batches = ((x, y) for x, y, _ in shard_batches(self.shards["val"], eval_batch_size(self.job),
                                                        self.device, self.skipped, drop_last=False))
        return evaluate_batches(self.model, batches, self.job.run.task, self.num_out, self.augment.eval,
                                self.device, self.amp, self.channels_last)

    def run_epoch(self, epoch: int, on_step=None) -> dict:
        """The in-memory path's metrics, plus how long the first batch took to come, each rank's
        peak resident memory (what streaming is for) and the unreadable files skipped (rank 0's
        line names their count and the first)."""
        metrics = super().run_epoch(epoch, on_step)
        if "stop_reason" in metrics:
            return metrics
        skipped, self.skipped = Skipped.merged(all_gather_objects(self.skipped.errors)), Skipped()
        line = skipped.line(self.job.run.name, epoch)
        if line and self.rank == 0:
            print(line, flush=True)
        peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # Linux: KiB
        return {**metrics, "first_batch_seconds": self.first_batch_seconds,
                "peak_rss_gb": all_gather_objects(round(peak_gb, 3)), "skipped_images": skipped.count}


def shard_data(streamed: dict) -> ShardData:
    """This rank's shards of every streamed split, with the driver's worker_config."""
    import ray.train
    names = ("train", "val", "bn") if streamed["bn"] else ("train", "val")
    shards = {name: ray.train.get_dataset_shard(name) for name in names}
    return ShardData(shards, streamed["classes"], streamed["n_train"], streamed["mean"], streamed["std"])
