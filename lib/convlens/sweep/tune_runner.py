"""`convlens sweep`: a sweep's trials under Ray Tune, each a full Ray Train run (trial.py).

With search random or grid, Tune runs exactly the trials space.draw_trials drew (the ones `submit
--array` would run): a grid over their indices, and each searched key a Drawn domain that Tune
resolves to the value drawn for that index, so Tune's state, trial table and result configs hold
the drawn values; with search tpe, Optuna proposes them (search.py). The sweep fits as many trials
side by side as the Ray cluster has CPUs (and GPUs) for their Train workers, schedules them with
ASHA, PBT or FIFO (search.py), and resumes with Tune's own state (tuner.pkl, the TPE study with
it): a trial's run is named after its index, so a resumed sweep resumes interrupted trials from
their own Train checkpoints (a PBT trial from the one its Tune checkpoint points at, pbt.py). While it runs the driver shows
status.py's compact status; Tune's own tables and its trial-failure tracebacks only with
`convlens --verbose`. Outputs: results.py.
"""
from __future__ import annotations

import logging
import time
import warnings
from contextlib import contextmanager

from ray.tune.search.sample import Domain

from convlens.base.errors import ConfigError
from convlens.raycluster.env import forwarded_env, verbose
from convlens.specs.base import validate
from convlens.specs.sweep import SweepJob
from convlens.specs.train import TrainJob
from convlens.storage.rundir import SweepDir
from convlens.sweep.results import planned_epochs, rank_rows, run_row, write_outputs
from convlens.sweep.search import scheduler, searcher, tpe_space
from convlens.sweep.space import draw_trials, trial_id
from convlens.sweep.status import SweepStatus
from convlens.sweep.trial import TRIAL, run_trial, trial_index, trial_spec


def sweep(job: SweepJob, resume: bool = False) -> list[dict]:
    """Run (or resume) the sweep; returns the trials.csv rows, best first."""
    from convlens.data.load import fetch
    from convlens.raycluster.connect import check_fits, ensure_ray
    from convlens.tracking.jobs import close_job, open_sweep_run
    begun = time.time()
    spec = trial_spec(job)
    train = validate(TrainJob, spec)
    fetch(train.data)  # here, once, rather than in every trial at once
    ensure_ray(quiet=train.run.quiet, address=train.run.ray_address)
    check_fits(train.run)
    state = job.sweep_dir / SweepDir.TUNER
    if resume and not state.is_file():
        raise ConfigError(f"--resume: no sweep to resume in {job.sweep_dir}")
    if not resume and state.is_file():
        raise ConfigError(f"sweep {job.name} already exists in {job.sweep_dir}: "
                          f"pass --resume, or choose another name")
    job.sweep_dir.mkdir(parents=True, exist_ok=True)
    folder = SweepDir(job.sweep_dir)
    folder.mark_started(begun, resumed=resume)
    # the sweep's own W&B run, open for the whole sweep: its system metrics and console
    tracked = open_sweep_run(job.sweep_dir, job.name, job.group, train.tracking, folder.started())
    done = False
    try:
        with tune_logs_hidden():
            results = build_tuner(job, spec, resume).fit()
        rows = collect_rows(job, results)
        write_outputs(job, spec, rows, tracked)
        done = True
    finally:
        close_job(tracked, failed=not done)
    return rows


def build_tuner(job: SweepJob, spec: dict, resume: bool):
    import ray.tune
    train = validate(TrainJob, spec)
    pbt = job.scheduler.name == "pbt"
    trainable = ray.tune.with_resources(
        ray.tune.with_parameters(run_trial, spec=spec, sweep=job.name,
                                 trials_dir=str(SweepDir(job.sweep_dir).trials_dir), env=forwarded_env(),
                                 perturbed=job.perturbed if pbt else None),
        {"cpu": job.resources.trial_cpus})
    trials = draw_trials(job)
    planned = [planned_epochs(t, spec) for t in trials] or [planned_epochs({}, spec)] * job.num_samples
    show = dict(verbose=1 if verbose() else 0,  # Tune's boxes only when asked; trials' own lines follow run.quiet
                callbacks=[SweepStatus(job.name, list(job.space), planned, job.scheduler.name)])
    if resume:
        tuner = ray.tune.Tuner.restore(str(job.sweep_dir), trainable=trainable, resume_unfinished=True,
                                       resume_errored=False, restart_errored=False)
        restored = tuner._local_tuner.get_run_config()  # the first start's: this one shows its own way
        restored.verbose, restored.callbacks = show["verbose"], show["callbacks"]
        return tuner
    sched = job.scheduler
    # reuse_actors stays off: a trial's actor owns its Train run, which must end with the trial
    warnings.filterwarnings("ignore", message="Consider boosting PBT performance", category=UserWarning)
    return ray.tune.Tuner(
        trainable, param_space=tpe_space(job) if job.search == "tpe" else param_space(trials),
        tune_config=ray.tune.TuneConfig(metric=sched.metric, mode=sched.mode,
                                        scheduler=scheduler(job, train.run.epochs), search_alg=searcher(job),
                                        num_samples=job.num_samples if job.search == "tpe" else 1,
                                        reuse_actors=False, max_concurrent_trials=concurrency(job, train)),
        run_config=ray.tune.RunConfig(name=job.name, storage_path=str(job.sweep_dir.parent),
                                      failure_config=ray.tune.FailureConfig(max_failures=0), **show))


