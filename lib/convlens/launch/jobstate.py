"""A Slurm job's state without accounting (sacct needs slurmdbd; scontrol answers while the
controller remembers the job), and its end: the result, or the error its log names."""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

from convlens.base.errors import ERROR_PREFIX, JobFailed

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
            "DEADLINE", "PREEMPTED"}


def slurm_state(job_id: str) -> str:
    """The job's state from slurmctld (no accounting needed); "GONE" once it is purged, and
    "UNREACHABLE" while slurmctld does not answer (a busy controller times out: ask again)."""
    out = subprocess.run(["scontrol", "show", "job", "-o", str(job_id)], capture_output=True, text=True)
    for token in out.stdout.split():
        if token.startswith("JobState="):
            return token.split("=", 1)[1]
    if out.returncode != 0 and "Invalid job id" not in out.stderr:
        return "UNREACHABLE"
    return "GONE"


def wait_for(sjob, timeout: float | None = None, poll_s: float = 2.0) -> int:
    """Follow a job to its end without sacct: never hangs on a job killed before its result."""
    deadline = None if timeout is None else time.time() + timeout
    last = None
    while True:
        state = slurm_state(sjob.job_id)
        if state != last:
            print(f"[convlens] job {sjob.job_id}: {state}", flush=True)
            last = state
        if sjob.paths.result_pickle.exists():
            return finish(sjob)
        if state in TERMINAL or state == "GONE":
            time.sleep(3)  # the result file may still be on its way through shared storage
            if sjob.paths.result_pickle.exists():
                return finish(sjob)
            raise JobFailed(f"slurm job {sjob.job_id} ended {state} without a result\n{log_tail(sjob)}")
        if deadline and time.time() > deadline:
            raise JobFailed(f"slurm job {sjob.job_id} still {state} after {timeout:.0f} s (left running)")
        time.sleep(poll_s)


def finish(sjob) -> int:
    """The job's status: on several nodes, rank 0's (the driver's); the other ranks only host Ray."""
    import submitit
    try:
        return sjob.task(0).result()
    except submitit.core.utils.FailedJobError as err:
        raise JobFailed(f"slurm job {sjob.job_id} failed: {job_error(sjob)}\n{err}\n{log_tail(sjob)}") from None


def job_error(sjob) -> str:
    """The error the job printed (after ERROR_PREFIX); Ray's shutdown messages may follow it."""
    path = Path(sjob.paths.stderr)
    lines = path.read_text(errors="replace").splitlines() if path.is_file() else []
    errors = [line.removeprefix(ERROR_PREFIX) for line in lines if line.startswith(ERROR_PREFIX)]
    return errors[-1] if errors else "see the log below"


def log_tail(sjob, lines: int = 30) -> str:
    path = Path(sjob.paths.stderr)
    if not path.is_file():
        return f"(no stderr at {path})"
    return f"--- last lines of {path}:\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
