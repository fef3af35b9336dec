"""`convlens follow JOBID` and `submit --wait`: a Slurm job followed from the login node.

Shows the job's state changes (from slurmctld, no accounting needed), then rank 0's own lines as
they are written (its `[convlens]` lines: progress, epochs, errors; not Ray's), and ends with one
line of the outcome, read from the run's own files (summary.json; a sweep's trials.csv), not
from the log. Ctrl-C stops following; the job goes on.
"""
from __future__ import annotations

import csv
import json
import re
import sys
import time
from pathlib import Path

from convlens.base.errors import ERROR_PREFIX, ConfigError, JobFailed

# Ray's prefix on a line a worker or actor printed: "(RayTrainWorker pid=123, ip=10.0.0.2) "
RAY_PREFIX = re.compile(r"^\([^()]*pid=\d+[^()]*\) ")


class LogTail:
    """The new complete lines of a file that is still being written."""

    def __init__(self, path: Path):
        self.path, self.offset, self.rest = Path(path), 0, ""

    def lines(self) -> list[str]:
        if not self.path.is_file():
            return []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        self.offset += len(data)
        *done, self.rest = (self.rest + data.decode(errors="replace")).split("\n")
        return done


def own_line(line: str) -> str | None:
    """The line as the user should see it, or None for Ray's, submitit's and other noise."""
    line = RAY_PREFIX.sub("", line.rstrip("\r"))
    return line if line.startswith(("[convlens]", ERROR_PREFIX)) else None


def job_spec(folder: Path, job_id: str) -> tuple[str, str]:
    """(kind, resolved spec path) of a submitted job, from the pickle submitit runs."""
    import pickle
    pkl = folder / f"{job_id}_submitted.pkl"  # submitit's name for it
    if not pkl.is_file():
        raise ConfigError(f"no submitted job {job_id} under {folder.parent} (the profile's log_dir); "
                          f"follow it with the --cluster profile it was submitted with")
    with open(pkl, "rb") as f:
        work = pickle.load(f).function
    return work.kind, work.spec_path


def outcome(kind: str, spec_path: str) -> str:
    """The job's result in one line, from what the run wrote on shared storage."""
    from convlens.specs.load import load_job
    job = load_job(spec_path, [], kind)
    group = wandb_group(job)
    if kind == "train":
        path = job.run_dir / "summary.json"
        if not path.is_file():
            return f"no result: {path} missing"
        s = json.loads(path.read_text())
        return (f"{job.run.name}: best val acc {s['best_val_accuracy']:.4f} at epoch {s['best_epoch']}, "
                f"test acc {s['test_accuracy']:.4f}; run {job.run_dir}; W&B group {group}")
    if kind == "sweep":
        return sweep_outcome(job.sweep_dir / "trials.csv", job.name, group)
    where = getattr(job, "out", None) or getattr(job, "root", None)
    return f"{kind} {getattr(job, 'name', '')}: outputs in {where}" + (f"; W&B group {group}" if group else "")


def wandb_group(job) -> str | None:
    """The W&B group a job's runs go to: a training run's tracking.group or else its name, a
    sweep's group; None for the analysis and probe jobs, whose runs join each analysed run's group."""
    return job.group if job.kind in ("train", "sweep") else None


def sweep_outcome(trials: Path, name: str, group: str | None) -> str:
    if not trials.is_file():
        return f"no result: {trials} missing"
    with open(trials) as f:
        rows = list(csv.DictReader(f))
    best = next((r for r in rows if r.get("best") == "True"), None)
    if best is None:
        return f"sweep {name}: no trial of {len(rows)} completed; {trials}"
    config = " ".join(f"{k.removeprefix('config/')}={v}" for k, v in best.items() if k.startswith("config/"))
    return (f"sweep {name}: best trial {best['trial_id']} ({config}): val acc {float(best['best_val_accuracy']):.4f} "
            f"at epoch {best['best_epoch']}, test acc {float(best['test_accuracy']):.4f}; run {best['run_dir']}; "
            f"sweep {trials.parent}; W&B group {group}")


def show(tails: list[LogTail]) -> None:
    """The new lines of rank 0's logs: its own, or every line with --verbose."""
    from convlens.raycluster.env import verbose
    for tail in tails:
        for line in tail.lines() if verbose() else filter(None, map(own_line, tail.lines())):
            print(line, flush=True)


def follow(sjob, timeout: float | None = None, poll_s: float = 1.0, again: str = "") -> int:
    """Follow submitit job sjob to its end: state changes, rank 0's lines, then the outcome.
    Returns 0 when the job succeeded; raises JobFailed otherwise (or after timeout s, job left
    running). again: how to follow it once more, said on Ctrl-C."""
    from convlens.launch.jobstate import TERMINAL, finish, slurm_state
    folder = Path(sjob.paths.folder)
    kind, spec = job_spec(folder, sjob.job_id)
    tails = [LogTail(sjob.paths.stdout), LogTail(sjob.paths.stderr)]
    deadline = None if timeout is None else time.time() + timeout
    last, ended = None, None
    try:
        while True:
            state = slurm_state(sjob.job_id)
            if state != last:
                print(f"[convlens] job {sjob.job_id}: {state}", flush=True)
                last = state
            show(tails)
            if sjob.paths.result_pickle.exists():
                show(tails)  # what was written before the result
                break
            if state in TERMINAL or state == "GONE":  # the result may still be on its way (shared storage)
                ended = ended or time.time()
                if time.time() - ended > 3:
                    break
            if deadline and time.time() > deadline:
                raise JobFailed(f"slurm job {sjob.job_id} still {state} after {timeout:.0f} s (left running)")
            time.sleep(poll_s)
    except KeyboardInterrupt:
        print(f"\n[convlens] stopped following; job {sjob.job_id} goes on. Follow it again with: "
              f"{again or f'convlens follow {sjob.job_id}'}", file=sys.stderr, flush=True)
        raise
    final_state(sjob.job_id, last)
    if not sjob.paths.result_pickle.exists():
        raise JobFailed(f"slurm job {sjob.job_id} ended {last} without a result; its log: {sjob.paths.stdout}")
    code = finish(sjob)  # raises JobFailed with the job's error
    print(f"[convlens] job {sjob.job_id} done: {outcome(kind, spec)}", flush=True)
    return code


def final_state(job_id: str, last: str, wait_s: float = 5.0) -> None:
    """The job's last state change (COMPLETED, say), which slurmctld records a moment after the result."""
    from convlens.launch.jobstate import TERMINAL, slurm_state
    deadline = time.time() + wait_s
    state = last
    while state not in TERMINAL and state != "GONE" and time.time() < deadline:
        time.sleep(0.5)
        state = slurm_state(job_id)
    if state != last and state != "GONE":
        print(f"[convlens] job {job_id}: {state}", flush=True)


def follow_id(cluster_yaml: str, job_id: str, timeout: float | None = None) -> int:
    """`convlens follow JOBID --cluster PROFILE`: a job submitted earlier with that profile."""
    import submitit
    from convlens.specs.cluster import load_profile
    profile = load_profile(cluster_yaml)
    sjob = submitit.SlurmJob(folder=profile.folder, job_id=str(job_id), tasks=(0,))
    return follow(sjob, timeout, again=f"convlens follow {job_id} --cluster {cluster_yaml}")
