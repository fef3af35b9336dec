"""Checkpoints: atomic, verified, strict, and never unpickled beyond weights."""
import os
import pickle
import resource
import signal
import subprocess
import sys
import time

import pytest
import torch

from convlens.storage.checkpoint import (CheckpointError, checkpoint_epoch, latest_verified, load_checkpoint,
                                 load_model_weights, save_checkpoint, verify)
from convlens.models.resnet import ResNet


def saved(tmp_path, model=None):
    model = model or ResNet([1, 1], 8, in_chans=1, num_classes=10)
    folder = save_checkpoint({"model": model.state_dict(), "arch": model.arch, "epoch": 1}, tmp_path / "ck", {"epoch": 1})
    return model, folder


@pytest.mark.parametrize("damage", ["truncate", "zero", "bitflip", "no_manifest"])
def test_damaged_checkpoint_is_refused_naming_the_path(tmp_path, damage):
    _, folder = saved(tmp_path)
    state = folder / "state.pt"
    data = state.read_bytes()
    if damage == "truncate":
        state.write_bytes(data[: len(data) // 2])
    elif damage == "zero":
        state.write_bytes(b"")
    elif damage == "bitflip":
        state.write_bytes(data[:100] + bytes([data[100] ^ 1]) + data[101:])
    else:
        (folder / "manifest.json").unlink()
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(folder)
    assert str(folder) in str(err.value)


def test_foreign_architecture_is_refused_naming_both(tmp_path):
    _, folder = saved(tmp_path)
    other = ResNet([1, 1], 8, in_chans=1, num_classes=4)
    with pytest.raises(CheckpointError) as err:
        load_model_weights(other, folder)
    assert "'num_classes': 10" in str(err.value) and "'num_classes': 4" in str(err.value)


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))
    folder = tmp_path / "evil"
    save_checkpoint({"x": torch.zeros(1)}, folder)
    (folder / "state.pt").write_bytes(pickle.dumps({"model": Payload()}))
    import hashlib, json  # re-sign the manifest so only the loader itself stands in the way
    m = json.loads((folder / "manifest.json").read_text())
    m["files"]["state.pt"] = hashlib.sha256((folder / "state.pt").read_bytes()).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(CheckpointError, match="weights-only"):
        load_checkpoint(folder)
    assert not marker.exists()


def test_disk_full_leaves_previous_checkpoint_intact(tmp_path):
    _, folder = saved(tmp_path)
    before = (folder / "state.pt").read_bytes()
    target = tmp_path / "ck2"
    script = f"""
import resource, signal, torch
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
from convlens.models.resnet import ResNet
from convlens.storage.checkpoint import save_checkpoint
m = ResNet([2, 2], 32, in_chans=1, num_classes=10)
save_checkpoint({{"model": m.state_dict(), "arch": m.arch}}, {str(target)!r})
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode != 0 and "File too large" in proc.stderr
    assert not target.exists() and not list(tmp_path.glob(".*tmp-*"))
    assert (folder / "state.pt").read_bytes() == before
    verify(folder)


SAVE_FOREVER = """
import sys, torch
from convlens.models.resnet import ResNet
from convlens.storage.checkpoint import save_checkpoint
root, model = sys.argv[1], ResNet([2, 2], 64, in_chans=1, num_classes=10)
for epoch in range(1, 1000):
    for t in model.state_dict().values():
        if t.is_floating_point():
            t.fill_(epoch)
    save_checkpoint({"model": model.state_dict(), "epoch": epoch}, f"{root}/checkpoint_epoch{epoch:04d}",
                    {"epoch": epoch})
    print(epoch, flush=True)
"""


def test_kill_during_save_leaves_old_or_new_complete_checkpoint(tmp_path):
    """SIGKILL a process that saves checkpoint after checkpoint (several MB each), at random
    moments: every folder under a checkpoint name verifies and holds its own epoch's weights,
    and the newest is never older than the last save that returned."""
    import random
    rng, mid_save = random.Random(0), 0
    for trial in range(6):
        root = tmp_path / f"run{trial}"
        root.mkdir()
        proc = subprocess.Popen([sys.executable, "-c", SAVE_FOREVER, str(root)], stdout=subprocess.PIPE, text=True)
        for _ in range(rng.randint(1, 3)):
            proc.stdout.readline()
        time.sleep(rng.uniform(0, 0.05))
        proc.kill()
        last_done = max([0, *map(int, proc.communicate()[0].split() or [0])])
        for folder in root.glob("checkpoint_epoch*"):
            state = load_checkpoint(folder)
            epoch = checkpoint_epoch(folder)
            assert state["epoch"] == epoch and all(t.eq(epoch).all() for t in state["model"].values()
                                                   if t.is_floating_point())
        newest = latest_verified(root)
        assert newest is not None and checkpoint_epoch(newest) >= last_done
        mid_save += bool(list(root.glob(".*.tmp-*")))
    assert mid_save >= 1, "no kill landed inside a save: the test showed nothing"
