"""The analysis job's W&B runs: one per analysed training run (job_type analysis, in its group).

Each checkpoint epoch is one step, so W&B's step slider walks through the epochs: every figure
under a stable key (`<method>` or `<method>_<panel>`), each method's numbers as `<method>/<name>`
scalars, and the W&B tables built from the raw arrays a task saved (`<method>.npz`): kNN
retrievals with image columns, t-SNE/PCA points with thumbnails, CAM/Grad-CAM rows. Which
arrays make which rows is the analysis's to say (convlens.analysis.tables.BUILDERS, passed in).
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from convlens.tracking.jobs import JobRun

# method -> its saved arrays -> (columns, rows); an image cell is a uint8 array
TableBuilders = dict[str, Callable[[dict[str, np.ndarray]], tuple[list[str], list[list]]]]


def log_analysis(runs: dict[Path, JobRun], entries: list[dict], builders: TableBuilders) -> dict[str, str]:
    """Into the analysis job's open runs (tracking.jobs.open_linked_runs: training run directory
    -> its analysis run): run name -> W&B run id, for every analysed run that is tracked.
    entries: the job's index entries of single checkpoints (the caller leaves out composites)."""
    by_run: dict[Path, list[dict]] = {}
    for entry in entries:
        if not entry.get("checkpoint"):
            continue
        by_run.setdefault(Path(entry["checkpoint"]).parent, []).append(entry)
    ids = {}
    for run_dir, items in by_run.items():
        job = runs.get(run_dir)
        if job is None:
            continue
        job.run.config.update({"methods": sorted({e["method"] for e in items}),
                               "epochs": sorted({e["epoch"] for e in items})}, allow_val_change=True)
        log_run(job, items, builders)
        ids[run_dir.name] = job.id
    return ids


def log_run(job, items: list[dict], builders: TableBuilders) -> None:
    import wandb
    for folder in sorted({e["checkpoint"] for e in items}):
        job.use_checkpoint(Path(folder), job.info.config["train_run_id"])
    for epoch in sorted({e["epoch"] for e in items}):
        row: dict = {"epoch": epoch}
        for e in items:
            if e["epoch"] != epoch:
                continue
            path = Path(e["file"])
            if path.suffix == ".png":
                row[path.stem] = wandb.Image(str(path), caption=f"epoch {epoch}: {e['caption']}")
            elif path.suffix == ".json":
                row.update(scalars(e["method"], json.loads(path.read_text())["result"]))
                row.update(method_tables(e["method"], path.with_suffix(".npz"), builders))
        job.log(row, step=epoch)


def scalars(method: str, result: dict) -> dict:
    return {f"{method}/{k}": v for k, v in result.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def method_tables(method: str, npz: Path, builders: TableBuilders) -> dict:
    """`<method>/table` for the methods that have one, from the task's saved arrays."""
    import wandb
    build = builders.get(method)
    if build is None or not npz.is_file():
        return {}
    with np.load(npz, allow_pickle=False) as raw:
        columns, rows = build({k: raw[k] for k in raw.files})
    cells = [[wandb.Image(c) if isinstance(c, np.ndarray) else c for c in row] for row in rows]
    return {f"{method}/table": wandb.Table(columns=columns, data=cells)}
