"""`convlens sweep`: the trials under Ray Tune, each a full Ray Train run (trial.py).

The sweep fits as many trials side by side as the Ray cluster has CPUs (and GPUs) for their
Train workers, schedules them with ASHA or FIFO, and resumes with Tune's own state (tuner.pkl):
a trial's run name is `<sweep>_trial_<tune id>`, so a resumed sweep resumes interrupted trials
from their own Train checkpoints. Outputs: results.py.
"""
from __future__ import annotations

import re
from pathlib import Path

from convlens.errors import ConfigError
from convlens.raycluster import forwarded_env
from convlens.rundir import SweepDir
from convlens.specs.base import validate
from convlens.specs.sweep import SweepJob
from convlens.specs.train import TrainJob
from convlens.sweep.results import rank_rows, run_row, write_outputs
from convlens.sweep.trial import run_trial, trial_spec


def sweep(job: SweepJob, resume: bool = False) -> list[dict]:
    """Run (or resume) the sweep; returns the trials.csv rows, best first."""
    from convlens.raycluster import check_fits, ensure_ray
    spec = trial_spec(job)
    train = validate(TrainJob, spec)
    ensure_ray(quiet=train.run.quiet)
    check_fits(train.run.workers, train.run.cpus_per_worker, train.run.use_gpu, "run")
    state = job.sweep_dir / SweepDir.TUNER
    if resume and not state.is_file():
        raise ConfigError(f"--resume: no sweep to resume in {job.sweep_dir}")
    if not resume and state.is_file():
        raise ConfigError(f"sweep {job.name} already exists in {job.sweep_dir}: "
                          f"pass --resume, or choose another name")
    job.sweep_dir.mkdir(parents=True, exist_ok=True)
    results = build_tuner(job, spec, resume).fit()
    rows = collect_rows(job, results)
    write_outputs(job, spec, rows)
    return rows


def build_tuner(job: SweepJob, spec: dict, resume: bool):
    import ray.tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    train = validate(TrainJob, spec)
    trainable = ray.tune.with_resources(
        ray.tune.with_parameters(run_trial, spec=spec, sweep=job.name,
                                 trials_dir=str(SweepDir(job.sweep_dir).trials_dir), env=forwarded_env()),
        {"cpu": job.resources.trial_cpus})
    if resume:
        return ray.tune.Tuner.restore(str(job.sweep_dir), trainable=trainable, resume_unfinished=True,
                                      resume_errored=False, restart_errored=False)
    sched = job.scheduler
    # max_t past the last epoch: ASHA stops a trial that reaches max_t, which would cut off
    # the trial's own finalize (test accuracy, summary.json) after its last epoch report.
    scheduler = (ASHAScheduler(time_attr="epoch", max_t=train.run.epochs + 1, grace_period=sched.grace_period,
                               reduction_factor=sched.reduction_factor)
                 if sched.name == "asha" else FIFOScheduler())
    return ray.tune.Tuner(
        trainable, param_space=param_space(job.space, job.search),
        tune_config=ray.tune.TuneConfig(metric=sched.metric, mode=sched.mode, scheduler=scheduler,
                                        num_samples=job.num_samples, reuse_actors=False,
                                        max_concurrent_trials=concurrency(job, train)),
        run_config=ray.tune.RunConfig(name=job.name, storage_path=str(job.sweep_dir.parent),
                                      verbose=0 if train.run.quiet else 1,
                                      failure_config=ray.tune.FailureConfig(max_failures=0)))


def param_space(space: dict, search: str) -> dict:
    from ray import tune
    out = {}
    for key, dist in space.items():
        if dist.is_grid(search):
            out[key] = tune.grid_search(list(dist.args))
        elif dist.kind == "choice":
            out[key] = tune.choice(list(dist.args))
        else:
            out[key] = getattr(tune, dist.kind)(*dist.args)
    return out


def concurrency(job: SweepJob, train: TrainJob) -> int:
    """Trials that fit at once: Tune only sees the trial's own CPUs, not its Train workers'."""
    import ray
    total = ray.cluster_resources()
    per_trial = job.resources.trial_cpus + train.run.workers * train.run.cpus_per_worker
    fit = int(total.get("CPU", 0) // per_trial)
    if train.run.use_gpu:
        fit = min(fit, int(total.get("GPU", 0) // train.run.workers))
    if fit < 1:
        raise ConfigError(f"one trial needs {per_trial:g} CPUs (resources.trial_cpus + run.workers x "
                          f"run.cpus_per_worker), but the Ray cluster has {total.get('CPU', 0):g}")
    if fit < job.max_concurrent:
        print(f"[convlens] max_concurrent {job.max_concurrent} -> {fit}: what the cluster fits", flush=True)
    return min(fit, job.max_concurrent)


TRIAL_DIR_ID = re.compile(r"_([0-9a-f]{5}_\d{5})(?:_|$)")


def trial_id_of(result) -> str:
    tid = (result.metrics or {}).get("trial_id")
    if tid:
        return tid
    match = TRIAL_DIR_ID.search(Path(result.path).name)
    return match.group(1) if match else Path(result.path).name


def collect_rows(job: SweepJob, results) -> list[dict]:
    """One row per trial of Tune's results, from its run directory."""
    rows = []
    for result in results:
        tid = trial_id_of(result)
        sampled = {k: (result.config or {}).get(k) for k in job.space}
        row = run_row(job, tid, sampled, result.error)
        if row["status"] == "early_stopped":  # Tune's last seen epoch; the run may have written one more
            row["stop_reason"] = f"ASHA stopped it after epoch {(result.metrics or {}).get('epoch', '?')}"
        rows.append(row)
    return rank_rows(rows)
