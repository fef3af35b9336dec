"""Connecting this process to Ray (a cluster to join, else a private one-node Ray), checking a
request fits the cluster, and waiting for a worker's line in the driver's output.
"""
from __future__ import annotations

import os

from convlens.base.errors import ConfigError
from convlens.raycluster.env import job_runtime_env, log_level, prepare_environment


def ensure_ray(quiet: bool = False, address: str | None = None) -> None:
    """Join `address` or RAY_ADDRESS (a cluster the user started with `ray start --head`, say;
    `auto` finds it) if given; else start a local one-node Ray."""
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        os.environ["RAY_ADDRESS"] = address  # before prepare_environment: a joined cluster keeps its auth
    prepare_environment()
    import ray
    if ray.is_initialized():
        return
    # The dashboard (ray[default]) serves the state API that Ray Train's placement group
    # cleaner polls; without it the cleaner logs a warning every second and never cleans up.
    settings = dict(log_to_driver=not quiet, logging_level=log_level(),
                    logging_config=ray.LoggingConfig(log_level=log_level()))
    if address:
        ray.init(address=address, runtime_env=job_runtime_env(), **settings)
    else:
        init_local(**settings)


def init_local(**init_kwargs) -> None:
    """Start a private one-node Ray whose own tasks and actors know its address (RAY_ADDRESS).

    Ray Train's placement group cleaner (an actor) asks the state API about its controller with
    no address; with two Ray instances on the machine (two convlens commands at once, or a Slurm
    job's Ray beside this one) that lookup fails or finds the other cluster, and the placement
    groups of a stopped trial are never freed: the sweep waits forever. So the GCS port is chosen
    here (RAY_GCS_SERVER_PORT, read by the head ray.init starts) and handed to every worker."""
    import socket
    import ray
    host = ray.util.get_node_ip_address()
    with socket.socket() as probe:  # a free port; the GCS binds it a moment later
        probe.bind((host, 0))
        port = probe.getsockname()[1]
    os.environ["RAY_GCS_SERVER_PORT"] = str(port)
    try:
        ray.init(address="local", runtime_env=job_runtime_env({"RAY_ADDRESS": f"{host}:{port}"}), **init_kwargs)
    finally:
        del os.environ["RAY_GCS_SERVER_PORT"]


def worker_resources(run) -> dict[str, float]:
    """What one Train worker of this run section reserves: its CPUs and, on GPU, its GPU share."""
    return {"CPU": run.cpus_per_worker, **({"GPU": run.gpus_per_worker} if run.use_gpu else {})}


def check_fits(run) -> None:
    """Fail now if the cluster can never schedule the run's workers (Ray would wait forever)."""
    import ray
    total = ray.cluster_resources()
    for kind, each in worker_resources(run).items():
        need, have = run.workers * each, total.get(kind, 0)
        if need > have + 1e-9:
            field = "cpus_per_worker" if kind == "CPU" else "gpus_per_worker"
            raise ConfigError(f"run.workers = {run.workers} x run.{field} = {each:g} needs {need:g} {kind}s, "
                              f"but the Ray cluster has {have:g}")


class WorkerLine:
    """Waits for a line containing `text` in the worker output Ray forwards to this driver, so that
    what the driver prints next comes after it in the log (the forwarding is asynchronous: a run's
    summary line would otherwise come before its last epoch line). Use as a context manager around
    the work that prints the line, then `wait()`."""

    NAME = "convlens_worker_line"

    def __init__(self, text: str):
        import threading
        self.text, self.seen = text, threading.Event()

    def __enter__(self):
        from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher
        dispatcher.add_handler(self.NAME, self.handle)  # after Ray's printer: called once it is printed
        return self

    def handle(self, data: dict) -> None:
        if any(self.text in line for line in data.get("lines", ())):
            self.seen.set()

    def wait(self, timeout: float = 10.0) -> bool:
        return self.seen.wait(timeout)

    def __exit__(self, *exc):
        from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher
        dispatcher.remove_handler(self.NAME)
