"""`convlens sync PATH`: upload the offline W&B runs under PATH so each becomes one complete run.

`wandb sync` does not merge offline segments of one run id: a later segment replaces the earlier
history (wandb issue 3841). A convlens training run writes one segment per start (worker
attempts, retries, requeues) and its driver's closing segment, each re-logging the whole
checkpointed history, so the newest finished segment of an id holds everything: only that one
is uploaded, oldest first (a training run before the analysis that uses its checkpoints).
"""
from __future__ import annotations

import re
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

HEADER = b":W&B" + struct.pack("<HB", 0xBEE1, 0)  # the .wandb log: 7-byte header, 32 KiB blocks
BLOCK = 32 * 1024


@dataclass
class Segment:
    folder: Path  # [offline-]run-<time>-<id>/
    run_id: str
    finished: bool  # holds its exit record
    mtime: float

    @property
    def order(self) -> tuple[str, float]:
        """Start time (the folder's YYYYMMDD_HHMMSS), then last write."""
        found = re.search(r"\d{8}_\d{6}", self.folder.name)
        return (found.group(0) if found else "", self.mtime)


def record_types(path: Path) -> set[str]:
    """The record types in a .wandb file (LevelDB log framing: crc32, length, type per chunk)."""
    from wandb.proto import wandb_internal_pb2 as pb
    data = Path(path).read_bytes()
    if not data.startswith(HEADER):
        return set()
    pos, parts, kinds = len(HEADER), [], set()
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        crc, length, kind = struct.unpack_from("<IHB", data, pos)
        if left < 7 or (kind == 0 and length == 0):  # block padding
            pos += left
            continue
        payload = data[pos + 7:pos + 7 + length]
        if len(payload) < length or zlib.crc32(bytes([kind]) + payload) != crc:
            break  # a segment cut off mid-write
        pos += 7 + length
        parts = [payload] if kind in (1, 2) else parts + [payload]
        if kind in (1, 4):  # FULL or LAST: a whole record
            rec = pb.Record()
            rec.ParseFromString(b"".join(parts))
            kinds.add(rec.WhichOneof("record_type"))
    return kinds


def segments(root: Path) -> list[Segment]:
    out = []
    for path in Path(root).rglob("run-*.wandb"):
        if path.parent.is_symlink() or path.parent.name.startswith("latest"):
            continue
        out.append(Segment(path.parent, path.stem.removeprefix("run-"), "exit" in record_types(path),
                           path.stat().st_mtime))
    return out


def plan(root: Path) -> tuple[list[Segment], list[Segment]]:
    """(to upload, oldest first; superseded): per run id the newest finished segment (the newest
    one at all while none has finished: a run still going)."""
    by_id: dict[str, list[Segment]] = {}
    for seg in segments(root):
        by_id.setdefault(seg.run_id, []).append(seg)
    chosen = []
    for segs in by_id.values():
        segs.sort(key=lambda s: s.order)
        finished = [s for s in segs if s.finished]
        chosen.append((finished or segs)[-1])
    skipped = [s for segs in by_id.values() for s in segs if s not in chosen]
    return sorted(chosen, key=lambda s: s.order), skipped


def sync(root: Path, dry_run: bool = False) -> list[Segment]:
    """Upload the planned segments with `wandb sync` (needs `wandb login` or WANDB_API_KEY)."""
    chosen, skipped = plan(root)
    for seg in skipped:
        print(f"[convlens] skip {seg.folder}: superseded by a newer complete segment of run {seg.run_id}")
    for seg in chosen:
        print(f"[convlens] {'would sync' if dry_run else 'sync'} {seg.folder}"
              f"{'' if seg.finished else ' (unfinished)'}", flush=True)
        if not dry_run:
            subprocess.run([sys.executable, "-m", "wandb", "sync", str(seg.folder)], check=True)
    if not chosen:
        print(f"[convlens] no offline W&B runs under {root}")
    return chosen
