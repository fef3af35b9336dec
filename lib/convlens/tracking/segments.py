"""The offline segments of one W&B run id, and the one `convlens sync` uploads.

Every process that opens a run offline writes a segment of its own (`[offline-]run-<time>-<id>/
run-<id>.wandb`): each worker attempt (retries, reruns, Slurm requeues) and the driver's closing
write. Offline, wandb ignores `resume`, so each segment restarts its step and runtime at 0.
wandb >= 0.28.1 does upload every segment of an id into one run, in start order, but the server
then takes the last segment's summary (`_runtime` of the closing write: under a second), and the
segments' history steps and console line numbers start at 0 again and overwrite each other.

So the closing segment is made complete instead. A training run's driver opens its segment
as the job starts (offline), so wandb's system monitor samples the whole job, including the
time Ray spends starting and restarting workers; rank 0 keeps its console in files of its own
(convlens.tracking.console). Once the closing write has finished, `carry_into_closing` copies
into the closing segment the system metrics (`stats`) of every earlier driver segment (a driver
cut off by a Slurm requeue) and rank 0's console of every attempt (as `output_raw`), in time
order, and sets its start time and runtime to the job's (first start to now). `convlens sync` uploads that one segment.
Where no driver segment exists (a run closed by someone else, e.g. an ASHA-stopped trial),
the stats of every segment are carried. An analysis, probe or sweep run's closing segment is
the job's own, open since the job started (convlens.tracking.jobs), with the job's console in
console files too: a resumed sweep's takes in the killed driver's segment and console.

The file is a LevelDB-style log: a 7-byte header, then 32 KiB blocks of chunks, each
crc32 (over type byte + payload) | length (uint16) | type (1 full, 2 first, 3 middle, 4 last).
"""
from __future__ import annotations

import json
import os
import struct
import time
import zlib
from pathlib import Path

from convlens.tracking.console import output_records

HEADER = b":W&B" + struct.pack("<HB", 0xBEE1, 0)
BLOCK = 32 * 1024
CHUNK = 7  # chunk header bytes
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4
MARKER = "convlens.json"  # beside run-<id>.wandb: {"driver": true}, {"complete": true} once merged


def read_payloads(path: Path) -> list[bytes]:
    """Every whole record in a .wandb file; stops at a record cut off mid-write (a killed run)."""
    data = Path(path).read_bytes()
    if not data.startswith(HEADER):
        return []
    pos, out, parts = len(HEADER), [], []
    while pos + CHUNK <= len(data):
        left = BLOCK - pos % BLOCK
        crc, length, kind = struct.unpack_from("<IHB", data, pos)
        if left < CHUNK or (kind == 0 and length == 0):  # block padding
            pos += left
            continue
        payload = data[pos + CHUNK:pos + CHUNK + length]
        if len(payload) < length or zlib.crc32(bytes([kind]) + payload) != crc:
            break
        pos += CHUNK + length
        parts = [payload] if kind in (FULL, FIRST) else parts + [payload]
        if kind in (FULL, LAST):
            out.append(b"".join(parts))
    return out


def read_records(path: Path) -> list:
    from wandb.proto import wandb_internal_pb2 as pb
    records = []
    for payload in read_payloads(path):
        rec = pb.Record()
        rec.ParseFromString(payload)
        records.append(rec)
    return records


def encode(payloads: list[bytes]) -> bytes:
    """The log framing of read_payloads, inverted: chunks never cross a block boundary."""
    out = bytearray(HEADER)
    for payload in payloads:
        first = True
        while True:
            left = BLOCK - len(out) % BLOCK
            if left < CHUNK:
                out += bytes(left)
                left = BLOCK
            piece, payload = payload[:left - CHUNK], payload[left - CHUNK:]
            kind = (FULL if not payload else FIRST) if first else (LAST if not payload else MIDDLE)
            out += struct.pack("<IHB", zlib.crc32(bytes([kind]) + piece), len(piece), kind) + piece
            first = False
            if not payload:
                break
    return bytes(out)


def marks(folder: Path) -> dict:
    path = Path(folder) / MARKER
    return json.loads(path.read_text()) if path.is_file() else {}


