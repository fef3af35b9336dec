"""The W&B tracker: one W&B run per convlens run directory, on rank 0 only.

The run id lives in <run_dir>/wandb_id.txt, so a resumed or requeued run, and the
driver's final summary, continue the same W&B run (resume="allow"). Online mode with no
reachable server gives up after tracking.init_timeout seconds and logs offline instead,
so tracking never stops or stalls training. Only the job config is sent: never the
environment, where WANDB_API_KEY lives.
"""
from __future__ import annotations

import os
import secrets
import string
from pathlib import Path

from convlens.files import write_atomic
from convlens.rundir import RunDir


def run_id(run_dir: Path) -> str:
    """The W&B run id of this run directory, created once and reused on every reopen."""
    path = Path(run_dir) / RunDir.WANDB_ID
    if path.is_file():
        return path.read_text().strip()
    rid = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, (rid + "\n").encode())
    return rid


def epoch_row(metrics: dict) -> dict:
    """One epoch's training metrics under W&B's train/ and val/ panels (no per-class list)."""
    names = {"train_loss": "train/loss", "train_accuracy": "train/accuracy",
             "val_loss": "val/loss", "val_accuracy": "val/accuracy", "val_error": "val/error",
             "lr": "lr", "images_per_second": "images_per_second",
             "epoch_seconds": "epoch_seconds", "epoch": "epoch"}
    return {wb: metrics[key] for key, wb in names.items() if key in metrics}


class WandbTracker:
    """Tracker interface of convlens.tracking, backed by a wandb Run."""

    def __init__(self, job, run_dir: Path, mode: str, **init_kwargs):
        import wandb
        self.wandb, self.job, self.run_dir = wandb, job, Path(run_dir)
        self.exit_code = 0
        cfg = job.tracking
        wandb_dir = Path(cfg.dir).expanduser() if cfg.dir else self.run_dir
        wandb_dir.mkdir(parents=True, exist_ok=True)
        args = dict(project=cfg.project, entity=cfg.entity, group=cfg.group,
                    name=job.run.name, id=run_id(self.run_dir), resume="allow",
                    dir=str(wandb_dir), config=job.model_dump(mode="json"),
                    job_type=job.run.task, **init_kwargs)
        self.mode = mode
        self.run = self._init(args, mode)

    def _init(self, args: dict, mode: str):
        wandb = self.wandb
        try:
            return wandb.init(mode=mode, settings=self._settings(), **args)
        except Exception as err:  # noqa: BLE001 - any failure to reach W&B must not stop training
            if mode != "online":
                raise
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            print(f"[convlens] W&B online init failed ({reason[:160]}); logging offline to "
                  f"{args['dir']} instead (sync later with `wandb sync`)", flush=True)
            self.mode = "offline"
            wandb.teardown()  # the service still holds the half-made run id; a fresh one can reuse it
            return wandb.init(mode="offline", settings=self._settings(), **args)

    def _settings(self):
        # console="off": output.log would copy every worker line, and nothing of the env
        return self.wandb.Settings(init_timeout=self.job.tracking.init_timeout, console="off",
                                   silent=self.job.run.quiet, save_code=False, disable_git=True)

    def log_epoch(self, metrics: dict, class_names: list[str]) -> None:
        row = epoch_row(metrics)
        per_class = metrics.get("val_per_class_accuracy")
        if per_class is not None:
            row["val/per_class_accuracy"] = self.wandb.Table(
                columns=["class", "val_accuracy"], data=[[n, float(a)] for n, a in zip(class_names, per_class)])
        self.run.log(row, step=int(metrics["epoch"]))

    def log_history(self, history: list[dict], class_names: list[str]) -> None:
        """On resume, the checkpointed epochs this W&B run has not got: a killed attempt can die
        before wandb-core flushes its last rows. Online, the server says where the run stands
        (starting_step); an offline segment starts at 0 and carries them all again."""
        for metrics in history:
            if metrics["epoch"] >= self.run.starting_step:
                self.log_epoch(metrics, class_names)

    def log_summary(self, summary: dict) -> None:
        flat = {k: v for k, v in summary.items() if k != "per_class_test_accuracy"}
        self.run.summary.update(flat)
        per_class = summary.get("per_class_test_accuracy") or {}
        if per_class:
            self.run.summary.update({f"test/accuracy/{k}": v for k, v in per_class.items()})
            self.log_table("test/per_class_accuracy", ["class", "test_accuracy"],
                           [[k, float(v)] for k, v in per_class.items()])
        curves = [(self.run_dir / name, name.removesuffix(".png")) for name in RunDir.CURVES]
        self.log_images([(str(p), c) for p, c in curves if p.is_file()], key="curves")
        if self.job.tracking.log_checkpoints:
            self.log_checkpoints(summary)

    def update_summary(self, values: dict) -> None:
        """Plain summary values, nothing else logged (log_summary also uploads the run's curves)."""
        self.run.summary.update(values)

    def log_images(self, images: list[tuple[str, str]], key: str = "analysis") -> None:
        if images:
            self.run.log({key: [self.wandb.Image(str(path), caption=caption) for path, caption in images]})

    def log_table(self, key: str, columns: list[str], rows: list[list]) -> None:
        self.run.log({key: self.wandb.Table(columns=list(columns), data=[list(r) for r in rows])})

    def log_checkpoints(self, summary: dict) -> None:
        """The best and the last checkpoint folders as `model` artifacts."""
        folders = {"best": summary.get("best_checkpoint")}
        last = RunDir(self.run_dir).checkpoints()
        if last:
            folders["last"] = str(last[-1])
        for alias, folder in folders.items():
            if folder and Path(folder).is_dir():
                art = self.wandb.Artifact(f"{self.job.run.name}-model", type="model",
                                          metadata={"folder": Path(folder).name})
                art.add_dir(folder)
                self.run.log_artifact(art, aliases=[alias, Path(folder).name])

    def stop(self, reason: str) -> None:
        self.run.summary["stop_reason"] = reason
        self.exit_code = 1

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish(exit_code=self.exit_code)
            self.run = None

    def __repr__(self) -> str:
        return f"WandbTracker(mode={self.mode!r}, run_dir={os.fspath(self.run_dir)!r})"
