"""Connecting to Ray, checking a request fits the cluster, and the environment jobs forward.

Ray's own chatter is hidden unless the user asks for it (`convlens --verbose`, which sets
CONVLENS_VERBOSE): Ray Train's per-rank report lines through the job's LoggingConfig, the start-up
token warning by choosing token authentication explicitly for a cluster convlens starts, and
the preemption watcher (whose actor logs an error line at every start) through Ray Train's
RAY_TRAIN_ENABLE_PREEMPTION_WATCHER (convlens reacts to preemption through Slurm and retries), and
Ray Tune's tables through RunConfig(verbose=0) in Tune's legacy output engine (RAY_AIR_NEW_OUTPUT=0).
"""
from __future__ import annotations

import os
import sys

from convlens.base.errors import ConfigError

VERBOSE = "CONVLENS_VERBOSE"
# Settings from the user's shell that every Ray worker, Tune trial and analysis task must see;
# the API key stays in the cluster's own environment so Ray never stores it.
FORWARDED_ENV = ("WANDB_MODE", "WANDB_BASE_URL", "WANDB_PROJECT", "WANDB_ENTITY", "WANDB_DIR",
                 "CONVLENS_FAULTS", "CONVLENS_DATA", "CONVLENS_DATA_MIRROR", VERBOSE, "TORCH_CPP_LOG_LEVEL")


def forwarded_env() -> dict[str, str]:
    return {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}


def verbose() -> bool:
    return os.environ.get(VERBOSE) == "1"


def log_level() -> str:
    """Ray's log level in the driver and in every task and actor of the job: Ray Train's per-rank
    "Reporting training result" lines are INFO, its transient scheduling complaints WARNING."""
    return "INFO" if verbose() else "ERROR"


def prepare_environment() -> None:
    """Ray settings read when ray is imported: call before the process imports ray (the CLI and
    a Slurm job do)."""
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    if not verbose():
        os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")  # Ray Train passes it on
        # Tune's legacy output engine prints nothing at RunConfig(verbose=0); the new one still
        # prints a box of the experiment's configuration and one per failed trial
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    if not os.environ.get("RAY_ADDRESS"):
        os.environ.setdefault("RAY_AUTH_MODE", "token")  # Ray's default for a new cluster, chosen explicitly
    if not verbose():
        # c10d's "hostname of the client socket cannot be retrieved" (a node whose name has no
        # reverse DNS entry) and other PyTorch C++ warnings: TORCH_CPP_LOG_LEVEL, torch.distributed's docs
        os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    if not sys.stdout.isatty():
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")  # no colour codes in log files
        # every line once, as written: Ray's dedup merges lines that differ only in their numbers
        # (one rank's progress lines) into "[repeated Nx across cluster]"
        os.environ.setdefault("RAY_DEDUP_LOGS", "0")


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
        ray.init(address=address, **settings)
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
        ray.init(address="local", runtime_env={"env_vars": {"RAY_ADDRESS": f"{host}:{port}"}}, **init_kwargs)
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