def mark(folder: Path, **flags) -> None:
    (Path(folder) / MARKER).write_text(json.dumps({**marks(folder), **flags}))


def mark_driver(wandb_file: Path) -> None:
    mark(Path(wandb_file).parent, driver=True)


def segment_files(wandb_dir: Path, run_id: str) -> list[Path]:
    """Every run-<id>.wandb under wandb_dir (the latest-run symlink left out)."""
    return sorted({p.resolve() for p in Path(wandb_dir).rglob(f"run-{run_id}.wandb")
                   if not p.parent.name.startswith("latest")})


def wait_exit(path: Path, timeout: float = 60.0) -> list:
    """The records of a segment once its exit record is written (wandb-core may still flush)."""
    deadline = time.monotonic() + timeout
    while True:
        records = read_records(path)
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def stamp(rec) -> float:
    ts = getattr(rec, rec.WhichOneof("record_type")).timestamp
    return ts.seconds + ts.nanos / 1e9


def carry_into_closing(closing: Path, run_id: str, started: float | None = None) -> dict:
    """Make the closing segment (its run-<id>.wandb) hold every earlier segment's system
    metrics and console output, in time order, with the run's start time the earliest of
    `started` (the job's first start, epoch seconds) and every segment's, and its runtime from
    there to now (to the last carried record when the closing segment is not the driver's:
    a run that someone else closes after it stopped). Rewrites the file in place, and
    files/output.log from the whole output. Returns {"runtime", "stats", "output"}: what the
    segment now holds."""
    closing = Path(closing).resolve()
    own = wait_exit(closing)
    paths = segment_files(closing.parent.parent, run_id)
    drivers = {p for p in paths if marks(p.parent).get("driver")}
    have = {r.SerializeToString() for r in own if r.WhichOneof("record_type") in ("stats", "output_raw")}
    carried, starts = {}, [started] if started else []
    for path in paths:
        for rec in own if path == closing else read_records(path):
            kind = rec.WhichOneof("record_type")
            if kind == "run" and rec.run.start_time.seconds:
                starts.append(rec.run.start_time.ToMicroseconds() / 1e6)
            elif path != closing and kind == "stats" and (not drivers or path in drivers):
                carried.setdefault(rec.SerializeToString(), rec)
    for rec in output_records(closing.parent.parent, run_id):
        carried.setdefault(rec.SerializeToString(), rec)
    first = min(starts) if starts else time.time()
    # a closing segment opened by someone else (an ASHA-stopped trial, closed by the sweep at its
    # end): the run ended when its own processes went quiet, with the last record they wrote
    late = drivers and closing not in drivers and carried
    end = max(map(stamp, carried.values())) if late else time.time()
    carried = {k: r for k, r in carried.items() if k not in have}  # a segment merged before holds copies
    runtime = max(0, round(end - first))
    out, placed = [], False
    for rec in own:
        kind = rec.WhichOneof("record_type")
        if kind == "run" and not placed:
            rec.run.start_time.FromMicroseconds(int(first * 1e6))
            out.append(rec)
            out += sorted(carried.values(), key=stamp)  # before its own: every earlier segment started first
            placed = True
            continue
        if kind == "summary":
            for item in rec.summary.update:
                if [*item.nested_key] in (["_runtime"], ["_wandb", "runtime"]) or item.key == "_runtime":
                    item.value_json = str(runtime)
        elif kind == "exit":
            rec.exit.runtime = runtime
        elif kind == "stats" and stamp(rec) > end + 1:  # a late closing write's own sample
            continue
        out.append(rec)
    tmp = closing.with_suffix(".wandb.tmp")
    tmp.write_bytes(encode([r.SerializeToString() for r in out]))
    os.replace(tmp, closing)
    lines = "".join(r.output_raw.line for r in out if r.WhichOneof("record_type") == "output_raw")
    (closing.parent / "files").mkdir(exist_ok=True)
    (closing.parent / "files" / "output.log").write_text(lines)
    mark(closing.parent, complete=True)
    kinds = [r.WhichOneof("record_type") for r in out]
    return {"runtime": runtime, "stats": kinds.count("stats"), "output": kinds.count("output_raw")}
