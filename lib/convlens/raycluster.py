"""Connecting to Ray, checking a request fits the cluster, and the environment jobs forward.

Ray's own chatter is hidden unless the user asks for it (`convlens --verbose`, which sets
CONVLENS_VERBOSE): Ray Train's per-rank report lines through the job's LoggingConfig, the start-up
token warning by choosing token authentication explicitly for a cluster convlens starts, and
the preemption watcher (whose actor logs an error line at every start) through Ray Train's
RAY_TRAIN_ENABLE_PREEMPTION_WATCHER; convlens reacts to preemption through Slurm and retries.
"""
from __future__ import annotations

import os
import sys

from convlens.errors import ConfigError

VERBOSE = "CONVLENS_VERBOSE"
# Settings from the user's shell that every Ray worker, Tune trial and analysis task must see;
# the API key stays in the cluster's own environment so Ray never stores it.
FORWARDED_ENV = ("WANDB_MODE", "WANDB_BASE_URL", "WANDB_PROJECT", "WANDB_ENTITY", "WANDB_DIR",
                 "CONVLENS_FAULTS", VERBOSE)


def forwarded_env() -> dict[str, str]:
    return {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}


def verbose() -> bool:
    return os.environ.get(VERBOSE) == "1"


def progress_mode(quiet: bool) -> str:
    """How a run shows its steps: a bar on a terminal, lines in a log file, nothing when quiet."""
    if quiet:
        return "off"
    return "bar" if sys.stdout.isatty() else "lines"


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
    if not os.environ.get("RAY_ADDRESS"):
        os.environ.setdefault("RAY_AUTH_MODE", "token")  # Ray's default for a new cluster, chosen explicitly
    if not sys.stdout.isatty():
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")  # no colour codes in log files


def ensure_ray(quiet: bool = False) -> None:
    """Join RAY_ADDRESS (a cluster the user started with `ray start --head`, say; `auto` finds
    it) if given; else start a local one-node Ray."""
    prepare_environment()
    import ray
    if ray.is_initialized():
        return
    # The dashboard (ray[default]) serves the state API that Ray Train's placement group
    # cleaner polls; without it the cleaner logs a warning every second and never cleans up.
    ray.init(address=os.environ.get("RAY_ADDRESS") or "local", log_to_driver=not quiet,
             logging_level=log_level(), logging_config=ray.LoggingConfig(log_level=log_level()))


def check_fits(workers: int, cpus_per_worker: float, use_gpu: bool, what: str = "run") -> None:
    """Fail now if the cluster can never schedule this many workers (Ray would wait forever)."""
    import ray
    total = ray.cluster_resources()
    need_cpu = workers * cpus_per_worker
    if need_cpu > total.get("CPU", 0):
        raise ConfigError(f"{what}.workers = {workers} x {what}.cpus_per_worker = {cpus_per_worker} "
                          f"needs {need_cpu:g} CPUs, but the Ray cluster has {total.get('CPU', 0):g}")
    if use_gpu and workers > total.get("GPU", 0):
        raise ConfigError(f"{what}.workers = {workers} with {what}.use_gpu = true needs {workers} GPUs, "
                          f"but the Ray cluster has {total.get('GPU', 0):g}")
