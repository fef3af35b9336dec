"""A cluster profile (slurm/*.yaml): where and how big a Slurm allocation is, and what Python
runs the job there, as data.

One Slurm task runs per node and owns all of that node's CPUs and GPUs; Ray schedules
the workers inside the allocation.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from convlens.specs.base import Strict, read_yaml, validate


class Container(Strict):
    """The image every Slurm task of the job runs in (launch/container.py writes the command)."""
    runtime: Literal["apptainer", "pyxis"]  # apptainer: `apptainer exec` around the command; pyxis: srun flags
    image: str = Field(min_length=1)  # apptainer: a .sif (or docker://...); pyxis: a .sqsh or registry#image:tag
    nv: bool | None = None  # apptainer --nv (the node's NVIDIA driver inside); None: when gpus_per_node > 0
    # More host paths to bind, "SRC" (same path inside) or "SRC:DST[:OPTIONS]"; runs_root, log_dir,
    # the submit directory, PYTHONPATH and the paths the job's spec names are bound without asking.
    mounts: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _checks(self):
        if self.nv is not None and self.runtime == "pyxis":
            raise ValueError("container.nv is Apptainer's flag; under pyxis enroot's hooks expose the job's "
                             "GPUs by themselves: remove container.nv")
        for mount in self.mounts:
            if "," in mount or not mount.split(":")[0].startswith(("/", "~")):
                raise ValueError(f"container.mounts: {mount!r}: expected an absolute SRC or SRC:DST[:OPTIONS], "
                                 f"one path per entry")
        return self


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
    # The Python the compute nodes run the job with (path or command name; it needs convlens and its
    # dependencies). None: the submitter's own, by its path, which must then be on shared storage;
    # with a container, python3 inside the image. `source .../activate` in setup does not change it.
    python: str | None = Field(None, min_length=1)
    # The nodes run on the submitting machine (slurm/cluster.sh's test cluster): its /tmp is theirs,
    # so the submitter's Python is not refused for lying in a node-local folder.
    nodes_on_this_machine: bool = False
    container: Container | None = None  # None: no container, the job runs on the node's own system
    log_dir: str = "slurm_logs"  # submitit's folder, one sub-folder per job id; must be shared storage
    runs_root: str | None = None  # shared storage for run outputs; overrides run.root of the spec
    array_parallelism: int = Field(8, gt=0)  # array jobs running at once
    signal_delay_s: int = Field(90, gt=0)  # USR2 this long before the time limit, to checkpoint and requeue

    @property
    def folder(self) -> Path:
        return Path(self.log_dir).expanduser().resolve() / "%j"


def load_profile(path: str | Path) -> ClusterProfile:
    return validate(ClusterProfile, read_yaml(path), f"cluster profile {path}")
