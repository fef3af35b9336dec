"""The training loop each Ray Train worker runs.

Every worker holds the training split as uint8 on its device, takes its slice of each
global batch (so N workers see exactly what one worker with the same global batch sees),
augments on the device, and reports once per epoch in lockstep. Rank 0 writes the
checkpoint, the best copy and metrics.jsonl. Errors that would recur on retry (a NaN
loss, a corrupt or foreign checkpoint) end the run through a final report carrying
`stop_reason`, so no retries are spent on them.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import time
import uuid
from pathlib import Path

import ray.train
import ray.train.torch
import torch
import torch.nn.functional as F

from convlens import checkpoint as ckpt
from convlens.config import TrainJob
from convlens.data import load_dataset, split_indices
from convlens.data.augment import augment, epoch_plan
from convlens.models import build_model
from convlens.training import tasks
from convlens.training.evaluate import all_reduce_, evaluate
from convlens.training.optim import build_optimizer, build_scheduler
from convlens.training.syncbn import convert_to_global_bn

NO_STEP = 2 ** 62
CHECK_EVERY = 25  # steps between non-finite-loss checks


class StopRun(Exception):
    """An error that retrying cannot fix; ends the run cleanly with this reason."""


def train_worker(config: dict) -> None:
    job = TrainJob.model_validate(config["job"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    run_dir = job.run_dir
    try:
        setup = Setup(job, rank, world, device)
        state, source = restore(job, setup.model_arch)
    except StopRun as stop:
        end_run(run_dir, rank, {"stop_reason": str(stop), "epoch": 0})
        return
    setup.load_state(state)
    if rank == 0:
        record_attempt(run_dir, setup.epoch + 1, source, verbose=not job.run.quiet, hardware=setup.hardware())
    from convlens.tracking import open_tracker
    tracker = open_tracker(job, run_dir, rank)
    tracker.log_history(setup.history, setup.class_names)
    try:
        for epoch in range(setup.epoch + 1, job.run.epochs + 1):
            metrics = setup.run_epoch(epoch)
            if "stop_reason" in metrics:
                end_run(run_dir, rank, metrics)
                tracker.stop(metrics["stop_reason"])
                return
            report_epoch(setup, metrics, rank)
            tracker.log_epoch(metrics, setup.class_names)
            maybe_log(job, rank, metrics)
    finally:
        tracker.finish()


def end_run(run_dir: Path, rank: int, metrics: dict) -> None:
    """Stop without spending retries: rank 0 records why, then every rank reports once more."""
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        ckpt.write_atomic(run_dir / "stopped.json", json.dumps(metrics, indent=1).encode())
    ray.train.report(metrics)


class Setup:
    """Data, model, optimizer and schedule of one worker, plus the run's history."""

    def __init__(self, job: TrainJob, rank: int, world: int, device: torch.device):
        self.job, self.rank, self.world, self.device = job, rank, world, device
        torch.manual_seed(job.run.seed)
        data = load_dataset(job.data)
        train_idx, val_idx = split_indices(len(data.train_y), job.data.val_fraction, job.run.seed)
        self.train_x = data.train_x[train_idx].to(device)
        self.train_y = data.train_y[train_idx].to(device)
        self.val_x = data.train_x[val_idx][rank::world].to(device)  # each rank evaluates its shard
        self.val_y = data.train_y[val_idx][rank::world].to(device)
        mean, std = data.mean_std()
        self.mean = torch.tensor(mean, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, device=device).view(1, -1, 1, 1)
        self.class_names = tasks.class_names(job.run.task, data.classes)
        self.num_out = tasks.num_outputs(job.run.task, data.num_classes)
        self.gpu = device.type == "cuda"
        torch.backends.cudnn.benchmark = self.gpu  # fixed input shapes: pick the fastest kernels once
        self.amp = self.gpu and job.run.bf16
        self.channels_last = job.run.channels_last  # faster on CPU too (about 25% for slim ResNets)
        model = build_model(job.model, data.in_chans, self.num_out)
        self.model_arch = model.arch
        if job.model.sync_bn:  # on one CPU worker too: the same arithmetic as N workers
            model = (torch.nn.SyncBatchNorm.convert_sync_batchnorm(model) if self.gpu and world > 1
                     else convert_to_global_bn(model))
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.raw_model = model
        if job.run.compile:
            model = torch.compile(model)
        self.model = ray.train.torch.prepare_model(model)
        self.local_batch = job.data.batch_size // world
        self.steps = len(self.train_y) // job.data.batch_size
        if job.run.steps_per_epoch:
            self.steps = min(self.steps, job.run.steps_per_epoch)
        self.opt = build_optimizer(self.model.parameters(), job.optim, fused=self.gpu)
        self.sched, self.per_step = build_scheduler(self.opt, job.schedule, job.optim.lr,
                                                    job.run.epochs, self.steps)
        self.epoch, self.history, self.best = 0, [], {"epoch": 0, "val_error": float("inf")}
        self.optimizer_steps = 0  # counted, and checkpointed: a resume neither repeats nor skips any

    def hardware(self) -> dict:
        """Where and how this run computes, as its attempts.jsonl records it."""
        dist = torch.distributed
        return {"device": torch.cuda.get_device_name(self.device) if self.gpu else "cpu",
                "workers": self.world, "backend": dist.get_backend() if dist.is_initialized() else None,
                "bf16": self.amp, "channels_last": self.channels_last, "compile": self.job.run.compile}

    def load_state(self, state: dict | None) -> None:
        if state is None:
            return
        self.raw_model.load_state_dict(strip_prefix(state["model"]), strict=True)
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.epoch, self.history, self.best = state["epoch"], state["history"], state["best"]
        self.optimizer_steps = state["optimizer_steps"]

    def run_epoch(self, epoch: int) -> dict:
        start = time.perf_counter()
        train = self.train_epoch(epoch)
        if "stop_reason" in train:
            return train
        if not self.per_step:
            self.sched.step()
        val = evaluate(self.model, self.val_x, self.val_y, self.job.run.task, self.num_out,
                       self.mean, self.std, self.job.run.eval_batch_size, self.device,
                       self.amp, self.channels_last)
        seconds = time.perf_counter() - start
        return {"epoch": epoch, **train,
                "val_loss": val["loss"], "val_accuracy": val["accuracy"], "val_error": 1 - val["accuracy"],
                "val_per_class_accuracy": val["per_class_accuracy"],
                "epoch_seconds": seconds, "steps": self.optimizer_steps}

    def train_epoch(self, epoch: int) -> dict:
        job, model, opt = self.job, self.model, self.opt
        model.train()
        plan = epoch_plan(len(self.train_y), job.data.crop_padding, job.data.flip, job.run.seed,
                          epoch).to(self.device)
        B, b = job.data.batch_size, self.local_batch
        sums = torch.zeros(3, device=self.device, dtype=torch.float64)  # loss sum, correct, count
        watch = NonFiniteWatch(self.device)
        lr = opt.param_groups[0]["lr"]
        t0 = time.perf_counter()
        for step in range(self.steps):
            inject_faults(job, self.rank, epoch, step)
            pos = slice(step * B + self.rank * b, step * B + (self.rank + 1) * b)
            idx = plan.order[pos]
            x = augment(self.train_x[idx], plan.shifts[pos], plan.flips[pos], job.data.crop_padding,
                        self.mean, self.std)
            x, y = tasks.prepare(job.run.task, x, self.train_y[idx])
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                logits = model(x)
                loss = F.cross_entropy(logits.float(), y, label_smoothing=job.optim.label_smoothing)
            loss = inject_nan(job, self.rank, epoch, step, loss)
            watch.note(loss, (epoch - 1) * self.steps + step)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            self.optimizer_steps += 1
            if self.per_step:
                self.sched.step()
            with torch.no_grad():
                sums[0] += loss.detach().double() * len(y)
                sums[1] += (logits.argmax(1) == y).sum()
                sums[2] += len(y)
            if (step + 1) % CHECK_EVERY == 0 or step + 1 == self.steps:
                first_bad = watch.check(final=step + 1 == self.steps)
                if first_bad is not None:
                    return nonfinite_stop(epoch, first_bad, self.steps)
        all_reduce_(sums)
        seconds = time.perf_counter() - t0
        return {"train_loss": float(sums[0] / sums[2]), "train_accuracy": float(sums[1] / sums[2]),
                "images_per_second": float(sums[2]) / max(seconds, 1e-9), "lr": lr}

    def checkpoint_state(self, epoch: int) -> dict:
        return {"model": strip_prefix(self.raw_model.state_dict()), "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict(), "epoch": epoch, "arch": self.model_arch,
                "task": self.job.run.task, "classes": self.class_names,
                "config": self.job.model_dump(mode="json"), "history": self.history, "best": self.best,
                "optimizer_steps": self.optimizer_steps}


