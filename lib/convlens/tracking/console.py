"""Rank 0's console for the Logs tab, kept where a SIGKILL cannot lose it.

wandb's own capture hands each write to its service, which writes the segment every flush
interval: a worker killed by a fault, the OOM killer or Slurm loses what it printed in its last
second or so, and a short attempt all of it. So rank 0 also appends every stdout and stderr
write, as it happens, to <wandb dir>/console/<run id>-<start ns>-<pid>.jsonl, one JSON object
per write (time, stream, text), and the closing write builds the Logs tab from these files.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

FOLDER = "console"


class ConsoleFile:
    """Appends this process's stdout and stderr writes to its console file until close()."""

    def __init__(self, wandb_dir: Path, run_id: str):
        from wandb.sdk.lib import console_capture
        folder = Path(wandb_dir) / FOLDER
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{run_id}-{time.time_ns()}-{os.getpid()}.jsonl"
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.undo = [console_capture.capture_stdout(lambda data, _: self.write("stdout", data)),
                     console_capture.capture_stderr(lambda data, _: self.write("stderr", data))]

    def write(self, stream: str, data: str | bytes) -> None:
        text = data.decode(errors="replace") if isinstance(data, bytes) else data
        if text and self.fd is not None:
            entry = json.dumps({"time": time.time(), "stream": stream, "text": text})
            os.write(self.fd, (entry + "\n").encode())  # one unbuffered write: in the file once it returns

    def close(self) -> None:
        for undo in self.undo:
            undo()
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def read_console(wandb_dir: Path, run_id: str) -> list[dict]:
    """Every write in the run's console files, in time order; a line cut off by a kill is skipped."""
    entries = []
    for path in sorted((Path(wandb_dir) / FOLDER).glob(f"{run_id}-*.jsonl")):
        for line in path.read_text(errors="replace").splitlines():
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return sorted(entries, key=lambda e: e["time"])


def output_records(wandb_dir: Path, run_id: str) -> list:
    """The run's console as wandb output_raw records, in time order."""
    from wandb.proto import wandb_internal_pb2 as pb
    kinds = {"stdout": pb.OutputRawRecord.OutputType.STDOUT, "stderr": pb.OutputRawRecord.OutputType.STDERR}
    records = []
    for entry in read_console(wandb_dir, run_id):
        out = pb.OutputRawRecord(output_type=kinds[entry["stream"]], line=entry["text"])
        out.timestamp.FromMicroseconds(int(entry["time"] * 1e6))
        records.append(pb.Record(output_raw=out))
    return records
