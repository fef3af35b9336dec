"""The batch script of a cluster profile: sbatch parameters, the setup lines every job runs, and
the command (launch/container.py), all written by submitit's own SlurmExecutor."""
from __future__ import annotations

import copy
import os
import shlex

from convlens.launch.container import node_command
from convlens.specs.cluster import ClusterProfile


def sbatch_parameters(profile: ClusterProfile, job_name: str) -> dict:
    """submitit.SlurmExecutor parameters for one allocation of profile.nodes nodes."""
    params = {
        "job_name": job_name,
        "time": profile.time_minutes,
        "nodes": profile.nodes,
        "ntasks_per_node": 1,
        "cpus_per_task": profile.cpus_per_task,
        "signal_delay_s": profile.signal_delay_s,
        "array_parallelism": profile.array_parallelism,
        "setup": list(profile.setup),
        "additional_parameters": dict(profile.sbatch_extra),
    }
    optional = {"partition": profile.partition, "account": profile.account, "qos": profile.qos,
                "constraint": profile.constraint,
                "gpus_per_node": profile.gpus_per_node or None,
                "mem": f"{int(profile.mem_gb * 1024)}M" if profile.mem_gb else None}
    params.update({k: v for k, v in optional.items() if v is not None})
    return params


def make_executor(profile: ClusterProfile, job_name: str, multinode: bool = False, paths: list[str] = (),
                  preview: bool = False):
    """submitit's SlurmExecutor for this profile; paths: host paths the job needs inside a container
    (container.job_paths). preview: one that only writes the batch script (batch_script), needs no
    Slurm here and submits nothing."""
    import submitit
    python, srun_args = node_command(profile, list(paths))
    kind = preview_executor() if preview else submitit.SlurmExecutor
    executor = kind(folder=profile.folder, max_num_timeout=20, python=python)
    params = sbatch_parameters(profile, job_name)
    # The job runs in a fresh process on another machine, with the same import path as this submitter.
    # WANDB_SERVICE: a W&B service the submitter's process runs must not be reused by the job
    # (it may be on another machine, and outlives a requeued attempt's half-open run).
    params["setup"] = [*pythonpath_lines(), f"export CONVLENS_SLURM_FOLDER={profile.folder.parent}/$SLURM_JOB_ID",
                       "unset WANDB_SERVICE", *ray_auth_lines(multinode), *params["setup"]]
    if srun_args:
        params["srun_args"] = srun_args
    executor.update_parameters(**params)
    return executor


def preview_executor():
    """submitit's SlurmExecutor with its `srun` check off and submission refused: the same script, no queue."""
    import submitit

    class PreviewExecutor(submitit.SlurmExecutor):
        @classmethod
        def affinity(cls) -> int:
            return 1

        def _internal_process_submissions(self, delayed_submissions):
            raise RuntimeError("a preview executor submits nothing (convlens submit --dry-run)")
    return PreviewExecutor


def batch_script(executor, array_size: int = 1) -> str:
    """The text submitit hands sbatch (its _submit_command writes this very call's result): for one
    job, or for an array of array_size tasks, which submitit marks by map_count as here."""
    if array_size > 1:
        executor = copy.copy(executor)
        executor.parameters = {**executor.parameters, "map_count": array_size}
    return executor._make_submission_file_text(executor._submitit_command_str, uid="dry-run")


def ray_auth_lines(multinode: bool) -> list[str]:
    # Ray reads its auth mode at import: set it before any Python starts, the same on every node.
    return ['export RAY_AUTH_MODE="${RAY_AUTH_MODE:-token}"'] if multinode else []


def pythonpath_lines() -> list[str]:
    path = os.environ.get("PYTHONPATH")
    return [f"export PYTHONPATH={shlex.quote(path)}"] if path else []


def sbatch_script(profile: ClusterProfile, label: str, paths: list[str] = ()) -> str:
    """The batch script submit() would queue for this profile (to inspect without a cluster)."""
    return batch_script(make_executor(profile, f"convlens-{label}", profile.nodes > 1, paths, preview=True))