class NonFiniteWatch:
    """The first global step whose loss was NaN or Inf on any rank, found without stalling the GPU.

    A check all-reduces the step on the device and copies it to pinned host memory without
    waiting; the result is read at the next check, when that copy is long done, or at once
    when `final`. Every rank reads the same results at the same steps, so all stop together.
    """

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.first_bad = torch.full((1,), NO_STEP, device=device, dtype=torch.int64)
        self.pending = None  # (host tensor, cuda event) of the last check

    def note(self, loss: torch.Tensor, global_step: int) -> None:
        bad = ~torch.isfinite(loss.detach()) & (self.first_bad == NO_STEP)
        self.first_bad = torch.where(bad, torch.full_like(self.first_bad, global_step), self.first_bad)

    def check(self, final: bool) -> int | None:
        previous = self.pending
        reduced = all_reduce_(self.first_bad.clone(), op=torch.distributed.ReduceOp.MIN)
        host = torch.empty(1, dtype=torch.int64, pin_memory=self.cuda)
        host.copy_(reduced, non_blocking=True)
        event = torch.cuda.Event() if self.cuda else None
        if event is not None:
            event.record()
        self.pending = (host, event)
        ready = self.pending if final else previous
        if ready is None:
            return None
        host, event = ready
        if event is not None:
            event.synchronize()
        return None if int(host) == NO_STEP else int(host)


