"""W&B runs of the jobs that read a training run: analysis, probe and sweep.

Each is a run of its own (job_type analysis / probe / sweep) in the training run's group, its
config naming the training run's W&B id, so it never writes into the training run (whose
offline segments `convlens sync` would have to merge) and the lineage stays visible: the
analysis and probe runs use the `model-<run id>` artifact of every checkpoint they read.
What an analysis run logs (figures, scalars, tables) is in convlens.tracking.media.

A job opens its runs as it starts (open_linked_runs, open_sweep_run) and closes them at its end
(close_job), so wandb's system monitor samples the whole job and its console reaches the Logs
tab. Offline, the closing takes in the system metrics of the job's earlier segments (a sweep
killed, then resumed) and its console files, and sets the runtime from the job's first start
(convlens.tracking.segments), as a training run's driver does.
"""
from __future__ import annotations

import time
from pathlib import Path

from convlens.storage.rundir import RunDir
from convlens.tracking.run import (RunInfo, checkpoint_artifact, model_tag, new_run_id, open_run, run_id, run_url,
                                   tracking_mode)


class JobRun:
    """One open W&B run of a job, from its start to its end; `id` and `url` for the job's own
    outputs. started: the job's first start (epoch seconds), where its runtime counts from."""

    def __init__(self, info: RunInfo, tracking, mode: str, started: float | None = None):
        from convlens.tracking.console import ConsoleFile
        from convlens.tracking.segments import mark_driver
        self.info, self.started, self.console = info, started or time.time(), None
        # offline, the console goes to console files only (a killed job keeps all it printed), and
        # the closing builds the Logs tab from them; online, wandb streams it
        self.run, self.mode = open_run(info, tracking, mode, console="off" if mode == "offline" else "wrap")
        if self.mode == "offline":
            wandb_file = Path(self.run.settings.sync_file)
            mark_driver(wandb_file)  # the job's own segment: carry_into_closing takes its system metrics
            if mode == "offline":
                self.console = ConsoleFile(wandb_file.parent.parent, info.id)
        self.run.define_metric("epoch")

    @property
    def id(self) -> str:
        return self.info.id

    @property
    def url(self) -> str | None:
        return run_url(self.run, self.mode)

    def use_checkpoint(self, folder: Path, train_run_id: str) -> None:
        """Mark a checkpoint as this run's input: the training run's `model-<id>` version with
        the same content. Offline, wandb's public use_artifact refuses; the call below is what it
        makes online for a draft artifact (log it, then record the use), so sync links the same."""
        from convlens.storage.checkpoint import checkpoint_epoch
        art = checkpoint_artifact(folder, train_run_id)
        aliases = [f"epoch-{checkpoint_epoch(Path(folder))}"]
        if self.mode == "online":
            self.run.use_artifact(art, aliases=aliases)
        else:
            self.run._log_artifact(art, aliases=aliases, is_user_created=True, use_after_commit=True)

    def log(self, row: dict, step: int | None = None) -> None:
        self.run.log(row, **({"step": step} if step is not None else {}))

    def table(self, columns: list[str], rows: list[list]):
        import wandb
        return wandb.Table(columns=list(columns), data=[list(r) for r in rows])

    def finish(self, failed: bool = False) -> None:
        """Close the run; offline, its segment then holds the job's runtime, the system metrics
        of every segment of its id and its console files' output."""
        if self.run is None:
            return
        segment = Path(self.run.settings.sync_file)
        self.run.finish(exit_code=int(failed))
        self.run = None
        if self.console is not None:
            self.console.close()
            self.console = None
        if self.mode == "offline":
            from convlens.tracking.segments import carry_into_closing
            carry_into_closing(segment, self.info.id, self.started)


def close_job(runs, failed: bool = False) -> None:
    """The end of a job: close its runs (a JobRun, a {key: JobRun} or None); failed: it raised."""
    for job in runs.values() if isinstance(runs, dict) else [runs] if runs is not None else []:
        job.finish(failed)


def train_job_of(run_dir: Path):
    """The TrainJob of a training run directory (its config.yaml), or None outside one."""
    from convlens.base.errors import ConfigError
    from convlens.specs.base import read_yaml, validate
    from convlens.specs.train import TrainJob
    config = Path(run_dir) / RunDir.CONFIG
    if not config.is_file():
        return None
    try:
        return validate(TrainJob, read_yaml(config), str(config))
    except ConfigError as err:
        print(f"[convlens] no W&B run for the job on {run_dir}: {err}", flush=True)
        return None


