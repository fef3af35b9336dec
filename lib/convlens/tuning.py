"""`convlens sweep`: search training configs with Ray Tune, each trial a full Ray Train run.

Each Tune trial is a small function that builds its TrainJob (base spec + overrides + the
sampled values) and runs it through the same `convlens.training.run.train` as `convlens train`.
The Train controller forwards every per-epoch report to Tune (TuneReportCallback), so ASHA
can stop weak trials; stopping the trial actor takes its Train controller and workers with it,
because they are Ray actors it owns, and Ray Train's placement group cleaner (it needs the
dashboard's state API, hence ray[default]) frees their reservation. A trial's run name is `<sweep>_trial_<tune id>`, so a
resumed sweep resumes interrupted trials from their own Train checkpoints.

Outputs in <root>/<name>/: trials.csv, best_job.yaml (a ready train spec), curves.png.
`convlens submit --array` runs the trials as a Slurm job array instead: sample_trials draws
their configs up front, array.json records them, and collect_array writes the same outputs.
"""
from __future__ import annotations

import copy
import csv
import itertools
import json
import math
import random
import re
from pathlib import Path
from typing import Any, Literal

import yaml

from convlens.errors import ConfigError, RunStopped
from convlens.files import read_json as read_json_file
from convlens.raycluster import forwarded_env
from convlens.rundir import RunDir, SweepDir
from convlens.specs.base import apply_overrides, validate
from convlens.specs.sweep import SweepJob, base_spec
from convlens.specs.train import TrainJob

STOPPED_VAL_ERROR = 1.0  # what a NaN / stopped trial reports, so it is never the best
ARRAY_INDEX = SweepDir.ARRAY_INDEX


def trials_dir(job: SweepJob) -> Path:
    return SweepDir(job.sweep_dir).trials_dir


# ---------------------------------------------------------------- one trial

def trial_job(spec: dict, sampled: dict, sweep: str, trials_dir: str, trial_id: str) -> TrainJob:
    """The TrainJob a trial runs: base spec + sampled values, named after its trial id."""
    spec = apply_overrides(copy.deepcopy(spec), sampled)
    spec = apply_overrides(spec, {"run.name": f"{sweep}_trial_{trial_id}", "run.root": trials_dir})
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


def run_trial(config: dict, spec: dict, sweep: str, trials_dir: str, env: dict) -> None:
    """Tune trial function: train this trial's job, reporting each epoch to Tune. env: the
    sweep driver's forwarded environment (a trial actor has the Ray cluster's)."""
    import os
    import ray.tune
    os.environ.update(env)
    from convlens.training.run import train
    trial_id = ray.tune.get_context().get_trial_id()
    job = trial_job(spec, config, sweep, trials_dir, trial_id)
    summary, stop = None, None
    try:
        summary = train(job, trainer_kwargs={"callbacks": [make_report_callback()]})
    except RunStopped:  # the training loop recorded the reason (NaN loss, bad checkpoint)
        stop = RunDir(job.run_dir).read_stopped()["stop_reason"]
    if stop is not None:
        ray.tune.report({"trial_id": trial_id, "stop_reason": stop, "val_error": STOPPED_VAL_ERROR,
                         "epoch": job.run.epochs})
        return
    ray.tune.report({"trial_id": trial_id, "epoch": summary["epochs"],
                     "val_error": 1 - summary["best_val_accuracy"],
                     "best_val_accuracy": summary["best_val_accuracy"],
                     "test_accuracy": summary["test_accuracy"]})


# ---------------------------------------------------------------- the sweep

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


