"""The errors a user can cause and fix; the CLI prints them as one clear message."""
from convlens.checkpoint import CheckpointError
from convlens.config import ConfigError
from convlens.data import DataError


def _run_stopped():
    from convlens.training.run import RunStopped
    return RunStopped


def _training_failed():
    from ray.train import TrainingFailedError
    return TrainingFailedError


def _job_failed():
    from convlens.launch.slurm import JobFailed
    return JobFailed


USER_ERRORS = (ConfigError, DataError, CheckpointError, FileNotFoundError, _run_stopped(), _training_failed(),
               _job_failed())