@contextmanager
def tune_logs_hidden():
    """Tune logs a failed trial's whole traceback and a closing "Trials did not complete" at ERROR;
    the status prints the error's line and trials.csv keeps it. `convlens --verbose` shows them."""
    tune_logger = logging.getLogger("ray.tune")
    level = tune_logger.level
    if not verbose():
        tune_logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        tune_logger.setLevel(level)


def param_space(trials: list[dict]) -> dict:
    """Tune's space for these trials: their indices as a grid (run in order), and each drawn key."""
    from ray import tune
    keys = list(trials[0]) if trials else []
    return {TRIAL: tune.grid_search(list(range(len(trials)))),
            **{key: Drawn([trial[key] for trial in trials]) for key in keys}}


class Drawn(Domain):
    """One key's drawn values, by trial index. Tune's variant generator samples a domain once the
    grid is resolved, so this picks the value of the trial at hand. Not tune.sample_from: Tune
    swaps functions for placeholders that a restored Tuner cannot resolve, and its table hides them;
    not points_to_evaluate: Tune splits list values (schedule.milestones) into per-element paths."""

    def __init__(self, values: list):
        self.values = values

    def sample(self, config=None, size=1, random_state=None):
        return self.values[config["config"][TRIAL]]  # config: Tune's spec, its grid already resolved

    def is_valid(self, value) -> bool:
        return value in self.values

    @property
    def domain_str(self) -> str:
        return f"(drawn for {len(self.values)} trials)"


def concurrency(job: SweepJob, train: TrainJob) -> int:
    """Trials that fit at once: Tune only sees the trial's own CPUs, not its Train workers', nor
    the CPU a streamed image folder's Ray Data decodes with (data.stream; one per trial).
    With run.gpus_per_worker below 1, several trials share one GPU."""
    import ray
    from convlens.training.run import streamed_or_none
    total = ray.cluster_resources()
    decoding = 1 if streamed_or_none(train, verbose=True) else 0
    per_trial = job.resources.trial_cpus + train.run.workers * train.run.cpus_per_worker + decoding
    fit = int(total.get("CPU", 0) // per_trial + 1e-9)
    if train.run.use_gpu:
        fit = min(fit, int(total.get("GPU", 0) / (train.run.workers * train.run.gpus_per_worker) + 1e-9))
    if fit < 1:
        raise ConfigError(f"one trial needs {per_trial:g} CPUs (resources.trial_cpus + run.workers x "
                          f"run.cpus_per_worker{' + 1 to decode the streamed images' if decoding else ''}), "
                          f"but the Ray cluster has {total.get('CPU', 0):g}; lower run.cpus_per_worker "
                          f"(e.g. 0.5) or resources.trial_cpus")
    if fit < job.max_concurrent:
        print(f"[convlens] max_concurrent {job.max_concurrent} -> {fit}: what the cluster fits", flush=True)
    return min(fit, job.max_concurrent)


def collect_rows(job: SweepJob, results) -> list[dict]:
    """One row per trial of Tune's results, from its run directory."""
    rows = []
    for result in results:
        sampled = {k: result.config.get(k) for k in job.space}
        index = trial_index((result.metrics or {}).get("trial_id"), result.config)
        row = run_row(job, trial_id(index), sampled, result.error)
        if row["status"] == "early_stopped":
            add_judged_epoch(row, result.metrics or {})
            close_stopped_trial(row)
        rows.append(row)
    return rank_rows(rows)


def add_judged_epoch(row: dict, seen: dict) -> None:
    """An early-stopped trial's row holds the epoch ASHA judged it on: the run may have been
    stopped right after reporting it, before writing it to its metrics.jsonl (or after one more)."""
    row["stop_reason"] = f"ASHA stopped it after epoch {seen.get('epoch', '?')}"
    if seen.get("epoch", 0) > int(row["epochs"]) and "val_accuracy" in seen:
        row["epochs"] = seen["epoch"]
        if row["best_val_accuracy"] == "" or seen["val_accuracy"] > row["best_val_accuracy"]:
            row["best_epoch"], row["best_val_accuracy"] = seen["epoch"], seen["val_accuracy"]


def close_stopped_trial(row: dict) -> None:
    """An ASHA-stopped trial's actors were killed mid-run: close its W&B run here with every
    epoch it did and the stop reason in its summary."""
    from pathlib import Path
    from convlens.specs.base import read_yaml
    from convlens.storage.checkpoint import latest_verified, read_manifest
    from convlens.storage.rundir import RunDir
    from convlens.tracking.run import tracking_mode
    from convlens.tracking.tracker import close_run
    run_dir = Path(row["run_dir"])
    train = validate(TrainJob, read_yaml(run_dir / RunDir.CONFIG))
    if tracking_mode(train.tracking) == "disabled":
        return
    newest = latest_verified(run_dir)  # its manifest names the classes: no need to load the data
    names = read_manifest(newest).get("classes", []) if newest is not None else []
    close_run(train, run_dir, names, stop_reason=row["stop_reason"], failed=False)
