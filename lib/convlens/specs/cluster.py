"""A cluster profile (slurm/*.yaml): where and how big a Slurm allocation is, as data.

One Slurm task runs per node and owns all of that node's CPUs and GPUs; Ray schedules
the workers inside the allocation.
"""
from __future__ import annotations

from pathlib import Path

from pydantic import Field

from convlens.specs.base import Strict, read_yaml, validate


class ClusterProfile(Strict):
    partition: str | None = None  # None: the cluster's default partition
    account: str | None = None
    qos: str | None = None
    time_minutes: int = Field(60, gt=0)  # wall-clock limit of one allocation (a requeue starts a new one)
    nodes: int = Field(1, gt=0)  # > 1: Ray head on the first node, workers on the rest
    gpus_per_node: int = Field(0, ge=0)
    cpus_per_task: int = Field(1, gt=0)  # one task per node: the CPUs Ray may use on each node
    mem_gb: float | None = Field(None, gt=0)  # per node; None: the cluster's default (DefMemPerCPU)
    constraint: str | None = None  # sbatch --constraint, e.g. "a100|h100"
    sbatch_extra: dict[str, str | int | bool] = Field(default_factory=dict)  # any other #SBATCH flag
    setup: list[str] = Field(default_factory=list)  # shell lines run before the job (module load ...)
    log_dir: str = "slurm_logs"  # submitit's folder, one sub-folder per job id; must be shared storage
    runs_root: str | None = None  # shared storage for run outputs; overrides run.root of the spec
    array_parallelism: int = Field(8, gt=0)  # array jobs running at once
    signal_delay_s: int = Field(90, gt=0)  # USR2 this long before the time limit, to checkpoint and requeue

    @property
    def folder(self) -> Path:
        return Path(self.log_dir).expanduser().resolve() / "%j"


def load_profile(path: str | Path) -> ClusterProfile:
    return validate(ClusterProfile, read_yaml(path), f"cluster profile {path}")
