"""Where a started run continues from: Ray Train's latest checkpoint, verified, or the policy
for a damaged one; and the record of every start in attempts.jsonl."""
from __future__ import annotations

from pathlib import Path

from convlens.base.errors import CheckpointError, RunStopped
from convlens.storage import checkpoint as ckpt
from convlens.storage.rundir import RunDir


def restore(latest: Path | None, arch: dict, on_corrupt: str) -> tuple[dict | None, Path | None]:
    """The state to resume from and its folder, given Ray's latest checkpoint folder (or None);
    (None, None) starts from scratch. A damaged latest checkpoint falls back to the newest
    older one that verifies (on_corrupt "fallback") or stops the run ("stop"); a checkpoint of
    another architecture always stops it."""
    if latest is None:
        return None, None
    try:
        return ckpt.load_checkpoint(latest, expect_arch=arch), latest
    except CheckpointError as err:
        if "architecture" in str(err) or on_corrupt == "stop":
            raise RunStopped(f"cannot resume: {err}") from None
        older = ckpt.latest_verified(latest.parent, below=ckpt.checkpoint_epoch(latest))
        print(f"[convlens] warning: {err}; resuming from {older or 'scratch'} instead", flush=True)
        return (ckpt.load_checkpoint(older, expect_arch=arch), older) if older else (None, None)


def record_attempt(run: RunDir, start_epoch: int, source: Path | None, hardware: dict, verbose: bool) -> None:
    """attempts.jsonl: a line per start of the run (first, retry, rerun, requeue) with the epoch
    it starts at, the checkpoint it resumed from and what it ran on."""
    entry = run.record_attempt({"start_epoch": start_epoch, "resumed_from": source.name if source else None,
                                **hardware})
    if verbose and start_epoch > 1:
        print(f"[convlens] {run.name}: attempt {entry['attempt']} resumes at epoch {start_epoch} "
              f"from {source.name if source else 'scratch'}", flush=True)
