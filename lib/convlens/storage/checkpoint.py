"""Checkpoints written atomically and verified on load.

A checkpoint is a folder with `state.pt` (torch.save of tensors and plain values,
loadable with weights_only=True) and `manifest.json` (sha256 of every file, epoch,
architecture), the manifest written last. A folder whose manifest is missing or
whose hashes do not match is refused with an error naming the path.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from pathlib import Path

from convlens.base.errors import CheckpointError
from convlens.storage.files import fsync_dir, write_atomic
from convlens.storage.rundir import RunDir

FORMAT = "convlens-checkpoint/1"
STATE = "state.pt"
MANIFEST = "manifest.json"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save_checkpoint(state: dict, folder: Path, meta: dict | None = None) -> Path:
    """Write a new checkpoint folder: state.pt, then the manifest (with `meta`), each fsynced,
    in a hidden temp folder beside it that is then renamed to `folder` in one step. A folder
    is written once, so a kill or a full disk mid-save leaves nothing under the final name
    and every older checkpoint as it was."""
    import torch
    folder = Path(folder)
    if folder.exists():
        raise FileExistsError(f"{folder}: exists; a checkpoint folder is written once")
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        buf = io.BytesIO()
        torch.save(state, buf)
        data = buf.getvalue()
        write_atomic(tmp / STATE, data)
        manifest = {"format": FORMAT, "files": {STATE: sha256(data)}, **(meta or {})}
        write_atomic(tmp / MANIFEST, json.dumps(manifest, indent=1).encode())
        os.rename(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(folder.parent)
    return folder


def remove_unfinished_saves(folder: Path) -> None:
    """Delete the temp folders that killed saves left in `folder`."""
    for tmp in Path(folder).glob(".*.tmp-*"):
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)


def read_manifest(folder: Path) -> dict:
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise CheckpointError(f"{folder}: no {MANIFEST}; incomplete or not a convlens checkpoint")
    try:
        manifest = json.loads(path.read_text())
    except (ValueError, OSError) as err:
        raise CheckpointError(f"{path}: unreadable manifest ({err})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a {FORMAT} manifest")
    return manifest


def verify(folder: Path) -> dict:
    """Check every file against the manifest's sha256; return the manifest."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    for name, digest in manifest["files"].items():
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"{path}: listed in the manifest but missing")
        if path.stat().st_size == 0:
            raise CheckpointError(f"{path}: empty file (zero bytes)")
        if sha256(path.read_bytes()) != digest:
            raise CheckpointError(f"{path}: sha256 does not match the manifest (truncated or corrupted)")
    return manifest


def load_checkpoint(folder: Path, expect_arch: dict | None = None, map_location="cpu") -> dict:
    """Verified, weights-only load; refuses another architecture naming both."""
    import torch
    folder = Path(folder)
    verify(folder)
    path = folder / STATE
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise CheckpointError(f"{path}: refused by the weights-only loader ({type(err).__name__}: "
                              f"{str(err).splitlines()[0][:200]})") from None
    if expect_arch is not None and state.get("arch") != expect_arch:
        raise CheckpointError(f"{folder}: checkpoint architecture {state.get('arch')} "
                              f"does not match the model {expect_arch}")
    return state


def load_model_weights(model, folder: Path) -> dict:
    """Load a checkpoint's weights into `model` strictly; returns the whole state."""
    state = load_checkpoint(folder, expect_arch=getattr(model, "arch", None))
    model.load_state_dict(state["model"], strict=True)
    return state


def checkpoint_epoch(folder: Path) -> int:
    return RunDir.epoch_of(folder)


def first_verified(folders) -> Path | None:
    """The first folder whose files match its manifest; damaged ones are skipped."""
    for folder in folders:
        try:
            verify(folder)
            return folder
        except CheckpointError:
            continue
    return None


def latest_verified(run_dir: Path, below: int | None = None) -> Path | None:
    """The newest checkpoint of a run that verifies (optionally with epoch < below)."""
    folders = reversed(RunDir(run_dir).checkpoints())
    return first_verified(f for f in folders if below is None or checkpoint_epoch(f) < below)


def best_checkpoint(run_dir: Path) -> Path | None:
    """The run's best checkpoint by validation error (newest verified best_epoch* folder)."""
    return first_verified(reversed(RunDir(run_dir).bests()))


def registered_checkpoints(run_dir: Path) -> list[Path]:
    return RunDir(run_dir).registered()