def build_tuner(job: SweepJob, spec: dict, resume: bool):
    import ray.tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    train = validate(TrainJob, spec)
    trainable = ray.tune.with_resources(
        ray.tune.with_parameters(run_trial, spec=spec, sweep=job.name,
                                 trials_dir=str(trials_dir(job)), env=forwarded_env()),
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


def sweep(job: SweepJob, resume: bool = False) -> list[dict]:
    """Run (or resume) the sweep; returns the trials.csv rows, best first."""
    from convlens.raycluster import check_fits, ensure_ray
    spec = absolute_paths(base_spec(job))
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


# ---------------------------------------------------------------- trials as a Slurm job array

ARRAY_INDEX = "array.json"  # in the sweep directory: {"sweep": name, "trials": {trial id: sampled}}


def sample_trials(job: SweepJob) -> list[dict]:
    """The sweep's trial configs (dotted key -> value), drawn up front with job.seed, as Tune does:
    grid entries (choice too, with search: grid) form a cartesian product, repeated num_samples
    times; every other entry is drawn afresh for each trial."""
    rng = random.Random(job.seed)
    dists = {key: (dist.kind, dist.args) for key, dist in job.space.items()}
    grid = {key: args for key, (name, args) in dists.items() if job.space[key].is_grid(job.search)}
    trials = []
    for _ in range(job.num_samples):
        for values in itertools.product(*grid.values()):
            fixed = dict(zip(grid, values))
            trials.append({key: fixed[key] if key in fixed else draw(rng, name, args)
                           for key, (name, args) in dists.items()})
    return trials


def draw(rng: random.Random, name: str, args: list):
    if name == "choice":
        return rng.choice(args)
    if name == "uniform":
        return rng.uniform(*args)
    if name == "loguniform":
        return math.exp(rng.uniform(math.log(args[0]), math.log(args[1])))
    return rng.randrange(int(args[0]), int(args[1]))  # randint: hi exclusive, like Tune's


def start_array(job: SweepJob) -> dict[str, TrainJob]:
    """Sample the trials, record them in <sweep_dir>/array.json; returns {trial id: its TrainJob}."""
    index = job.sweep_dir / ARRAY_INDEX
    if index.is_file() or (job.sweep_dir / SweepDir.TUNER).is_file():
        raise ConfigError(f"sweep {job.name} already exists in {job.sweep_dir}: choose another name")
    spec = absolute_paths(base_spec(job))
    trials = {f"{i:05d}": sampled for i, sampled in enumerate(sample_trials(job))}
    jobs = {tid: trial_job(spec, sampled, job.name, str(trials_dir(job)), tid) for tid, sampled in trials.items()}
    job.sweep_dir.mkdir(parents=True, exist_ok=True)
    index.write_text(json.dumps({"sweep": job.name, "trials": trials}, indent=1))
    return jobs


def collect_array(job: SweepJob, errors: dict[str, Exception] | None = None) -> list[dict]:
    """trials.csv, best_job.yaml and curves.png from the run directories of an array sweep's
    trials; errors: trial id -> why its Slurm task failed. Returns the rows, best first."""
    index = job.sweep_dir / ARRAY_INDEX
    if not index.is_file():
        raise ConfigError(f"no {ARRAY_INDEX} in {job.sweep_dir}: nothing was submitted there with "
                          f"`convlens submit --array` (a Tune sweep writes its outputs itself)")
    rows = []
    for tid, sampled in read_json(index)["trials"].items():
        row = run_row(job, tid, sampled, (errors or {}).get(tid))
        if row["status"] == "early_stopped":  # no scheduler stops array tasks: still running, or killed
            row["status"] = "incomplete"
        rows.append(row)
    rows = rank_rows(rows)
    write_outputs(job, absolute_paths(base_spec(job)), rows)
    return rows


# ---------------------------------------------------------------- outputs

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


def run_row(job: SweepJob, tid: str, sampled: dict, error) -> dict:
    """One trial's row, read from its run directory (metrics.jsonl, summary.json, stopped.json)."""
    run = SweepDir(job.sweep_dir).trial_run(job.name, tid)
    return trial_row(tid, run.path, sampled, run.read_metrics(), run.read_summary(), run.read_stopped(), error)


def read_json(path: Path) -> dict | None:
    return read_json_file(path)


def trial_row(tid, run_dir, sampled, history, summary, stopped, error) -> dict:
    best = min(history, key=lambda h: h["val_error"]) if history else None
    if stopped:
        status = "stopped"
    elif error is not None:
        status = "error"
    elif summary:
        status = "completed"
    else:
        status = "early_stopped" if history else "not_run"
    reason = (stopped or {}).get("stop_reason") or (f"{type(error).__name__}: {error}"[:200] if error else "")
    return {"trial_id": tid, "run": run_dir.name, **{f"config/{k}": v for k, v in sampled.items()},
            "status": status, "stop_reason": reason, "epochs": history[-1]["epoch"] if history else 0,
            "best_epoch": best["epoch"] if best else "", "best_val_accuracy": best["val_accuracy"] if best else "",
            "test_accuracy": (summary or {}).get("test_accuracy", ""), "run_dir": str(run_dir)}


def rank_rows(rows: list[dict]) -> list[dict]:
    """Best first: completed trials by best validation accuracy, then the rest."""
    def key(row):
        acc = row["best_val_accuracy"]
        scored = row["status"] == "completed" and isinstance(acc, float) and math.isfinite(acc)
        return (not scored, -(acc if scored else 0.0), row["trial_id"])
    rows = sorted(rows, key=key)
    for i, row in enumerate(rows):
        row["best"] = i == 0 and row["status"] == "completed"
    return rows


def write_outputs(job: SweepJob, spec: dict, rows: list[dict]) -> None:
    write_csv(job.sweep_dir / SweepDir.TRIALS, rows)
    print(format_table(rows, list(job.space)), flush=True)
    best = rows[0] if rows and rows[0]["best"] else None
    if best is not None:
        path = write_best_job(job, spec, best)
        print(f"[convlens] best trial {best['trial_id']}: val acc {best['best_val_accuracy']:.4f}, "
              f"test acc {best['test_accuracy']:.4f}; train it with: convlens train {path}", flush=True)
    else:
        print("[convlens] no trial completed; no best_job.yaml written", flush=True)
    curves = {row["trial_id"]: read_curve(Path(row["run_dir"])) for row in rows}
    plot_curves(curves, best["trial_id"] if best else None, job.sweep_dir / SweepDir.CURVES, job.name)
    print(f"[convlens] sweep outputs in {job.sweep_dir}", flush=True)


def write_csv(path: Path, rows: list[dict]) -> None:
    columns = list(rows[0]) if rows else ["trial_id"]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (yaml.safe_dump(v, default_flow_style=True).strip()
                                 if isinstance(v, (list, dict)) else v) for k, v in row.items()})


