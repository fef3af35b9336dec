"""The function each Ray Train worker runs, top to bottom.

Rank 0 writes the checkpoint, the best copy, metrics.jsonl and the attempt (with every rank's
node); every rank reports once per epoch in lockstep. Errors that would recur on retry (a NaN loss, a corrupt or foreign
checkpoint) end the run through a final report carrying `stop_reason`, so no retries are
spent on them.
"""
from __future__ import annotations

import logging
import shutil
import socket
import tempfile
from pathlib import Path

import ray.train
import ray.train.torch

from convlens.base.errors import RunStopped
from convlens.base.progress import EpochProgress
from convlens.data.load import load_dataset
from convlens.raycluster.env import log_level
from convlens.specs.train import TrainJob
from convlens.storage import checkpoint as ckpt
from convlens.storage.rundir import RunDir
from convlens.tracking.tracker import open_tracker
from convlens.training import resume
from convlens.training.dist import all_gather_objects
from convlens.training.streamed import StreamTrainer, shard_data
from convlens.training.trainer import Trainer


def train_worker(config: dict) -> None:
    # Ray Train logs an INFO line per rank and report through a logger its LoggingConfig does
    # not reach (named after a file path); the worker's root level hides it unless --verbose.
    logging.getLogger().setLevel(log_level())
    logging.getLogger("ray.data").setLevel(log_level())  # a streamed run's shards: Ray Data's own logger
    job = TrainJob.model_validate(config["job"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    run = RunDir(job.run_dir)
    tracker = open_tracker(job, run.path, rank)  # first: W&B's console capture sees the whole attempt
    try:
        streamed = config.get("stream")
        trainer = (StreamTrainer(job, shard_data(streamed), rank, world, ray.train.torch.get_device(),
                                 wrap=ray.train.torch.prepare_model) if streamed else
                   Trainer(job, load_dataset(job.data), rank, world, ray.train.torch.get_device(),
                           wrap=ray.train.torch.prepare_model))
        latest = ray.train.get_checkpoint()  # the run's own; else where it was told to start (PBT's donor)
        start = Path(latest.path) if latest else (Path(config["start_from"]) if config.get("start_from") else None)
        try:
            state, source = resume.restore(start, trainer.arch, job.run.on_corrupt_checkpoint)
        except RunStopped as stop:
            end_run(run, rank, {"stop_reason": str(stop), "epoch": 0})
            return
        if state is not None:
            trainer.load_state_dict(state)
            if rank == 0:  # the history it resumes with (a PBT donor's lineage), even with no epoch left to train
                run.write_metrics(trainer.history)
        nodes = all_gather_objects(this_node())  # every rank takes part
        if rank == 0:
            resume.record_attempt(run, trainer.epoch + 1, source, {**trainer.hardware(), "nodes": nodes},
                                  verbose=not job.run.quiet)
        tracker.log_history(trainer.history, trainer.class_names)
        train_epochs(job, trainer, run, tracker, config["progress"])
    finally:
        tracker.finish()


def train_epochs(job: TrainJob, trainer: Trainer, run: RunDir, tracker, progress_mode: str) -> None:
    """The epochs left, each reported (with rank 0's checkpoint), tracked and printed."""
    rank = trainer.rank
    for epoch in range(trainer.epoch + 1, job.run.epochs + 1):
        progress = EpochProgress(progress_mode if rank == 0 else "off",
                                 f"{job.run.name} epoch {epoch}/{job.run.epochs}", trainer.steps, trainer.world)
        metrics = trainer.run_epoch(epoch, on_step=progress.step)
        progress.close()
        if "stop_reason" in metrics:
            end_run(run, rank, metrics)
            tracker.stop(metrics["stop_reason"])
            return
        trainer.record(metrics)
        report_epoch(trainer, metrics)
        tracker.log_epoch(metrics, trainer.class_names)
        print_epoch(job, rank, metrics, tracker)


def this_node() -> dict:
    """Where this rank runs: host name and the node's address in the Ray cluster."""
    return {"host": socket.gethostname(), "address": ray.util.get_node_ip_address()}


def end_run(run: RunDir, rank: int, metrics: dict) -> None:
    """Stop without spending retries: rank 0 records why, then every rank reports once more."""
    if rank == 0:
        run.write_stopped(metrics)
    ray.train.report(metrics)


def report_epoch(trainer: Trainer, metrics: dict) -> None:
    """Rank 0 saves the checkpoint (and the best copy) with its report; the others just report."""
    if trainer.rank != 0:
        ray.train.report(metrics)
        return
    epoch, run = metrics["epoch"], trainer.run
    state = trainer.state_dict()
    meta = {"epoch": epoch, "val_error": metrics["val_error"], "arch": trainer.arch,
            "classes": trainer.class_names}
    if trainer.best["epoch"] == epoch:
        save_best(state, meta, run, epoch)
    with tempfile.TemporaryDirectory(prefix="convlens-ckpt-") as tmp:
        folder = ckpt.save_checkpoint(state, Path(tmp) / "checkpoint", meta)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder),
                         checkpoint_dir_name=RunDir.folder_name(RunDir.CHECKPOINT, epoch))
    run.write_metrics(trainer.history)


def save_best(state: dict, meta: dict, run: RunDir, epoch: int) -> None:
    """A new best_epochNNNN_<id>/ first, then remove the older ones (a kill in between leaves
    two; the newest verified one counts)."""
    new = ckpt.save_checkpoint(state, run / RunDir.folder_name(RunDir.BEST, epoch), meta)
    for old in run.bests():
        if old != new:
            shutil.rmtree(old, ignore_errors=True)
    ckpt.remove_unfinished_saves(run.path)


def print_epoch(job: TrainJob, rank: int, m: dict, tracker) -> None:
    """Rank 0's line for the epoch; a quiet run (a sweep trial) keeps it for W&B's Logs tab only."""
    if rank != 0:
        return
    line = (f"[convlens] {job.run.name} epoch {m['epoch']}/{job.run.epochs}: "
            f"train loss {m['train_loss']:.4f} acc {m['train_accuracy']:.4f} | "
            f"val loss {m['val_loss']:.4f} acc {m['val_accuracy']:.4f} | "
            f"lr {m['lr']:.4g} | {m['images_per_second']:.0f} img/s")
    if job.run.quiet:
        tracker.log_line(line)
    else:
        print(line, flush=True)
