"""What Slurm granted this job on this node, and the Ray that fits in it.

Ray sizes itself from the machine (all its cores, 70% of its memory); on a shared node that is
work the allocation does not have, and Slurm's memory limit kills it. Every Ray a job starts
(ray.init on one node, `ray start` on several) takes its sizes from here instead.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

GB = 1e9
# Share of the granted memory Ray's processes may reserve; the rest is headroom for the job's own
# Python, the raylet and GCS, which Ray does not count. Of that share, the object store's part.
RAY_SHARE = 0.9
OBJECT_STORE_SHARE = 1 / 3
MIN_OBJECT_STORE = 80 * 2**20  # Ray refuses an object store under 75 MiB


@dataclass(frozen=True)
class Allocation:
    cpus: int
    gpus: int
    mem_bytes: int | None  # None: Slurm set no memory limit for the job

    def ray_memory(self) -> tuple[int, int] | None:
        """(Ray's `memory`, `object_store_memory`) in bytes, together RAY_SHARE of the granted
        memory; None where nothing was granted (Ray's own defaults then)."""
        if self.mem_bytes is None:
            return None
        usable = int(self.mem_bytes * RAY_SHARE)
        store = max(MIN_OBJECT_STORE, int(usable * OBJECT_STORE_SHARE))
        return usable - store, store

    def describe(self) -> str:
        """`2 CPUs, 0 GPUs, mem_gb 4.0 (Ray memory 2.58e9 + object store 1.29e9 bytes)`."""
        text = f"{self.cpus} CPUs, {self.gpus} GPUs"
        sizes = self.ray_memory()
        if sizes is None:
            return text + ", memory not limited by Slurm (Ray's default)"
        return (f"{text}, mem_gb {self.mem_bytes / 2**30:.1f} "
                f"(Ray memory {sizes[0]:.3g} + object store {sizes[1]:.3g} bytes)")


def granted(cpus: int, gpus: int, env=None) -> Allocation:
    """This node's share of the job from Slurm's variables; cpus, gpus: the profile's request,
    used where Slurm says nothing (a job run outside Slurm).

    SLURM_CPUS_ON_NODE: CPUs on this node; SLURM_MEM_PER_NODE (MB) or SLURM_MEM_PER_CPU (MB) x
    CPUs; SLURM_GPUS_ON_NODE, else the devices in CUDA_VISIBLE_DEVICES."""
    env = os.environ if env is None else env
    cpus = int(env.get("SLURM_CPUS_ON_NODE") or cpus)
    if env.get("SLURM_GPUS_ON_NODE"):
        gpus = int(env["SLURM_GPUS_ON_NODE"])
    elif env.get("CUDA_VISIBLE_DEVICES") is not None and "SLURM_JOB_ID" in env:
        gpus = len([d for d in env["CUDA_VISIBLE_DEVICES"].split(",") if d.strip()])
    mem_mb = None
    if env.get("SLURM_MEM_PER_NODE"):
        mem_mb = int(env["SLURM_MEM_PER_NODE"])
    elif env.get("SLURM_MEM_PER_CPU"):
        mem_mb = int(env["SLURM_MEM_PER_CPU"]) * cpus
    return Allocation(cpus, gpus, None if not mem_mb else mem_mb * 2**20)


def ray_start_args(alloc: Allocation) -> list[str]:
    """`ray start` options for this allocation."""
    args = [f"--num-cpus={alloc.cpus}", f"--num-gpus={alloc.gpus}"]
    sizes = alloc.ray_memory()
    if sizes:
        args += [f"--memory={sizes[0]}", f"--object-store-memory={sizes[1]}"]
    return args


def ray_init_kwargs(alloc: Allocation) -> dict:
    """ray.init keyword arguments for this allocation."""
    kwargs = {"num_cpus": alloc.cpus, "num_gpus": alloc.gpus}
    sizes = alloc.ray_memory()
    if sizes:
        kwargs.update(_memory=sizes[0], object_store_memory=sizes[1])
    return kwargs


def cluster_line(nodes: int, seconds: float, resources: dict, alloc: Allocation) -> str:
    """The job log's `Ray cluster up` line: the cluster's totals and this node's grant."""
    return (f"[convlens] Ray cluster up: {nodes} node{'s' * (nodes != 1)} in {seconds:.1f} s, "
            f"{resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs, "
            f"memory {resources.get('memory', 0):.3g} + object store {resources.get('object_store_memory', 0):.3g} "
            f"bytes; each node as granted: {alloc.describe()}")