def format_table(rows: list[dict], space_keys: list[str]) -> str:
    head = ["trial", *space_keys, "status", "epochs", "best_ep", "val_acc", "test_acc"]
    body = []
    for row in rows:
        cells = [row["trial_id"] + (" *" if row["best"] else "")]
        cells += [fmt(row[f"config/{k}"]) for k in space_keys]
        cells += [row["status"], str(row["epochs"]), str(row["best_epoch"]),
                  fmt(row["best_val_accuracy"]), fmt(row["test_accuracy"])]
        body.append(cells)
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in [head, *body])


def fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value) if value is not None else ""


def write_best_job(job: SweepJob, spec: dict, best: dict) -> Path:
    """The best config as a ready train spec, named <sweep>_best, in the sweep's root."""
    sampled = {k: best[f"config/{k}"] for k in job.space}
    spec = apply_overrides(copy.deepcopy(spec), sampled)
    spec = apply_overrides(spec, {"run.name": f"{job.name}_best", "run.root": str(job.sweep_dir.parent)})
    validate(TrainJob, spec, "best_job.yaml")
    path = job.sweep_dir / SweepDir.BEST_JOB
    header = (f"# Best trial {best['trial_id']} of sweep {job.name}: val acc {best['best_val_accuracy']:.4f}, "
              f"test acc {best['test_accuracy']:.4f}\n")
    path.write_text(header + yaml.safe_dump(spec, sort_keys=False))
    return path


def read_curve(run_dir: Path) -> tuple[list[int], list[float]]:
    history = RunDir(run_dir).read_metrics()
    return [h["epoch"] for h in history], [h["val_accuracy"] for h in history]


def plot_curves(curves: dict[str, tuple[list, list]], best: str | None, path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for tid, (epochs, acc) in curves.items():
        if epochs:
            ax.plot(epochs, acc, marker="o", lw=2.5 if tid == best else 1.0,
                    alpha=1.0 if tid == best else 0.6, label=tid + (" (best)" if tid == best else ""))
    ax.set(xlabel="epoch", ylabel="validation accuracy", title=f"sweep {title}: validation accuracy")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)

