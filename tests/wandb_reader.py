"""Read back what an offline W&B run wrote: its `.wandb` transaction log.

The file is a LevelDB-style log: a 7-byte file header (":W&B", magic 0xBEE1 little-endian,
version 0), then 32 KiB blocks of records, each with a 7-byte header
crc32 (IEEE, over type byte + payload) | length (uint16 LE) | type (1 FULL, 2 FIRST,
3 MIDDLE, 4 LAST). A record's payload is a serialized wandb_internal_pb2.Record.
"""
from __future__ import annotations

import json
import re
import struct
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

BLOCK = 32 * 1024
FILE_HEADER = b":W&B" + struct.pack("<HB", 0xBEE1, 0)
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_payloads(path: Path) -> list[bytes]:
    """Every complete record payload in a .wandb file, CRC-checked."""
    data = Path(path).read_bytes()
    if not data.startswith(FILE_HEADER):
        raise ValueError(f"{path}: not a W&B log (header {data[:7]!r})")
    pos, out, parts = len(FILE_HEADER), [], []
    while pos + 7 <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < 7:  # block trailer too small for a header: zero padding
            pos += left_in_block
            continue
        crc, length, kind = struct.unpack_from("<IHB", data, pos)
        if kind == 0 and length == 0:  # zero fill at the end of a block (or an unfinished file)
            pos += left_in_block
            continue
        payload = data[pos + 7:pos + 7 + length]
        if len(payload) < length:
            break  # a run still writing: the last record is partial
        if zlib.crc32(bytes([kind]) + payload) != crc:
            raise ValueError(f"{path}: bad checksum at byte {pos}")
        pos += 7 + length
        if kind == FULL:
            out.append(payload)
        elif kind == FIRST:
            parts = [payload]
        elif kind == MIDDLE:
            parts.append(payload)
        elif kind == LAST:
            out.append(b"".join(parts + [payload]))
            parts = []
    return out


def _items(items) -> dict:
    """History/summary/config items as a dict; nested keys (media fields) become nested dicts."""
    out: dict = {}
    for item in items:
        path = list(item.nested_key) or [item.key]
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = json.loads(item.value_json)
    return out


@dataclass
class RunLog:
    """What one .wandb file holds."""
    run_id: str = ""
    history: list[dict] = field(default_factory=list)  # one dict per history row, with "_step"
    config: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    media: list[dict] = field(default_factory=list)  # {"key", "step", "type", "captions", "paths"}
    artifacts: list[dict] = field(default_factory=list)  # {"name", "type", "aliases", "files", "used", "metadata"}
    metrics: dict = field(default_factory=dict)  # define_metric: name -> {"step_metric", "summary"}
    group: str = ""
    job_type: str = ""
    tags: list[str] = field(default_factory=list)
    tables: list[dict] = field(default_factory=list)  # {"key", "step", "path"} of every logged wandb.Table
    exit_code: int | None = None
    runtime: int | None = None  # the exit record's, seconds
    start_time: float | None = None  # the run record's, epoch seconds
    stats: list[dict] = field(default_factory=list)  # system metrics: {"time": epoch seconds, "metrics": {key: value}}
    output: list[dict] = field(default_factory=list)  # console: {"time", "stream": "stdout"/"stderr", "line"}


def read_run(path: Path) -> RunLog:
    from wandb.proto import wandb_internal_pb2 as pb
    log = RunLog()
    for payload in read_payloads(path):
        rec = pb.Record()
        rec.ParseFromString(payload)
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            log.run_id = rec.run.run_id
            log.start_time = log.start_time or _seconds(rec.run.start_time)
            log.group, log.job_type, log.tags = rec.run.run_group, rec.run.job_type, list(rec.run.tags)
            log.config.update(_config(rec.run.config.update))
        elif kind == "metric":
            m = rec.metric
            summary = [k for k in ("min", "max", "last") if getattr(m.summary, k)]
            log.metrics[m.name or m.glob_name] = {"step_metric": m.step_metric, "summary": summary}
        elif kind == "config":
            log.config.update(_config(rec.config.update))
        elif kind == "history":
            row = _items(rec.history.item)
            log.history.append(row)
            log.media.extend(_media(row))
            log.tables += [{"key": k, "step": row.get("_step"), "path": v["path"]} for k, v in row.items()
                           if isinstance(v, dict) and v.get("_type") == "table-file"]
        elif kind == "summary":
            log.summary.update(_items(rec.summary.update))
        elif kind == "artifact":
            art = rec.artifact
            log.artifacts.append({"name": art.name, "type": art.type, "aliases": list(art.aliases),
                                  "files": [entry.path for entry in art.manifest.contents],
                                  "local": {entry.path: entry.local_path for entry in art.manifest.contents},
                                  "used": art.use_after_commit, "digest": art.digest,
                                  "metadata": json.loads(art.metadata) if art.metadata else {}})
        elif kind == "exit":
            log.exit_code, log.runtime = rec.exit.exit_code, rec.exit.runtime
        elif kind == "stats":
            log.stats.append({"time": _seconds(rec.stats.timestamp),
                              "metrics": {i.key: json.loads(i.value_json) for i in rec.stats.item}})
        elif kind == "output_raw":
            log.output.append({"time": _seconds(rec.output_raw.timestamp), "line": rec.output_raw.line,
                               "stream": "stdout" if rec.output_raw.output_type == rec.output_raw.STDOUT else "stderr"})
    return log


