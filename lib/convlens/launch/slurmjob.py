"""What runs on a Slurm allocation: `convlens <kind> <spec>` on one node, or across its nodes with
Ray (head on the first node, a worker on each other one, raycluster/nodes.py).

Preemption and time limits send USR2: submitit calls `checkpoint()` and requeues the same job,
which resumes from what the run saved on disk. Before a multi-node job starts, every node must
be able to write the runs root (the shared storage); a node that cannot fails the job at once,
named with the path.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from convlens.base.errors import ERROR_PREFIX, ConvlensError
from convlens.raycluster.allocation import Allocation, cluster_line, granted, ray_init_kwargs


class SlurmJob:
    """The callable submitit pickles and runs once per Slurm task (one task per node)."""

    def __init__(self, kind: str, spec_path: str, nodes: int, cpus: int, gpus: int, multinode: bool,
                 runs_root: str | None = None):
        self.kind, self.spec_path = kind, spec_path
        self.nodes, self.cpus, self.gpus = nodes, cpus, gpus
        self.multinode = multinode  # head+workers bootstrap even when nodes == 1
        self.runs_root = runs_root  # checked writable on every node before a multi-node job starts
        self.attempt = 0  # bumped by checkpoint(); SLURM_RESTART_COUNT covers external requeues

    def argv(self, restarted: bool) -> list[str]:
        resume = ["--resume"] if self.kind == "sweep" and restarted else []
        return [self.kind, self.spec_path, *resume]

    def run(self, restarted: bool, before=None) -> int:
        """The job itself, as `convlens <kind> <spec>` would run it; 0 or a failure.
        before: a check to run first (its ConvlensError fails the job the same way)."""
        from convlens.jobs.dispatch import run_job
        try:
            if before is not None:
                before()
            run_job(self.kind, self.spec_path, resume=self.kind == "sweep" and restarted)
        except ConvlensError as err:
            print(f"{ERROR_PREFIX}{err}", file=sys.stderr, flush=True)
            return err.exit_code
        return 0

    def __call__(self) -> int:
        import submitit
        from convlens.raycluster.env import prepare_environment
        prepare_environment()  # before ray is imported: a calm log (no colour codes, no dedup notes)
        env = submitit.JobEnvironment()
        restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
        restarted = restarts > 0 or self.attempt > 0
        argv = self.argv(restarted)
        print(f"[convlens] slurm job {env.job_id} rank {env.global_rank}/{env.num_tasks} on {env.hostname}: "
              f"restart {restarts}, attempt {self.attempt}, convlens {' '.join(argv)}", flush=True)
        if not self.multinode:
            return check_status(argv, run_single_node(lambda: self.run(restarted), granted(self.cpus, self.gpus),
                                                      env.hostname))
        return check_status(argv, self.run_multinode(env, restarted, restarts))

    def run_multinode(self, env, restarted: bool, restarts: int) -> int:
        """Rank 0: the Ray head and the driver; the other ranks: a Ray worker until the driver is done.
        Every address is the one Slurm reaches the node at (nodes.node_address), never loopback."""
        from convlens.raycluster import nodes
        head_ip = nodes.node_address(env.hostnames[0], shared=self.nodes > 1)
        port = nodes.ray_port(env.job_id)
        done = Path(os.environ.get("CONVLENS_SLURM_FOLDER", ".")) / f"ray_done_{env.job_id}_{restarts}"
        if env.global_rank > 0:
            me = os.environ.get("SLURMD_NODENAME") or env.hostnames[env.global_rank]
            nodes.worker_node(me, nodes.node_address(me), f"{head_ip}:{port}", granted(self.cpus, self.gpus),
                                 done)
            return 0
        try:
            with nodes.head_node(head_ip, port, self.nodes, granted(self.cpus, self.gpus)):
                check = (lambda: nodes.check_writable(self.runs_root)) if self.runs_root else None
                return self.run(restarted, before=check)
        finally:
            done.touch()

    def checkpoint(self, *args, **kwargs):
        """USR2 (time limit or preemption): requeue this same job; the run resumes from disk."""
        import submitit
        self.attempt += 1
        print(f"[convlens] checkpoint: requeueing (attempt {self.attempt})", flush=True)
        return submitit.helpers.DelayedSubmission(self)


def run_single_node(job, alloc: Allocation, hostname: str) -> int:
    """A private Ray sized to this allocation (not to the whole machine), then the job."""
    import time
    import ray
    from convlens.raycluster.env import job_runtime_env, log_level
    os.environ.pop("RAY_ADDRESS", None)  # never join a cluster inherited from the submitter
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    started = time.time()
    # address="local": a new instance even if a `ray start` on this node left its address behind;
    # the node's address given, as `ray start --node-ip-address` is for several nodes
    ip = node_ip(hostname)
    ray.init(address="local", logging_level=log_level(), runtime_env=job_runtime_env(),
             **({"_node_ip_address": ip} if ip else {}), **ray_init_kwargs(alloc))
    print(cluster_line(1, time.time() - started, ray.cluster_resources(), alloc), flush=True)
    try:
        return job()
    finally:
        ray.shutdown()


def node_ip(hostname: str) -> str | None:
    """This node's address as Slurm knows it, unless that is loopback (Ray then finds its own)."""
    from convlens.raycluster.nodes import node_address
    try:
        ip = node_address(hostname, shared=False)
    except OSError:
        return None
    return None if ip.startswith("127.") else ip


def check_status(argv: list[str], code: int) -> int:
    if code:
        raise RuntimeError(f"convlens {' '.join(argv)} exited with status {code}")
    return code