def open_linked_run(run_dir: Path, job_type: str, name: str, folder: Path | None, config: dict,
                    started: float | None = None) -> JobRun | None:
    """A new run of job_type in the group of the training run in run_dir, with its tracking
    settings, written under folder (None: the run's own directory); None when that run is not
    tracked (or not a convlens run directory)."""
    train = train_job_of(run_dir)
    id_file = Path(run_dir) / RunDir.WANDB_ID  # none: the training run was not tracked, nothing to link to
    if train is None or tracking_mode(train.tracking) == "disabled" or not id_file.is_file():
        return None
    cfg = train.tracking
    info = RunInfo(id=new_run_id(), name=name, group=train.group, job_type=job_type,
                   dir=Path(cfg.dir).expanduser() if cfg.dir else Path(folder or run_dir),
                   tags=[train.run.task, train.data.dataset, model_tag(train.model.model_dump()), *cfg.tags],
                   config={**config, "train_run": train.run.name, "train_run_id": id_file.read_text().strip()})
    return JobRun(info, cfg, tracking_mode(cfg), started)


def open_linked_runs(job_type: str, run_dirs: list[Path], prefix: str, folder: Path | None, config: dict,
                     started: float | None = None) -> dict[Path, JobRun]:
    """At the start of an analysis or probe job (started: when it began): a run named
    <prefix>-<run name> for each tracked training run it reads; close them with close_job."""
    runs = {}
    try:
        for run_dir in dict.fromkeys(Path(r) for r in run_dirs):
            job = open_linked_run(run_dir, job_type, f"{prefix}-{run_dir.name}", folder, config, started)
            if job is not None:
                runs[run_dir] = job
    except BaseException:
        close_job(runs, failed=True)
        raise
    return runs


def log_probe(job: JobRun | None, results: dict) -> dict:
    """Into a probe job's run of one network: stage x (linear, MLP, kNN) as a table and summary
    values; returns its {"wandb_run_id", "wandb_url"} (empty when not tracked)."""
    if job is None:
        return {}
    job.use_checkpoint(Path(results["checkpoint"]), job.info.config["train_run_id"])
    heads = ("linear", "mlp", "knn")
    rows = [[results["run"], results["task"], int(s), m["feature_dim"], *(m[f"{h}_accuracy"] for h in heads)]
            for s, m in results["stages"].items()]
    job.log({"probes": job.table(["run", "task", "stage", "feature_dim", *heads], rows)})
    job.run.summary.update({f"probe/stage{s}/{h}": m[f"{h}_accuracy"]
                            for s, m in results["stages"].items() for h in heads})
    return {"wandb_run_id": job.id, **({"wandb_url": job.url} if job.url else {})}


def cell(value):
    """A trials.csv value as a W&B table cell: "" (not reached) is missing, lists are text."""
    if value in ("", None):
        return None
    return value if isinstance(value, (int, float, str, bool)) else str(value)


def open_sweep_run(sweep_dir: Path, name: str, group: str, tracking, started: float | None = None) -> JobRun | None:
    """At the start of a sweep (started: its first start, before any resume): the sweep-level
    run, None when not tracked. Its id lives in <sweep_dir>/wandb_id.txt, so a resumed sweep
    continues it; close it with close_job."""
    mode = tracking_mode(tracking)
    if mode == "disabled":
        return None
    info = RunInfo(id=run_id(sweep_dir), name=name, group=group, job_type="sweep",
                   dir=Path(tracking.dir).expanduser() if tracking.dir else Path(sweep_dir),
                   tags=["sweep"], config={"sweep": name})
    return JobRun(info, tracking, mode, started)


def log_sweep(job: JobRun | None, rows: list[dict], best_config: dict | None) -> str | None:
    """Into the sweep-level run: every trial as a table row (with its W&B run id), the best
    config in the summary; returns the run's id."""
    if job is None:
        return None
    job.run.config.update({"trials": len(rows)}, allow_val_change=True)
    columns = list(rows[0]) if rows else ["trial_id"]
    cells = [[cell(row.get(c)) for c in columns] for row in rows]
    job.log({"trials": job.table(columns, cells)})
    best = rows[0] if rows and rows[0].get("best") else None
    job.run.summary.update({"completed": sum(r["status"] == "completed" for r in rows),
                            **({"best_trial": best["trial_id"], "best_run_id": best.get("wandb_run_id"),
                                "best_val_accuracy": best["best_val_accuracy"],
                                "best_config": best_config} if best else {})})
    return job.id
