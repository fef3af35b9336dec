"""The training run's tracker: a Tracker that logs to W&B on rank 0, or does nothing.

`open_tracker(job, run_dir, rank)` returns a NullTracker unless this is rank 0 and
tracking.mode (or WANDB_MODE) is online/offline (offline is the default); else a WandbTracker:
one W&B run per convlens run directory.

The run id lives in <run_dir>/wandb_id.txt, so every start of the run (a worker retry, a rerun,
a Slurm requeue) and the driver's closing write continue the same W&B run (resume="allow").
Offline, each of those writes a segment of its own, and `wandb sync` does not merge segments
of one id: a later one replaces the earlier history (wandb issue 3841). So every segment starts
by re-logging the checkpointed history, and the driver's closing segment holds every epoch, the
summary and the checkpoints; once written, it takes in every earlier segment's system metrics
and console output and the job's runtime (convlens.tracking.segments): `convlens sync`
(convlens.tracking.sync) uploads only that one.
"""
from __future__ import annotations

import os
from pathlib import Path

from convlens.storage.rundir import RunDir
from convlens.tracking.run import (RunInfo, checkpoint_artifact, model_tag, open_run, run_id, run_url,
                                   tracking_mode)


class NullTracker:
    url = None

    def log_epoch(self, metrics: dict, class_names: list[str]) -> None: ...
    def log_history(self, history: list[dict], class_names: list[str]) -> None: ...
    def log_summary(self, summary: dict) -> None: ...
    def update_summary(self, values: dict) -> None: ...
    def log_images(self, images: list[tuple[str, str]], key: str = "analysis") -> None: ...
    def log_line(self, line: str) -> None: ...
    def stop(self, reason: str, failed: bool = True) -> None: ...
    def finish(self, failed: bool = False) -> None: ...


def open_tracker(job, run_dir: Path, rank: int = 0, role: str = "worker"):
    """role: "worker" (rank 0 of a training attempt: its console goes to the Logs tab) or
    "closing" (a driver's closing write with no segment of its own open)."""
    mode = tracking_mode(job.tracking)
    if rank != 0 or mode == "disabled":
        return NullTracker()
    return WandbTracker(job, Path(run_dir), mode, role)


def open_driver(job, run_dir: Path):
    """The driver's segment of a training run, opened as the job starts so that wandb's system
    monitor samples the whole job, retries and restarts of workers included; close_run writes
    into it at the end. Offline only: online, the server continues the run across processes,
    and a second writer of the same run id while the workers log would collide."""
    if tracking_mode(job.tracking) != "offline":
        return NullTracker()
    return WandbTracker(job, Path(run_dir), "offline", "driver")


def close_run(job, run_dir: Path, class_names: list[str], summary: dict | None = None,
              stop_reason: str | None = None, failed: bool = True, tracker=None) -> str | None:
    """The driver's closing write of a training run: every checkpointed epoch, then the summary
    (or why it stopped, failed or not: an ASHA stop is no failure), in one segment (`tracker`,
    the driver's open one, or a new one). Offline, that segment then takes in every earlier
    segment's system metrics and console output and the job's runtime. Returns the W&B run URL
    when online."""
    if not isinstance(tracker, WandbTracker):
        tracker = open_tracker(job, run_dir, 0, "closing")
    try:
        tracker.log_history(RunDir(run_dir).read_metrics(), class_names)
        if summary is not None:
            tracker.log_summary(summary)
        if stop_reason is not None:
            tracker.stop(stop_reason, failed)
        return tracker.url
    finally:
        tracker.finish()
        if getattr(tracker, "mode", None) == "offline":
            from convlens.tracking.segments import carry_into_closing
            carry_into_closing(tracker.segment, tracker.info.id, RunDir(run_dir).started())


def wandb_run_id(job, run_dir: Path) -> str | None:
    """The training run's W&B id (None when tracking is disabled)."""
    if tracking_mode(job.tracking) == "disabled":
        return None
    return run_id(run_dir)


EPOCH_METRICS = {"train_loss": "train/loss", "train_accuracy": "train/accuracy",
                 "val_loss": "val/loss", "val_accuracy": "val/accuracy", "val_error": "val/error",
                 "lr": "lr", "images_per_second": "images_per_second",
                 "epoch_seconds": "epoch_seconds", "epoch": "epoch"}


def epoch_row(metrics: dict, class_names: list[str]) -> dict:
    """One epoch under W&B's train/ and val/ panels, per-class accuracy as val/accuracy/<class>."""
    row = {wb: metrics[key] for key, wb in EPOCH_METRICS.items() if key in metrics}
    per_class = metrics.get("val_per_class_accuracy") or []
    row.update({f"val/accuracy/{name}": float(acc) for name, acc in zip(class_names, per_class)})
    return row


def train_run_info(job, run_dir: Path) -> RunInfo:
    """group: tracking.group (the sweep or the demo) or the run's name; sweep parameters as
    top-level config keys, so the runs table and parallel coordinates show them."""
    cfg = job.tracking
    return RunInfo(id=run_id(run_dir), name=job.run.name, group=job.group, job_type="train",
                   dir=Path(cfg.dir).expanduser() if cfg.dir else Path(run_dir),
                   tags=[job.run.task, job.data.dataset, model_tag(job.model.model_dump()), *cfg.tags],
                   config={**job.model_dump(mode="json"), **cfg.params})


