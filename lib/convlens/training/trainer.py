"""One worker's training state: its data on the device, the model, optimizer and schedule,
and the run's history and best epoch.

Every worker holds the training split as uint8 on its device, takes its slice of each global
batch of a seeded epoch plan (so N workers see exactly what one worker with the same global
batch sees) and augments it there. `step` is the training step itself; the worker loop and
the benchmark both run it.
"""
from __future__ import annotations

import time
from typing import Callable, Iterator

import torch
import torch.nn.functional as F

from convlens.data.augment import Augment
from convlens.data.images import ImageData, split_indices
from convlens.models.resnet import build_model
from convlens.specs.train import TrainJob
from convlens.storage.rundir import RunDir
from convlens.testing import faults
from convlens.training import precise_bn, tasks
from convlens.training.dist import all_reduce_
from convlens.training.evaluate import evaluate
from convlens.training.nonfinite import NonFiniteWatch, due, nonfinite_stop
from convlens.training.optim import build_optimizer, build_scheduler, retarget
from convlens.training.syncbn import convert_to_global_bn


class Trainer:
    streamed = False  # StreamTrainer: the images come from Ray Data shards

    def __init__(self, job: TrainJob, data: ImageData, rank: int = 0, world: int = 1,
                 device: torch.device = torch.device("cpu"), wrap: Callable = lambda model: model):
        """wrap: what makes the model distributed (Ray Train's prepare_model); identity alone."""
        self.job, self.rank, self.world, self.device = job, rank, world, device
        self.run = RunDir(job.run_dir)
        torch.manual_seed(job.run.seed)
        n_train = self.use_data(data)
        self.augment = Augment(job.data, *data.norm_stats(device))
        self.class_names = tasks.class_names(job.run.task, data.classes)
        self.num_out = tasks.num_outputs(job.run.task, data.num_classes)
        self.gpu = device.type == "cuda"
        torch.backends.cudnn.benchmark = self.gpu  # fixed input shapes: pick the fastest kernels once
        self.amp = self.gpu and job.run.bf16
        self.channels_last = job.run.channels_last  # faster on CPU too (about 25% for slim ResNets)
        self.raw_model = self.build_model(data.in_chans)
        self.model = wrap(torch.compile(self.raw_model) if job.run.compile else self.raw_model)
        self.local_batch = job.data.batch_size // world
        self.steps = min(n_train // job.data.batch_size, job.run.steps_per_epoch or 2 ** 62)
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = build_optimizer(trainable, job.optim, fused=self.gpu)
        self.sched, self.per_step = build_scheduler(self.opt, job.schedule, job.optim.lr, job.run.epochs, self.steps)
        self.epoch, self.history, self.best = 0, [], {"epoch": 0, "val_error": float("inf")}
        self.optimizer_steps = 0  # counted, and checkpointed: a resume neither repeats nor skips any

    def use_data(self, data: ImageData) -> int:
        """Put this rank's images on the device: the training split whole, its validation shard;
        returns the number of training images."""
        train_idx, val_idx = split_indices(len(data.train_y), self.job.data.val_fraction, self.job.run.seed)
        self.train_x, self.train_y = data.train_x[train_idx].to(self.device), data.train_y[train_idx].to(self.device)
        self.val_x = data.train_x[val_idx][self.rank::self.world].to(self.device)  # each rank evaluates its shard
        self.val_y = data.train_y[val_idx][self.rank::self.world].to(self.device)
        return len(self.train_y)

    def build_model(self, in_chans: int) -> torch.nn.Module:
        model = build_model(self.job.model, in_chans, self.num_out)
        self.arch = model.arch
        if self.job.model.sync_bn:  # on one CPU worker too: the same arithmetic as N workers
            model = (torch.nn.SyncBatchNorm.convert_sync_batchnorm(model) if self.gpu and self.world > 1
                     else convert_to_global_bn(model))
        model.freeze(self.job.model.freeze)  # after the conversion, which makes new batch norms
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model.to(self.device)

    def hardware(self) -> dict:
        """Where and how this run computes, as its attempts.jsonl records it."""
        dist = torch.distributed
        return {"device": torch.cuda.get_device_name(self.device) if self.gpu else "cpu",
                "workers": self.world, "backend": dist.get_backend() if dist.is_initialized() else None,
                "bf16": self.amp, "channels_last": self.channels_last, "compile": self.job.run.compile}

    # ---- one step
    def batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's (inputs, targets) for each step of `epoch`: its slice of each global batch."""
        plan = self.augment.plan(len(self.train_y), self.job.run.seed, epoch).to(self.device)
        B, b = self.job.data.batch_size, self.local_batch
        for step in range(self.steps):
            pos = slice(step * B + self.rank * b, step * B + (self.rank + 1) * b)
            idx = plan.order[pos]
            yield self.inputs(self.augment.train(self.train_x[idx], plan, pos), self.train_y[idx])

    def bn_batches(self) -> Iterator[torch.Tensor]:
        """This rank's slice of each global batch of the first run.precise_bn_images training
        images, in the evaluation view: the same fixed images every epoch, for any worker count."""
        B, b = self.job.data.batch_size, self.local_batch
        for start in range(0, min(self.job.run.precise_bn_images, len(self.train_y)) // B * B, B):
            rows = slice(start + self.rank * b, start + (self.rank + 1) * b)
            yield self.inputs(self.augment.eval(self.train_x[rows]), self.train_y[rows])[0]

    def inputs(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A normalized batch as the model takes it: the task's inputs and targets, memory format."""
        x, y = tasks.prepare(self.job.run.task, x, y)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y

    def step(self, x: torch.Tensor, y: torch.Tensor, epoch: int = 0, step: int = 0):
        """Forward, loss, backward, optimizer and per-step schedule; returns (loss, logits)."""
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            logits = self.model(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=self.job.optim.label_smoothing)
        loss = faults.at_step(self.run, self.rank, epoch, step, loss)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.optimizer_steps += 1
        if self.per_step:
            self.sched.step()
        return loss, logits

    # ---- one epoch
    def run_epoch(self, epoch: int, on_step: Callable | None = None) -> dict:
        """Train one epoch and validate; the metrics, or a stop report on a non-finite loss.
        on_step(steps done, sums of loss/correct/images): called after every step."""
        start = time.perf_counter()
        train = self.train_epoch(epoch, on_step)
        if "stop_reason" in train:
            return train
        if not self.per_step:
            self.sched.step()
        if self.job.run.precise_bn_images:
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                precise_bn.recompute(self.raw_model, self.bn_batches(), synced=self.job.model.sync_bn)
        val = self.validate()
        return {"epoch": epoch, **train,
                "val_loss": val["loss"], "val_accuracy": val["accuracy"], "val_error": 1 - val["accuracy"],
                "val_per_class_accuracy": val["per_class_accuracy"],
                "epoch_seconds": time.perf_counter() - start, "steps": self.optimizer_steps}

    def validate(self) -> dict:
        return evaluate(self.model, self.val_x, self.val_y, self.job.run.task, self.num_out, self.augment.eval,
                        self.job.run.eval_batch_size, self.device, self.amp, self.channels_last)

    def train_epoch(self, epoch: int, on_step: Callable | None = None) -> dict:
        self.model.train()
        sums = torch.zeros(3, device=self.device, dtype=torch.float64)  # loss sum, correct, count
        watch = NonFiniteWatch(self.device)
        lr = self.opt.param_groups[0]["lr"]
        t0 = time.perf_counter()
        for step, (x, y) in enumerate(self.batches(epoch)):
            loss, logits = self.step(x, y, epoch, step)
            watch.note(loss, (epoch - 1) * self.steps + step)
            with torch.no_grad():
                sums[0] += loss.detach().double() * len(y)
                sums[1] += (logits.argmax(1) == y).sum()
                sums[2] += len(y)
            if on_step is not None:
                on_step(step + 1, sums)
            if due(step, self.steps):
                first_bad = watch.check(final=step + 1 == self.steps)
                if first_bad is not None:
                    return nonfinite_stop(epoch, first_bad, self.steps)
        all_reduce_(sums)
        seconds = time.perf_counter() - t0
        return {"train_loss": float(sums[0] / sums[2]), "train_accuracy": float(sums[1] / sums[2]),
                "images_per_second": float(sums[2]) / max(seconds, 1e-9), "lr": lr}

    def record(self, metrics: dict) -> None:
        """A finished epoch joins the history; it becomes the best if its validation error is lowest."""
        self.history.append(metrics)
        if metrics["val_error"] < self.best["val_error"]:
            self.best = {"epoch": metrics["epoch"], "val_error": metrics["val_error"]}
        self.epoch = metrics["epoch"]

    # ---- checkpointed state
    def state_dict(self) -> dict:
        return {"model": strip_prefix(self.raw_model.state_dict()), "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict(), "epoch": self.epoch, "arch": self.arch,
                "task": self.job.run.task, "classes": self.class_names,
                "config": self.job.model_dump(mode="json"), "history": self.history, "best": self.best,
                "optimizer_steps": self.optimizer_steps, "data": self.data_record()}

    def data_record(self) -> dict:
        """What a reader of the checkpoint needs to feed the network as the run did without
        reading the training set again: the normalization, and whether the images streamed."""
        return {"mean": self.augment.mean.flatten().tolist(), "std": self.augment.std.flatten().tolist(),
                "streamed": self.streamed}

    def load_state_dict(self, state: dict) -> None:
        self.raw_model.load_state_dict(strip_prefix(state["model"]), strict=True)
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        saved = (state.get("config") or {}).get("optim")
        if saved and (saved["lr"], saved.get("momentum"), saved.get("weight_decay")) != (
                self.job.optim.lr, self.job.optim.momentum, self.job.optim.weight_decay):
            retarget(self.opt, self.sched, saved, self.job.optim)  # PBT's donor, trained under other values
        self.epoch, self.history, self.best = state["epoch"], state["history"], state["best"]
        self.optimizer_steps = state["optimizer_steps"]


def strip_prefix(state: dict) -> dict:
    """Drop the `module.` / `_orig_mod.` prefixes DDP and torch.compile add."""
    out = {}
    for k, v in state.items():
        for prefix in ("module.", "_orig_mod."):
            k = k.removeprefix(prefix)
        out[k] = v
    return out
