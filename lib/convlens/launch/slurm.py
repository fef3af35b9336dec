"""`convlens submit`: run a train/sweep/analyze/demo job in a Slurm allocation with submitit.

The job is validated here, before anything is queued, then written as a resolved spec next
to the logs (shared storage) and run on the allocation by the same `convlens` CLI entry point.
On one node the job starts its own Ray in-process; on several, Ray is bootstrapped across
the nodes (slurmjob.py, raycluster/nodes.py). Preemption and time limits send USR2: submitit calls
`checkpoint()` and requeues the same job, which resumes from what the run saved on disk
(Ray Train checkpoints under run.root/run.name, or the sweep's state with --resume).

A sweep runs by default in one allocation where Ray Tune schedules every trial (ASHA can stop
weak ones). With --array its trials are drawn here instead (sweep/array.py) and run as
one Slurm job array, a single-node `convlens train` per task, at most profile.array_parallelism
at once, each requeued on its own; `convlens sweep --collect` (or --wait) gathers the results.
"""
from __future__ import annotations

import os
import time
from datetime import datetime
from pathlib import Path

import yaml
from pydantic import BaseModel

from convlens.base.errors import ConfigError, JobFailed
from convlens.launch.container import job_folders, job_paths, missing_sources
from convlens.launch.follow import follow, wandb_group
from convlens.launch.jobstate import wait_for
from convlens.launch.sbatch import batch_script, make_executor
from convlens.launch.slurmjob import SlurmJob
from convlens.specs.base import validate
from convlens.specs.cluster import ClusterProfile, load_profile
from convlens.specs.load import load_job
from convlens.storage.rundir import SweepDir


# ---------------------------------------------------------------- submitting side

def resolve_job(kind: str, spec: str | Path, overrides, profile: ClusterProfile) -> BaseModel:
    """Validate now; point every output root at profile.runs_root; give W&B a stable group."""
    job = load_job(spec, list(overrides), kind)
    data = job.model_dump(mode="json")
    if profile.runs_root:
        root = str(Path(profile.runs_root).expanduser().resolve())
        for name, field in type(job).model_fields.items():
            section = getattr(job, name)
            if isinstance(section, BaseModel) and "root" in type(section).model_fields:
                data[name]["root"] = root
        if "root" in type(job).model_fields:
            data["root"] = root
        if "out" in type(job).model_fields and not data.get("out"):
            data["out"] = str(Path(root) / "analysis" / data["name"])
    if isinstance(data.get("tracking"), dict) and not data["tracking"].get("group"):
        data["tracking"]["group"] = job_label(kind, data, Path(spec))
    return validate(type(job), data, f"{kind} spec {spec}")


def check_runs_root(profile: ClusterProfile) -> str | None:
    """The runs root, writable from here (a multi-node job checks it again on every node)."""
    if not profile.runs_root:
        return None
    root = Path(profile.runs_root).expanduser().resolve()
    try:
        root.mkdir(parents=True, exist_ok=True)
        (root / f".convlens-write-check-{os.getpid()}").touch()
        (root / f".convlens-write-check-{os.getpid()}").unlink()
    except OSError as err:
        raise ConfigError(f"runs_root {root} is not writable from {os.uname().nodename}: {err}") from None
    return str(root)


def job_label(kind: str, data: dict, spec: Path) -> str:
    run = data.get("run")
    name = run.get("name") if isinstance(run, dict) else None
    return f"{kind}-{name or data.get('name') or spec.stem}"


