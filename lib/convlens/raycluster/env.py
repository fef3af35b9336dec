"""The environment of every Ray process a job starts: settings read when ray is imported, the
variables forwarded to workers, tasks and trials, and how much of Ray's logging is shown.

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

VERBOSE = "CONVLENS_VERBOSE"
# Settings from the user's shell that every Ray worker, Tune trial and analysis task must see;
# the API key stays in the cluster's own environment so Ray never stores it.
FORWARDED_ENV = ("WANDB_MODE", "WANDB_BASE_URL", "WANDB_PROJECT", "WANDB_ENTITY", "WANDB_DIR",
                 "CONVLENS_FAULTS", "CONVLENS_DATA", "CONVLENS_DATA_MIRROR", VERBOSE, "TORCH_CPP_LOG_LEVEL")


def forwarded_env() -> dict[str, str]:
    return {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}


def job_runtime_env(env_vars: dict[str, str] | None = None) -> dict:
    """ray.init's runtime_env for a convlens job: each of its worker processes (Train workers and
    controllers, trials, tasks) collects garbage less often, as the driver does (base/startup.py)."""
    from convlens.base.startup import RAY_SETUP_HOOK
    return {"worker_process_setup_hook": RAY_SETUP_HOOK, **({"env_vars": env_vars} if env_vars else {})}


def verbose() -> bool:
    return os.environ.get(VERBOSE) == "1"


def log_level() -> str:
    """Ray's log level in the driver and in every task and actor of the job: Ray Train's per-rank
    "Reporting training result" lines are INFO, its transient scheduling complaints WARNING."""
    return "INFO" if verbose() else "ERROR"


def prepare_environment() -> None:
    """Ray settings read when ray is imported, and the garbage collector set for torch and Ray
    (base/startup.py): call before the process imports ray (the CLI, a Slurm job and the
    benchmarks do; ensure_ray does too)."""
    from convlens.base.startup import collect_less
    collect_less()
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    if not verbose():
        os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")  # Ray Train passes it on
        # Tune's legacy output engine prints nothing at RunConfig(verbose=0); the new one still
        # prints a box of the experiment's configuration and one per failed trial
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        # a streamed run's Ray Data (its split coordinator and tasks too): no per-execution lines
        os.environ.setdefault("RAY_DATA_LOG_LEVEL", "ERROR")
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
