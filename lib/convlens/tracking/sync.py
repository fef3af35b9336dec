"""`convlens sync PATH`: upload the offline W&B runs under PATH so each becomes one complete run.

`wandb sync` does not merge offline segments of one run id: a later segment replaces the earlier
history (wandb issue 3841). A convlens training run writes one segment per start (worker
attempts, retries, requeues) and its driver's closing segment, each re-logging the whole
checkpointed history, and the closing one takes in every earlier segment's system metrics and
console output and the job's runtime (convlens.tracking.segments), so the newest finished
segment of an id holds everything: only that one is uploaded, oldest first (a training run
before the analysis that uses its checkpoints).
"""
from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from convlens.tracking.segments import marks, read_records, stamp


@dataclass
class Segment:
    folder: Path  # [offline-]run-<time>-<id>/
    run_id: str
    finished: bool  # holds its exit record
    mtime: float
    complete: bool = False  # a closing segment that took in the others (convlens.tracking.segments)

    @property
    def order(self) -> tuple[str, float]:
        """Start time (the folder's YYYYMMDD_HHMMSS), then last write."""
        found = re.search(r"\d{8}_\d{6}", self.folder.name)
        return (found.group(0) if found else "", self.mtime)


def record_types(path: Path) -> set[str]:
    """The record types in a .wandb file (up to a record cut off mid-write)."""
    return {rec.WhichOneof("record_type") for rec in read_records(path)}


def segments(root: Path) -> list[Segment]:
    out = []
    for path in Path(root).rglob("run-*.wandb"):
        if path.parent.is_symlink() or path.parent.name.startswith("latest"):
            continue
        out.append(Segment(path.parent, path.stem.removeprefix("run-"), "exit" in record_types(path),
                           path.stat().st_mtime, bool(marks(path.parent).get("complete"))))
    return out


def contents(path: Path) -> str:
    """What W&B's Overview, System and Logs tabs will show of a segment, in one line."""
    job_type = name = ""
    runtime, stats, text = None, [], []
    for rec in read_records(path):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            job_type, name = rec.run.job_type, rec.run.display_name
        elif kind == "stats":
            stats.append(stamp(rec))
        elif kind == "output_raw":
            text.append(rec.output_raw.line)
        elif kind == "exit":
            runtime = rec.exit.runtime
    span = f" over {max(stats) - min(stats):.0f} s" if stats else ""
    return (f"{job_type or 'run'} {name}: runtime {'unfinished' if runtime is None else f'{runtime} s'}, "
            f"{plural(len(stats), 'system-metric record')}{span}, "
            f"{plural(len(''.join(text).splitlines()), 'console line')}")


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def plan(root: Path) -> tuple[list[Segment], list[Segment]]:
    """(to upload, oldest first; superseded): per run id the newest complete segment, else the
    newest finished one (the newest one at all while none has finished: a run still going)."""
    by_id: dict[str, list[Segment]] = {}
    for seg in segments(root):
        by_id.setdefault(seg.run_id, []).append(seg)
    chosen = []
    for segs in by_id.values():
        segs.sort(key=lambda s: s.order)
        complete = [s for s in segs if s.complete]
        finished = [s for s in segs if s.finished]
        chosen.append((complete or finished or segs)[-1])
    skipped = [s for segs in by_id.values() for s in segs if s not in chosen]
    return sorted(chosen, key=lambda s: s.order), skipped


def sync(root: Path, dry_run: bool = False) -> list[Segment]:
    """Upload the planned segments with `wandb sync` (needs `wandb login` or WANDB_API_KEY)."""
    chosen, skipped = plan(root)
    for seg in skipped:
        print(f"[convlens] skip {seg.folder}: superseded by the complete segment of run {seg.run_id}")
    for seg in chosen:
        print(f"[convlens] {'would sync' if dry_run else 'sync'} {seg.folder}"
              f"{'' if seg.finished else ' (unfinished)'}\n[convlens]   {contents(seg.folder / f'run-{seg.run_id}.wandb')}",
              flush=True)
        if not dry_run:
            subprocess.run([sys.executable, "-m", "wandb", "sync", str(seg.folder)], check=True)
    if not chosen:
        print(f"[convlens] no offline W&B runs under {root}")
    return chosen
