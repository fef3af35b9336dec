"""The errors convlens reports to a user: one family, each with the exit code the CLI uses.

Exit codes: 2 for a bad spec, override, path or dataset (fix the input and rerun); 1 for a job
that ran and failed (a NaN stop, retries exhausted, a refused checkpoint, a failed Slurm job, a
dataset download that failed).
This module imports nothing, so every layer can raise these.
"""

# How the CLI and a Slurm job print a ConvlensError; the Slurm driver finds the job's error by it.
ERROR_PREFIX = "convlens: error: "


class ConvlensError(Exception):
    """Base of every error convlens explains in one message."""
    exit_code = 1


class ConfigError(ConvlensError, ValueError):
    """A spec or override is invalid; the message names the field and the value."""
    exit_code = 2


class DataError(ConvlensError, ValueError):
    """The dataset on disk is missing, malformed or unusable; the message names the path."""
    exit_code = 2


class DownloadError(ConvlensError, RuntimeError):
    """A dataset could not be fetched (no network, a refused download); the message names the
    files, where they come from and the folder they belong in."""


class CheckpointError(ConvlensError, ValueError):
    """A checkpoint is incomplete, corrupt, foreign or of another architecture."""


class RunStopped(ConvlensError, RuntimeError):
    """A run ended early for a reason retrying cannot fix (NaN loss, bad checkpoint)."""


class JobFailed(ConvlensError, RuntimeError):
    """A job ran and failed: its retries ran out, or its Slurm job ended without a result."""
