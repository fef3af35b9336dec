"""Experiment tracking: a Tracker that logs to W&B on rank 0, or does nothing.

`open_tracker(job, run_dir, rank)` returns a NullTracker unless this is rank 0 and
tracking.mode (or WANDB_MODE) is online/offline (offline is the default).
"""
from __future__ import annotations

import os
from pathlib import Path


class NullTracker:
    url = None

    def log_epoch(self, metrics: dict, class_names: list[str]) -> None: ...
    def log_history(self, history: list[dict], class_names: list[str]) -> None: ...
    def log_summary(self, summary: dict) -> None: ...
    def update_summary(self, values: dict) -> None: ...
    def log_images(self, images: list[tuple[str, str]], key: str = "analysis") -> None: ...
    def stop(self, reason: str, failed: bool = True) -> None: ...
    def finish(self) -> None: ...


def tracking_mode(cfg) -> str:
    return os.environ.get("WANDB_MODE") or cfg.mode


def open_tracker(job, run_dir: Path, rank: int = 0):
    mode = tracking_mode(job.tracking)
    if rank != 0 or mode == "disabled":
        return NullTracker()
    from convlens.wandb_tracker import WandbTracker  # only now: a disabled run never imports wandb
    return WandbTracker(job, Path(run_dir), mode)


def close_run(job, run_dir: Path, class_names: list[str], summary: dict | None = None,
              stop_reason: str | None = None, failed: bool = True) -> str | None:
    """The driver's closing write of a training run: every checkpointed epoch, then the summary
    (or why it stopped, failed or not: an ASHA stop is no failure), in one segment. Returns the
    W&B run URL when online."""
    from convlens.rundir import RunDir
    tracker = open_tracker(job, run_dir, 0)
    try:
        tracker.log_history(RunDir(run_dir).read_metrics(), class_names)
        if summary is not None:
            tracker.log_summary(summary)
        if stop_reason is not None:
            tracker.stop(stop_reason, failed)
        return tracker.url
    finally:
        tracker.finish()


def wandb_run_id(job, run_dir: Path) -> str | None:
    """The training run's W&B id (None when tracking is disabled)."""
    if tracking_mode(job.tracking) == "disabled":
        return None
    from convlens.wandb_run import run_id
    return run_id(run_dir)
