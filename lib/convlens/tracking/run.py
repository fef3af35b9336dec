"""Opening one W&B run, the same way for every convlens job (train, analysis, probe, sweep).

Offline by default (no account, no network); online with no reachable server gives up after
tracking.init_timeout seconds and logs offline instead, so tracking never stops or stalls a
job. Only the job's config is sent: never the environment, where WANDB_API_KEY lives.
"""
from __future__ import annotations

import os
import secrets
import string
from dataclasses import dataclass, field
from pathlib import Path

from convlens.raycluster.env import verbose
from convlens.storage.files import write_atomic
from convlens.storage.rundir import RunDir


def tracking_mode(cfg) -> str:
    """online, offline or disabled: WANDB_MODE when set, else the job's tracking.mode."""
    return os.environ.get("WANDB_MODE") or cfg.mode


def new_run_id() -> str:
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))


def run_id(run_dir: Path) -> str:
    """The W&B run id of a training run directory, created once and reused on every reopen."""
    path = Path(run_dir) / RunDir.WANDB_ID
    if path.is_file():
        return path.read_text().strip()
    rid = new_run_id()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, (rid + "\n").encode())
    return rid


def model_tag(arch: dict) -> str:
    """A short model tag for W&B's runs table, e.g. resnet-basic-1.1.1-w16."""
    return f"resnet-{arch['block']}-{'.'.join(map(str, arch['layers']))}-w{arch['width']}"


@dataclass
class RunInfo:
    """What identifies one W&B run: every field is a wandb.init argument of the same name."""
    id: str
    name: str
    group: str
    job_type: str  # train, analysis, probe, sweep
    dir: Path  # wandb writes <dir>/wandb/[offline-]run-<time>-<id>/
    tags: list[str] = field(default_factory=list)
    config: dict = field(default_factory=dict)


def open_run(info: RunInfo, tracking, mode: str, console: str = "wrap"):
    """(wandb Run, the mode it ended up in); tracking: a TrackingConfig. wandb's own console
    lines (its banner, the run summary with sparklines) only with `convlens --verbose`.
    console "wrap": what this process prints (rank 0's lines, a traceback) goes to the Logs tab.
    Several runs may be open in one process at once (a job's own and those it closes)."""
    import wandb
    Path(info.dir).mkdir(parents=True, exist_ok=True)
    args = dict(project=tracking.project, entity=tracking.entity, group=info.group, name=info.name,
                id=info.id, resume="allow", dir=str(info.dir), config=info.config,
                job_type=info.job_type, tags=sorted(set(info.tags)))
    # the .wandb file flushed every sample, at least every 2 s: a killed process loses its last one;
    # process CPU and memory over the process tree: a driver's include the private Ray it started;
    # create_new: a job's run stays open while the job opens others (a sweep closing a stopped trial)
    settings = wandb.Settings(init_timeout=tracking.init_timeout, console=console, silent=not verbose(),
                              reinit="create_new",
                              x_stats_sampling_interval=tracking.stats_interval,
                              x_stats_track_process_tree=True,
                              x_transaction_log_flush_interval=min(tracking.stats_interval, 2.0),
                              save_code=False, disable_git=True)
    try:
        return wandb.init(mode=mode, settings=settings, **args), mode
    except Exception as err:  # noqa: BLE001 - any failure to reach W&B must not stop the job
        if mode != "online":
            raise
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"[convlens] W&B online init failed ({reason[:160]}); logging offline to {info.dir} "
              f"instead (upload later with `convlens sync {info.dir}`)", flush=True)
        wandb.teardown()  # the service still holds the half-made run id; a fresh one can reuse it
        return wandb.init(mode="offline", settings=settings, **args), "offline"


def run_url(run, mode: str) -> str | None:
    return run.url if mode == "online" else None


def artifact_name(train_run_id: str) -> str:
    """One model collection per training run: W&B run ids are unique where run names are not."""
    return f"model-{train_run_id}"


def checkpoint_artifact(folder: Path, train_run_id: str):
    """A checkpoint folder (state.pt + manifest.json) as a `model` artifact whose metadata says
    which epoch, its validation error and the sha256 of state.pt. The same folder always makes
    the same content digest, so the analysis's copy is the training run's version."""
    import wandb
    from convlens.storage.checkpoint import read_manifest
    manifest = read_manifest(folder)
    meta = {"epoch": manifest["epoch"], "val_error": manifest.get("val_error"),
            "sha256": manifest["files"]["state.pt"], "folder": Path(folder).name}
    art = wandb.Artifact(artifact_name(train_run_id), type="model", metadata=meta)
    for path in sorted(Path(folder).iterdir()):
        art.add_file(str(path), name=path.name)
    return art
