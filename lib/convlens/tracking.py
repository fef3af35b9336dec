"""Experiment tracking: a Tracker that logs to W&B on rank 0, or does nothing.

`open_tracker(job, run_dir, rank)` returns a NullTracker unless this is rank 0 and
tracking.mode (or WANDB_MODE) is online/offline.
"""
from __future__ import annotations

import os
from pathlib import Path


class NullTracker:
    def log_epoch(self, metrics: dict, class_names: list[str]) -> None: ...
    def log_history(self, history: list[dict], class_names: list[str]) -> None: ...
    def log_summary(self, summary: dict) -> None: ...
    def update_summary(self, values: dict) -> None: ...
    def log_images(self, images: list[tuple[str, str]], key: str = "analysis") -> None: ...
    def log_table(self, key: str, columns: list[str], rows: list[list]) -> None: ...
    def stop(self, reason: str) -> None: ...
    def finish(self) -> None: ...


def tracking_mode(cfg) -> str:
    return os.environ.get("WANDB_MODE") or cfg.mode


def open_tracker(job, run_dir: Path, rank: int = 0, **kwargs):
    mode = tracking_mode(job.tracking)
    if rank != 0 or mode == "disabled":
        return NullTracker()
    from convlens.wandb_tracker import WandbTracker  # only now: a disabled run never imports wandb
    return WandbTracker(job, Path(run_dir), mode, **kwargs)