class WandbTracker:
    """The Tracker (NullTracker's methods) backed by a wandb Run."""

    def __init__(self, job, run_dir: Path, mode: str, role: str = "worker"):
        """role "worker": rank 0 of an attempt; its console goes to W&B and to a console file
        (convlens.tracking.console) for the closing write. "driver": the driver's segment, marked
        for the closing write's merge, and "closing": no console capture (Ray relays every rank's
        lines to the driver; rank 0's console files hold its output)."""
        from convlens.tracking.console import ConsoleFile
        from convlens.tracking.segments import mark_driver
        self.job, self.run_dir = job, Path(run_dir)
        self.exit_code, self.last_epoch, self.segment, self.console = 0, None, None, None
        self.info = train_run_info(job, self.run_dir)
        worker = role == "worker"
        self.run, self.mode = open_run(self.info, job.tracking, mode, console="wrap" if worker else "off")
        if role == "driver":
            mark_driver(Path(self.run.settings.sync_file))
        if worker:
            self.console = ConsoleFile(Path(self.run.settings.sync_file).parent.parent, self.info.id)
        define_metrics(self.run)

    @property
    def url(self) -> str | None:
        return run_url(self.run, self.mode)

    def log_epoch(self, metrics: dict, class_names: list[str]) -> None:
        self.last_epoch = int(metrics["epoch"])
        self.run.log(epoch_row(metrics, class_names), step=self.last_epoch)

    def log_history(self, history: list[dict], class_names: list[str]) -> None:
        """The checkpointed epochs this W&B run has not got. Online, the server says where the
        run stands (starting_step); an offline segment starts at 0 and carries them all again."""
        for metrics in history:
            if metrics["epoch"] >= self.run.starting_step:
                self.log_epoch(metrics, class_names)

    def log_summary(self, summary: dict) -> None:
        flat = {k: v for k, v in summary.items() if k != "per_class_test_accuracy"}
        self.run.summary.update(flat)
        per_class = summary.get("per_class_test_accuracy") or {}
        self.run.summary.update({f"test/accuracy/{k}": v for k, v in per_class.items()})
        curves = [(self.run_dir / name, name.removesuffix(".png")) for name in RunDir.CURVES]
        self.log_images([(str(p), c) for p, c in curves if p.is_file()], key="curves")
        if self.job.tracking.log_checkpoints:
            self.log_checkpoints(summary.get("best_checkpoint"))

    def update_summary(self, values: dict) -> None:
        """Plain summary values, nothing else logged (log_summary also uploads the run's curves)."""
        self.run.summary.update(values)

    def log_images(self, images: list[tuple[str, str]], key: str = "analysis") -> None:
        import wandb
        if images:  # in the last epoch's row: no history row without an epoch
            step = {"step": self.last_epoch} if self.last_epoch else {}
            self.run.log({key: [wandb.Image(str(path), caption=caption) for path, caption in images]}, **step)

    def log_line(self, line: str) -> None:
        """A line for the Logs tab only, not the terminal (offline: through the console file)."""
        if self.console is not None:
            self.console.write("stdout", line + "\n")

    def log_checkpoints(self, best: str | None) -> None:
        """Kept checkpoints as versions of the `model-<run id>` artifact: aliases epoch-N,
        latest (the last) and best; tracking.log_checkpoints true logs the best and the last,
        "all" every checkpoint still kept (run.keep_last)."""
        by_epoch = checkpoint_folders(self.run_dir, best)
        if not by_epoch:
            return
        last = max(by_epoch)
        best_epoch = checkpoint_epoch_of(best) if best else None
        chosen = by_epoch if self.job.tracking.log_checkpoints == "all" else {
            e: f for e, f in by_epoch.items() if e in (last, best_epoch)}
        for epoch, folder in sorted(chosen.items()):
            aliases = [f"epoch-{epoch}"] + ["latest"] * (epoch == last) + ["best"] * (epoch == best_epoch)
            self.run.log_artifact(checkpoint_artifact(folder, self.info.id), aliases=aliases)

    def stop(self, reason: str, failed: bool = True) -> None:
        self.run.summary["stop_reason"] = reason
        self.exit_code = int(failed)

    def finish(self, failed: bool = False) -> None:
        if self.run is not None:
            self.segment = Path(self.run.settings.sync_file)  # [offline-]run-<time>-<id>/run-<id>.wandb
            self.run.finish(exit_code=1 if failed else self.exit_code)
            self.run = None
        if self.console is not None:
            self.console.close()
            self.console = None

    def __repr__(self) -> str:
        return f"WandbTracker(mode={self.mode!r}, run_dir={os.fspath(self.run_dir)!r})"


def define_metrics(run) -> None:
    """epoch is the x-axis of every training metric; the summary keeps the best validation
    accuracy (max) and loss (min), not the last, e.g. for an ASHA-stopped trial."""
    run.define_metric("epoch")
    for pattern in ("train/*", "val/*", "lr", "images_per_second", "epoch_seconds"):
        run.define_metric(pattern, step_metric="epoch")
    run.define_metric("val/accuracy", step_metric="epoch", summary="max")
    run.define_metric("val/loss", step_metric="epoch", summary="min")


def checkpoint_epoch_of(folder: str) -> int:
    from convlens.storage.checkpoint import checkpoint_epoch
    return checkpoint_epoch(Path(folder))


def checkpoint_folders(run_dir: Path, best: str | None) -> dict[int, Path]:
    """epoch -> folder over the kept checkpoint_epoch* folders and the best (the former preferred)."""
    from convlens.storage.checkpoint import checkpoint_epoch
    run = RunDir(run_dir)
    found = {checkpoint_epoch(Path(best)): Path(best)} if best and Path(best).is_dir() else {}
    found.update({checkpoint_epoch(p): p for p in run.checkpoints()})
    return found