def write_spec(job: BaseModel, profile: ClusterProfile, label: str) -> Path:
    """The resolved spec, beside the logs: shared storage every node (and every requeue) can read."""
    path = spec_path(profile, label, f"{datetime.now():%Y%m%d-%H%M%S-%f}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(spec_text(job))
    return path


def spec_path(profile: ClusterProfile, label: str, stamp: str) -> Path:
    return Path(profile.log_dir).expanduser().resolve() / "specs" / f"{label}-{stamp}.yaml"


def spec_text(job: BaseModel) -> str:
    return yaml.safe_dump(job.model_dump(mode="json"), sort_keys=False)


def check_mounts(profile: ClusterProfile, paths: list[str], specs: list[dict]) -> None:
    made = job_folders(specs) if profile.container else []
    missing = missing_sources(profile, paths, made)
    if missing:
        raise ConfigError(f"container: {', '.join(missing)} not found here; {profile.container.runtime} cannot "
                          f"bind a missing path into the job: create it, or correct the spec or container.mounts")
    for folder in made:
        Path(folder).mkdir(parents=True, exist_ok=True)


def submit(cluster_yaml, kind: str, spec, overrides=(), wait: bool = False, array: bool = False,
           timeout: float | None = None, multinode: bool | None = None, dry_run: bool = False):
    """Queue `convlens <kind> <spec> <overrides>` on the cluster of cluster_yaml.

    Returns the submitit Job; with wait=True follows it to the end (launch/follow.py: its states,
    rank 0's lines, the outcome) and returns its exit status (0), raising JobFailed when it failed,
    was cancelled or ran out of time (or after timeout s).
    multinode forces (or forbids) the head+workers Ray bootstrap; default: profile.nodes > 1.
    dry_run: print the batch script and the resolved spec instead, write and queue nothing
    (no Slurm needed here); returns the text printed.
    """
    profile = load_profile(cluster_yaml)
    if array:
        return submit_array(profile, kind, spec, overrides, wait, timeout, dry_run)
    job = resolve_job(kind, spec, overrides, profile)
    label = job_label(kind, job.model_dump(mode="json"), Path(spec))
    multinode = profile.nodes > 1 if multinode is None else multinode
    dumped = [job.model_dump(mode="json")]
    paths = job_paths(profile, dumped) if profile.container else []
    if not dry_run:
        check_mounts(profile, paths, dumped)
    executor = make_executor(profile, f"convlens-{label}", multinode, paths, preview=dry_run)
    if dry_run:
        spec_file = spec_path(profile, label, "<time>")
        argv = SlurmJob(kind, str(spec_file), profile.nodes, profile.cpus_per_task, profile.gpus_per_node,
                        multinode).argv(restarted=False)
        return print_dry_run(profile, batch_script(executor), task_lines(profile, multinode, argv),
                             f"resolved spec, written at submission to {spec_file}", spec_text(job), paths, dumped)
    spec_file = write_spec(job, profile, label)
    runs_root = check_runs_root(profile)
    work = SlurmJob(kind, str(spec_file), profile.nodes, profile.cpus_per_task, profile.gpus_per_node, multinode,
                    runs_root)
    sjob = executor.submit(work)
    group = wandb_group(job)
    print(f"[convlens] submitted slurm job {sjob.job_id} ({label}, {profile.nodes} node(s))\n"
          f"  stdout: {sjob.paths.stdout}\n  stderr: {sjob.paths.stderr}\n"
          f"  spec:   {spec_file}" + (f"\n  W&B group: {group}" if group else ""), flush=True)
    if wait:
        return follow(sjob, timeout, again=f"convlens follow {sjob.job_id} --cluster {cluster_yaml}")
    print(f"[convlens] follow it with: convlens follow {sjob.job_id} --cluster {cluster_yaml}", flush=True)
    return sjob


def print_dry_run(profile: ClusterProfile, script: str, runs: list[str], spec_title: str, spec: str,
                  paths: list[str], specs: list[dict]) -> str:
    """What `submit --dry-run` shows: the batch script, what its tasks run (runs: lines), the resolved
    spec under spec_title, and what only a submission checks. Returns the text printed."""
    missing = missing_sources(profile, paths, job_folders(specs))
    lines = ["[convlens] dry run: nothing written, nothing submitted",
             f"[convlens] batch script, as sbatch would get it (a submission keeps it in {profile.folder.parent}/"
             f"<job id>/):", "",
             script.rstrip("\n"), "", *runs,
             *([f"[convlens] not found here (a container binds existing paths only): {', '.join(missing)}"]
               if missing else []),
             *([f"[convlens] checked at submission, not now: runs_root {Path(profile.runs_root).expanduser().resolve()}"
                f" is writable"] if profile.runs_root else []),
             f"[convlens] {spec_title}:", "", spec.rstrip("\n")]
    text = "\n".join(lines) + "\n"
    print(text, end="", flush=True)
    return text


def task_lines(profile: ClusterProfile, multinode: bool, argv: list[str]) -> list[str]:
    """What the pickled job does in the allocation (SlurmJob.__call__), in words."""
    where = (f"on each of {profile.nodes} node(s) one task: rank 0 starts the Ray head and runs the job, "
             f"the others a Ray worker" if multinode else "one task, with a Ray of its own")
    return [f"[convlens] the job ({where}):", f"  convlens {' '.join(argv)}"]


def submit_array(profile: ClusterProfile, kind: str, spec, overrides, wait: bool, timeout: float | None,
                 dry_run: bool = False):
    """A sweep as a Slurm job array: one single-node `convlens train` task per sampled trial,
    at most profile.array_parallelism at once. Returns the tasks' submitit Jobs; with wait=True,
    collects the results once every task has ended and returns 0 if any trial completed.
    dry_run: print the array's batch script, each task's trial and the sweep's spec instead."""
    from convlens.sweep.array import check_arrayable, check_new, collect_array, plan_array, record_array
    if kind != "sweep":
        raise ConfigError(f"--array runs the trials of a sweep; a {kind} job is one allocation (drop --array)")
    job = resolve_job(kind, spec, overrides, profile)
    check_arrayable(job)
    job = job.model_copy(update={"base": str(Path(job.base).expanduser().resolve())})  # --collect from anywhere
    check_new(job)  # a dry run too says what the submission would refuse
    one_node = profile.model_copy(update={"nodes": 1})
    sampled, trials = plan_array(job)
    dumped = [t.model_dump(mode="json") for t in trials.values()]
    paths = job_paths(profile, dumped) if profile.container else []
    if not dry_run:
        check_mounts(profile, paths, dumped)
    executor = make_executor(one_node, f"convlens-sweep-{job.name}", paths=paths, preview=dry_run)
    if dry_run:
        runs = [f"[convlens] {len(trials)} array task(s), each one node with a Ray of its own, at most "
                f"{profile.array_parallelism} at once:"]
        runs += [f"  convlens train {spec_path(profile, f'train-{train.run.name}', '<time>')}   # trial {tid}: "
                 f"{' '.join(f'{k}={v}' for k, v in sampled[tid].items())}" for tid, train in trials.items()]
        return print_dry_run(one_node, batch_script(executor, len(trials)), runs,
                             f"the sweep's resolved spec (trials drawn from it with seed {job.seed})",
                             spec_text(job), paths, dumped)
    record_array(job, sampled)
    specs = {tid: write_spec(train, profile, f"train-{train.run.name}") for tid, train in trials.items()}
    with executor.batch():  # one sbatch --array for all of them
        tasks = {tid: executor.submit(SlurmJob("train", str(path), 1, profile.cpus_per_task, profile.gpus_per_node,
                                               False)) for tid, path in specs.items()}
    array_id = next(iter(tasks.values())).job_id.split("_")[0]
    print(f"[convlens] submitted slurm array job {array_id}: {len(tasks)} trials of sweep {job.name}, "
          f"at most {profile.array_parallelism} at once\n  logs:   {profile.folder.parent}/{array_id}_<task>/\n"
          f"  trials: {job.sweep_dir / SweepDir.ARRAY_INDEX}\n  W&B group: {job.group}", flush=True)
    if not wait:
        collect = f"convlens sweep {write_spec(job, profile, f'sweep-{job.name}')} --collect"
        print(f"[convlens] once every task has ended, collect the results with:\n  {collect}", flush=True)
        return list(tasks.values())
    rows = collect_array(job, wait_all(tasks, timeout))
    if not any(row["status"] == "completed" for row in rows):
        raise JobFailed(f"no trial of sweep {job.name} completed; see {job.sweep_dir / SweepDir.TRIALS}")
    return 0


def wait_all(tasks: dict, timeout: float | None) -> dict[str, JobFailed]:
    """Follow every trial's task to its end; returns {trial id: why it failed}, so that one
    failed task hides no other."""
    deadline = None if timeout is None else time.time() + timeout
    errors = {}
    for tid, task in tasks.items():
        try:
            wait_for(task, None if deadline is None else max(1.0, deadline - time.time()))
        except JobFailed as err:
            print(f"[convlens] trial {tid}: {err}", flush=True)
            errors[tid] = err
    return errors
