"""`convlens submit --array`: a sweep's trials as independent `convlens train` runs (one Slurm
array task each, launch/slurm.py), and the sweep's outputs gathered from their run directories.

start_array draws the trials up front (plan_array, space.draw_trials: the same trials, and run
names, as a Tune sweep of the same spec and seed; `submit --dry-run` shows them) and records them
in <sweep dir>/array.json; collect_array writes the same trials.csv, best_job.yaml and curves.png
as a Tune sweep.
"""
from __future__ import annotations

import json

from convlens.base.errors import ConfigError
from convlens.specs.sweep import SweepJob
from convlens.specs.train import TrainJob
from convlens.storage.files import read_json
from convlens.storage.rundir import SweepDir
from convlens.sweep.results import rank_rows, run_row, write_outputs
from convlens.sweep.space import draw_trials, trial_id
from convlens.sweep.trial import trial_job, trial_spec


def start_array(job: SweepJob) -> dict[str, TrainJob]:
    """Draw the trials, record them in <sweep_dir>/array.json ({"sweep": name, "trials":
    {trial id: sampled}}); returns {trial id: its TrainJob}."""
    trials, jobs = plan_array(job)
    record_array(job, trials)
    return jobs


def record_array(job: SweepJob, trials: dict[str, dict]) -> None:
    """array.json of the sweep's drawn trials ({trial id: sampled}); refused where the sweep exists."""
    check_new(job)
    job.sweep_dir.mkdir(parents=True, exist_ok=True)
    (job.sweep_dir / SweepDir.ARRAY_INDEX).write_text(json.dumps({"sweep": job.name, "trials": trials}, indent=1))


def check_new(job: SweepJob) -> None:
    folder = SweepDir(job.sweep_dir)
    if (folder / SweepDir.ARRAY_INDEX).is_file() or (folder / SweepDir.TUNER).is_file():
        raise ConfigError(f"sweep {job.name} already exists in {job.sweep_dir}: choose another name")


def check_arrayable(job: SweepJob) -> None:
    """Independent array tasks run trials drawn up front, and none sees another's results."""
    if job.scheduler.name == "asha":
        raise ConfigError("scheduler.name = asha: ASHA compares trials while they run, which independent "
                          "Slurm array tasks cannot; set scheduler.name=none or drop --array")
    if job.scheduler.name == "pbt":
        raise ConfigError("scheduler.name = pbt: PBT copies checkpoints between trials while they run, which "
                          "independent Slurm array tasks cannot; set scheduler.name=none or drop --array")
    if job.search == "tpe":
        raise ConfigError("search = tpe: TPE proposes each trial from the results of earlier ones, which "
                          "array tasks drawn up front cannot; set search=random or drop --array")


def plan_array(job: SweepJob) -> tuple[dict[str, dict], dict[str, TrainJob]]:
    """({trial id: sampled values}, {trial id: its TrainJob}), writing nothing."""
    spec = trial_spec(job)
    trials = {trial_id(i): sampled for i, sampled in enumerate(draw_trials(job))}
    folder = SweepDir(job.sweep_dir)
    return trials, {tid: trial_job(spec, sampled, job.name, str(folder.trials_dir), tid)
                    for tid, sampled in trials.items()}


def collect_array(job: SweepJob, errors: dict[str, Exception] | None = None) -> list[dict]:
    """trials.csv, best_job.yaml and curves.png from the run directories of an array sweep's
    trials; errors: trial id -> why its Slurm task failed. Returns the rows, best first."""
    from convlens.specs.base import validate
    from convlens.tracking.jobs import close_job, open_sweep_run
    index = job.sweep_dir / SweepDir.ARRAY_INDEX
    if not index.is_file():
        raise ConfigError(f"no {SweepDir.ARRAY_INDEX} in {job.sweep_dir}: nothing was submitted there with "
                          f"`convlens submit --array` (a Tune sweep writes its outputs itself)")
    spec = trial_spec(job)
    tracked = open_sweep_run(job.sweep_dir, job.name, job.group, validate(TrainJob, spec).tracking)
    done = False
    try:
        rows = []
        for tid, sampled in read_json(index)["trials"].items():
            row = run_row(job, tid, sampled, (errors or {}).get(tid))
            if row["status"] == "early_stopped":  # no scheduler stops array tasks: still running, or killed
                row["status"] = "incomplete"
            rows.append(row)
        rows = rank_rows(rows)
        write_outputs(job, spec, rows, tracked, scheduler="none")
        done = True
    finally:
        close_job(tracked, failed=not done)
    return rows
