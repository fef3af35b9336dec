"""One trial of a sweep: its TrainJob, the Tune trial function, and the Train -> Tune report callback.

A trial builds its TrainJob (base spec + its drawn values, named `<sweep>_trial_<id>` after its
index) and runs it through the same `convlens.training.run.train` as `convlens train`. The Train
controller forwards every per-epoch report to Tune (TuneReportCallback), so ASHA can stop weak
trials; stopping the trial actor takes its Train controller and workers with it, because they are
Ray actors it owns, and Ray Train's placement group cleaner (it needs the dashboard's state API,
hence ray[default]) frees their reservation.
"""
from __future__ import annotations

import copy
from pathlib import Path

from convlens.base.errors import RunStopped
from convlens.specs.base import apply_overrides, validate
from convlens.specs.sweep import SweepJob, base_spec
from convlens.specs.train import TrainJob
from convlens.storage.rundir import RunDir, trial_run_name
from convlens.sweep.space import trial_id

STOPPED_VAL_ERROR = 1.0  # what a NaN / stopped trial reports, so it is never the best
TRIAL = "trial"  # the key of a Tune trial's config that holds its index in space.draw_trials


def trial_spec(job: SweepJob) -> dict:
    """The base train spec every trial starts from, data.path resolved by the driver (the folder
    it fetched the dataset into, whatever a trial's node would default to)."""
    spec = base_spec(job)
    spec.setdefault("data", {})["path"] = validate(TrainJob, spec).data.path
    return absolute_paths(spec)


def absolute_paths(spec: dict) -> dict:
    """Trials run in Tune's trial directories, so relative data paths must be made absolute now."""
    data = spec.setdefault("data", {})
    for key in ("path", "cache_dir"):
        if key in data:
            data[key] = str(Path(data[key]).expanduser().resolve())
    model = spec.get("model") or {}
    if model.get("pretrained"):
        model["pretrained"] = str(Path(model["pretrained"]).expanduser().resolve())
    return spec


def trial_index(tune_trial_id: str | None, config: dict) -> int:
    """A Tune trial's index in the sweep. Tune numbers the drawn trials in its ids (<prefix>_00003),
    and PBT overwrites config[TRIAL] with the donor's; TPE's ids are random, so NumberedTPE
    puts the index in config[TRIAL]."""
    tail = (tune_trial_id or "").rpartition("_")[2]
    return int(tail) if len(tail) == 5 and tail.isdigit() else int(config[TRIAL])


def trial_job(spec: dict, sampled: dict, sweep: str, trials_dir: str, trial_id: str) -> TrainJob:
    """The TrainJob a trial runs: base spec + sampled values, named after its trial id."""
    spec = apply_overrides(copy.deepcopy(spec), sampled)
    spec = apply_overrides(spec, {"run.name": trial_run_name(sweep, trial_id), "run.root": trials_dir})
    spec.setdefault("tracking", {})["params"] = {**sampled, "trial": trial_id}  # W&B top-level config keys
    return validate(TrainJob, spec, f"trial {trial_id}")


def epoch_metrics(metrics: dict) -> dict | None:
    """The scalars Tune and ASHA need from one rank-0 epoch report; None for a stop report."""
    if "stop_reason" in metrics or "val_error" not in metrics:
        return None
    keep = ("epoch", "val_error", "val_accuracy", "val_loss", "train_loss", "train_accuracy", "lr")
    return {k: metrics[k] for k in keep if k in metrics}


def make_report_callback():
    """A Train UserCallback (it runs in the Train controller) that forwards epochs to this Tune trial."""
    from ray.tune.integration.ray_train import TuneReportCallback

    class EpochsToTune(TuneReportCallback):
        def after_report(self, run_context, metrics, checkpoint):
            forwarded = epoch_metrics(metrics[0])
            if forwarded is not None:
                super().after_report(run_context, [forwarded], None)

    return EpochsToTune()


def run_trial(config: dict, spec: dict, sweep: str, trials_dir: str, env: dict,
              perturbed: list[str] | None = None) -> None:
    """Tune trial function: train this trial's job, reporting each epoch to Tune. env: the
    sweep driver's forwarded environment (a trial actor has the Ray cluster's). perturbed: PBT's
    keys; a PBT trial reports a checkpoint with each epoch and starts from Tune's (sweep/pbt.py)."""
    import os
    import ray.tune
    os.environ.update(env)
    from convlens.training.run import train
    tid = trial_id(trial_index(ray.tune.get_context().get_trial_id(), config))
    job = trial_job(spec, {k: v for k, v in config.items() if k != TRIAL}, sweep, trials_dir, tid)
    summary, stop = None, None
    try:
        if perturbed is not None:
            from convlens.sweep.pbt import train_with_checkpoints
            summary = train_with_checkpoints(job, tid, {k: config[k] for k in perturbed}, epoch_metrics)
        else:
            summary = train(job, trainer_kwargs={"callbacks": [make_report_callback()]})
    except RunStopped:  # the training loop recorded the reason (NaN loss, bad checkpoint)
        stop = RunDir(job.run_dir).read_stopped()["stop_reason"]
    if stop is not None:
        ray.tune.report({"stop_reason": stop, "val_error": STOPPED_VAL_ERROR, "epoch": job.run.epochs})
        return
    ray.tune.report({"epoch": summary["epochs"], "val_error": 1 - summary["best_val_accuracy"],
                     "best_val_accuracy": summary["best_val_accuracy"], "test_accuracy": summary["test_accuracy"]})