def nonfinite_stop(epoch: int, global_step: int, steps: int) -> dict:
    step_in_epoch = global_step - (epoch - 1) * steps
    return {"stop_reason": f"non-finite loss at epoch {epoch}, step {step_in_epoch} "
                           f"(global step {global_step}); lower optim.lr or check the data",
            "epoch": epoch, "step": step_in_epoch}


def report_epoch(setup: Setup, metrics: dict, rank: int) -> None:
    """Record the epoch in history; rank 0 saves the checkpoint (and best copy) and reports it."""
    epoch = metrics["epoch"]
    setup.history.append(metrics)
    if metrics["val_error"] < setup.best["val_error"]:
        setup.best = {"epoch": epoch, "val_error": metrics["val_error"]}
    setup.epoch = epoch
    if rank != 0:
        ray.train.report(metrics)
        return
    run_dir = setup.job.run_dir
    state = setup.checkpoint_state(epoch)
    meta = {"epoch": epoch, "val_error": metrics["val_error"], "arch": setup.model_arch}
    if setup.best["epoch"] == epoch:
        save_best(state, meta, run_dir, epoch)
    with tempfile.TemporaryDirectory(prefix="convlens-ckpt-") as tmp:
        folder = ckpt.save_checkpoint(state, Path(tmp) / "checkpoint", meta)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder),
                         # unique per attempt: a redone epoch must not reuse a folder Ray tracks
                         checkpoint_dir_name=f"checkpoint_epoch{epoch:04d}_{uuid.uuid4().hex[:6]}")
    write_metrics(run_dir, setup.history)


def save_best(state: dict, meta: dict, run_dir: Path, epoch: int) -> None:
    """A new best_epochNNNN_<id>/ first, then remove the older ones (a kill in between leaves
    two; the newest verified one counts). Unique per save: a redone epoch writes a new folder."""
    new = ckpt.save_checkpoint(state, run_dir / f"best_epoch{epoch:04d}_{uuid.uuid4().hex[:6]}", meta)
    for old in run_dir.glob("best_epoch*"):
        if old != new:
            shutil.rmtree(old, ignore_errors=True)
    ckpt.remove_unfinished_saves(run_dir)


def write_metrics(run_dir: Path, history: list[dict]) -> None:
    """metrics.jsonl is rewritten from the checkpointed history, so each epoch appears once."""
    text = "".join(json.dumps(h) + "\n" for h in history)
    ckpt.write_atomic(run_dir / "metrics.jsonl", text.encode())


