"""Connecting to Ray, checking a request fits the cluster, and the environment jobs forward."""
from __future__ import annotations

import os

from convlens.errors import ConfigError

# Settings from the user's shell that every Ray worker, Tune trial and analysis task must see;
# the API key stays in the cluster's own environment so Ray never stores it.
FORWARDED_ENV = ("WANDB_MODE", "WANDB_BASE_URL", "WANDB_PROJECT", "WANDB_ENTITY", "WANDB_DIR",
                 "CONVLENS_FAULTS")


def forwarded_env() -> dict[str, str]:
    return {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}


def ensure_ray(quiet: bool = False) -> None:
    """Join RAY_ADDRESS (or a running session) if given; else start a local one-node Ray."""
    import ray
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    # The dashboard (ray[default]) serves the state API that Ray Train's placement group
    # cleaner polls; without it the cleaner logs a warning every second and never cleans up.
    ray.init(address=os.environ.get("RAY_ADDRESS") or "local",
             log_to_driver=not quiet, configure_logging=not quiet,
             logging_level="ERROR" if quiet else "INFO")


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