def _seconds(timestamp) -> float:
    return timestamp.seconds + timestamp.nanos / 1e9


def _config(items) -> dict:
    return {k: v.get("value", v) if isinstance(v, dict) else v
            for k, v in _items(items).items() if not k.startswith("_")}


def _media(row: dict) -> list[dict]:
    out = []
    for key, value in row.items():
        if isinstance(value, dict) and str(value.get("_type", "")).startswith(("image", "images")):
            paths = value.get("filenames") or [value.get("path")]
            out.append({"key": key, "step": row.get("_step"), "type": value["_type"],
                        "captions": value.get("captions") or [value.get("caption")],
                        "paths": [p for p in paths if p]})
    return out


def run_files(wandb_dir: Path, run_id: str | None = None) -> list[Path]:
    """The .wandb files under a wandb dir (optionally of one run id), oldest first."""
    pattern = f"run-{run_id}.wandb" if run_id else "run-*.wandb"
    found = {p.resolve() for p in Path(wandb_dir).rglob(pattern)}  # latest-run is a symlink
    return sorted(found, key=_started)


def _started(path: Path) -> str:
    """Run folders are named [offline-]run-YYYYMMDD_HHMMSS-<id>."""
    found = re.search(r"\d{8}_\d{6}", path.parent.name)
    return (found.group(0) if found else "") + path.parent.name


def wait_finished(wandb_dir: Path, run_id: str | None = None, timeout: float = 60.0) -> list[Path]:
    """The run's .wandb files once each holds its exit record (wandb-core may still be flushing)."""
    deadline = time.monotonic() + timeout
    while True:
        files = run_files(wandb_dir, run_id)
        if files and all(read_run(p).exit_code is not None for p in files):
            return files
        if time.monotonic() > deadline:
            raise TimeoutError(f"{wandb_dir}: runs not finished after {timeout:.0f}s: {files}")
        time.sleep(0.5)


def read_runs(wandb_dir: Path, run_id: str | None = None) -> RunLog:
    """All offline segments of one run (worker starts, resumes, the driver's summary) merged in order."""
    merged = RunLog()
    for path in run_files(wandb_dir, run_id):
        part = read_run(path)
        merged.run_id = merged.run_id or part.run_id
        merged.history += part.history
        merged.config.update(part.config)
        merged.summary.update(part.summary)
        merged.media += part.media
        merged.artifacts += part.artifacts
        merged.metrics.update(part.metrics)
        merged.tables += part.tables
        merged.group, merged.job_type, merged.tags = part.group, part.job_type, part.tags
        merged.exit_code = part.exit_code if part.exit_code is not None else merged.exit_code
    return merged


def read_tables(log: RunLog, key: str) -> list[dict]:
    """Every logged wandb.Table under `key`, in order, as W&B will show it ({"columns", "data"},
    an image cell {"_type": "image-file", ...}): from the run_table artifact wandb stages for it
    (the copy under files/ names media cells only by their class)."""
    out = []
    for art in log.artifacts:
        path = f"{key}.table.json"
        if art["type"] == "run_table" and path in art["local"]:
            out.append(json.loads(Path(art["local"][path]).read_text()))
    return out


def covered(times: list[float], interval: float, start: float, end: float) -> float:
    """Seconds of [start, end] within `interval` before some sample: what the samples cover."""
    spans, total, reach = sorted((max(start, t - interval), min(end, t)) for t in times), 0.0, start
    for lo, hi in spans:
        total += max(0.0, hi - max(lo, reach))
        reach = max(reach, hi)
    return total


def check_whole_job(log: RunLog, wall: float, interval: float, coverage: float = 0.8) -> str:
    """Assert that a run shows its whole job in W&B's Overview, System and Logs tabs: the
    runtime is the job's wall time (within 10%; it is whole seconds), the same in the summary
    and the exit record, from its start time; the system metrics, in time order, cover
    `coverage` of it but one interval (stats every `interval` s; none while the run closes);
    and it holds console output. Prints what it found; returns the console text."""
    import pytest
    runtime = log.summary["_runtime"]
    assert runtime == pytest.approx(wall, rel=0.1, abs=0.5), (runtime, wall)
    assert log.summary["_wandb"]["runtime"] == runtime and log.runtime == runtime
    times = [s["time"] for s in log.stats]
    # a job of a few seconds (a probe on a fast machine takes under one) has a sample or none
    assert times == sorted(times) and len(times) >= min(2, int(runtime // (2 * interval))), (runtime, times)
    end = log.start_time + runtime
    assert covered(times, interval, log.start_time, end) >= coverage * runtime - interval, (times, log.start_time, end)
    text = "".join(o["line"] for o in log.output)
    span = times[-1] - times[0] if times else 0.0
    print(f"\n{log.job_type} run {log.run_id}: runtime {runtime} s, wall {wall:.1f} s; {len(times)} "
          f"system-metric records over {span:.1f} s; {len(text.splitlines())} output lines")
    assert text.strip(), "no console output"
    return text