def restore(job: TrainJob, arch: dict) -> tuple[dict | None, Path | None]:
    """The state to resume from and its folder: Ray's latest checkpoint, verified, or the
    fallback policy; (None, None) to start from scratch."""
    latest = ray.train.get_checkpoint()
    if latest is None:
        return None, None
    path = Path(latest.path)
    try:
        return ckpt.load_checkpoint(path, expect_arch=arch), path
    except ckpt.CheckpointError as err:
        if "architecture" in str(err) or job.run.on_corrupt_checkpoint == "stop":
            raise StopRun(f"cannot resume: {err}") from None
        older = ckpt.latest_verified(path.parent, below=ckpt.checkpoint_epoch(path))
        print(f"[convlens] warning: {err}; resuming from {older or 'scratch'} instead", flush=True)
        return (ckpt.load_checkpoint(older, expect_arch=arch), older) if older else (None, None)


def record_attempt(run_dir: Path, start_epoch: int, source: Path | None, verbose: bool,
                   hardware: dict | None = None) -> None:
    """attempts.jsonl: a line per start of the run (first, retry, rerun, requeue) with the epoch
    it starts at, the checkpoint it resumed from and what it ran on."""
    path = run_dir / "attempts.jsonl"
    done = path.read_text() if path.is_file() else ""
    entry = {"attempt": done.count("\n") + 1, "start_epoch": start_epoch,
             "resumed_from": source.name if source else None, "time": time.time(), **(hardware or {})}
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt.write_atomic(path, (done + json.dumps(entry) + "\n").encode())
    if verbose and start_epoch > 1:
        print(f"[convlens] {run_dir.name}: attempt {entry['attempt']} resumes at epoch {start_epoch} "
              f"from {source.name if source else 'scratch'}", flush=True)


def strip_prefix(state: dict) -> dict:
    """Drop the `module.` / `_orig_mod.` prefixes DDP and torch.compile add."""
    out = {}
    for k, v in state.items():
        for prefix in ("module.", "_orig_mod."):
            k = k.removeprefix(prefix)
        out[k] = v
    return out


def maybe_log(job: TrainJob, rank: int, m: dict) -> None:
    if rank == 0 and not job.run.quiet:
        print(f"[convlens] {job.run.name} epoch {m['epoch']}/{job.run.epochs}: "
              f"train loss {m['train_loss']:.4f} acc {m['train_accuracy']:.4f} | "
              f"val loss {m['val_loss']:.4f} acc {m['val_accuracy']:.4f} | "
              f"lr {m['lr']:.4g} | {m['images_per_second']:.0f} img/s", flush=True)


def parse_at(spec: str | None) -> tuple[int, int, int] | None:
    return tuple(int(v) for v in spec.split(":")) if spec else None


def inject_nan(job, rank, epoch, step, loss):
    if parse_at(job.faults.nan_at) == (rank, epoch, step):
        return loss * float("nan")
    return loss


def inject_faults(job, rank, epoch, step):
    """The test faults due at this rank, epoch and step: hold (sleep) or SIGKILL this worker.
    Each waits until the previous epoch is registered, so it hits the same point on every
    machine; markers in <run>/.faults count how often each has fired."""
    faults = job.faults
    for name, at, times in (("hold", faults.hold_at, 1), ("kill", faults.kill_at, faults.kill_times)):
        if parse_at(at) != (rank, epoch, step):
            continue
        markers = job.run_dir / ".faults"
        markers.mkdir(parents=True, exist_ok=True)
        fired = len(list(markers.glob(f"{name}-*")))
        if fired >= times:
            continue
        wait_registered(job.run_dir, epoch - 1)
        (markers / f"{name}-{fired}").touch()
        if name == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(faults.hold_seconds)


def wait_registered(run_dir: Path, epoch: int, timeout: float = 60.0) -> None:
    """Until Ray Train has registered epoch's checkpoint. Its controller collects reports when it
    polls the workers (every 2 s), and a worker dying before that poll takes the last report
    with it: the injected kill waits, so the fault hits the same point on every machine."""
    deadline = time.monotonic() + timeout
    while epoch > 0 and time.monotonic() < deadline:
        if any(ckpt.checkpoint_epoch(p) >= epoch for p in ckpt.registered_checkpoints(run_dir)):
            return
        time.sleep(0.1)
