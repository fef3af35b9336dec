"""Faults injected for real on a local Ray cluster: nothing lost, clear errors."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from convlens.base.errors import RunStopped
from convlens.specs.load import load_job
from convlens.storage import checkpoint as ckpt
from convlens.training.run import train
from conftest import (DDP, ONE_WORKER, assert_nothing_lost, committed_epochs, inject, read_attempts, read_metrics,
                      steps_per_epoch, tiny_spec)


def epochs_of(run_dir):
    return [m["epoch"] for m in read_metrics(run_dir)]


def test_retries_exhausted_then_a_corrupt_latest_checkpoint_falls_back_or_stops(ray_cluster, tiny_job, uninterrupted,
                                                                             tmp_path, cache_dir, capsys, monkeypatch):
    """`convlens train` whose worker dies in epoch 3 at every attempt (run.max_failures 1): the job ran
    and failed, exit 1 with one line saying why; max_failures + 1 attempts, the second from the last
    committed epoch; what it committed still loads. (A NaN stop's line: tests/test_train.py's
    test_nan_on_one_rank_stops_every_rank_the_command_and_its_wandb_run.)
    Then its latest checkpoint (epoch 2) is damaged: run.on_corrupt_checkpoint stop refuses it
    before an attempt starts; the default falls back to epoch 1's and ends as an uninterrupted run."""
    from convlens.cli import main
    spec = tmp_path / "job.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec(tmp_path / "runs", cache_dir, "corrupt",
                                             run={**ONE_WORKER, "max_failures": 1, "keep_last": 3}, **DDP)))
    inject(monkeypatch, {"kind": "kill", "run": "corrupt", "at": "0:3:1", "times": 5})
    assert main(["train", str(spec)]) == 1
    ours = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("(")]  # not Ray's workers
    assert len(ours) == 1 and ours[0].startswith("convlens: error: run corrupt"), ours
    assert "failed after 1 retries (run.max_failures): rank 0: " in ours[0] and "worker" in ours[0].lower(), ours
    run_dir = tmp_path / "runs" / "corrupt"
    assert len(list((run_dir / ".faults").glob("kill-*"))) == 2  # max_failures + 1 attempts
    assert [a["start_epoch"] for a in read_attempts(run_dir)] == [1, 3]
    assert epochs_of(run_dir) == [1, 2] and committed_epochs(run_dir) == [1, 2]
    assert ckpt.load_checkpoint(ckpt.latest_verified(run_dir))["epoch"] == 2
    monkeypatch.delenv("CONVLENS_FAULTS")

    snapshot = json.loads((run_dir / "checkpoint_manager_snapshot.json").read_text())
    latest = run_dir / snapshot["latest_checkpoint_result"]["checkpoint_dir_name"]
    data = (latest / "state.pt").read_bytes()
    (latest / "state.pt").write_bytes(data[:500] + bytes([data[500] ^ 0xFF]) + data[501:])

    strict = tiny_job("corrupt", run={**ONE_WORKER, "max_failures": 3, "on_corrupt_checkpoint": "stop"}, **DDP)
    with pytest.raises(RunStopped, match=str(latest)):
        train(strict)
    assert len(read_attempts(run_dir)) == 2  # refused before an attempt started, no retries burnt

    fallback = tiny_job("corrupt", run={**ONE_WORKER, "max_failures": 0}, **DDP)
    train(fallback)
    # epoch 2 redone once, from epoch 1's checkpoint
    assert_nothing_lost(run_dir, 3, steps_per_epoch(fallback), [1, 3, 2],
                        reference=uninterrupted(run=ONE_WORKER, **DDP), atol=1e-6)


def test_driver_sigkill_then_rerun_resumes(ray_cluster, tmp_path, cache_dir, uninterrupted):
    """`convlens train` SIGKILLed after an epoch is committed: the same spec and run name resume at
    the next epoch and end equal to an uninterrupted run (the session's reference of the same
    sections, which started afresh: no Train run of its own here); another run name is another run
    directory, so it starts afresh as that reference did; rerunning the finished run does no work."""
    sections = {"run": ONE_WORKER, **DDP}  # the reference of the corrupt-checkpoint test and of 1 vs 2 workers
    spec = tiny_spec(tmp_path / "runs", cache_dir, "driver", **sections)
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(spec))
    env = {**os.environ, "RAY_ADDRESS": ray_cluster.get_runtime_context().gcs_address,
           "PYTHONPATH": os.pathsep.join(sys.path)}
    run_dir = tmp_path / "runs" / "driver"
    cmd = [sys.executable, "-m", "convlens.cli", "train", str(path)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and not committed_epochs(run_dir):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    committed = committed_epochs(run_dir)
    assert committed and not (run_dir / "summary.json").exists()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    reference = uninterrupted(**sections)
    assert read_attempts(reference)[0]["resumed_from"] is None
    other = load_job(path, ["run.name=other"], "train")
    assert other.run_dir == tmp_path / "runs" / "other" and not other.run_dir.exists()
    assert_nothing_lost(run_dir, 3, steps_per_epoch(load_job(path, [], "train")), [1, max(committed) + 1],
                        reference=reference, atol=1e-6)
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "already finished" in again.stdout
    assert len(read_attempts(run_dir)) == 2


BAD_INPUTS = {  # case -> (overrides, what the one-line error must say); {tmp}: the test's folder
    "lr zero": (["optim.lr=0"], "optim.lr = 0"),
    "lr negative": (["optim.lr=-0.1"], "optim.lr = -0.1"),
    "batch size zero": (["data.batch_size=0"], "data.batch_size = 0"),
    "batch not divisible": (["run.workers=3"], "data.batch_size = 64: not divisible across run.workers = 3"),
    "unknown architecture": (["model.block=resnext"], "model.block = 'resnext'"),
    "more workers than the cluster": (["run.workers=64"], "needs 64 CPUs, but the Ray cluster has 4"),
    # data.download=false: the folder read as it is, as before datasets downloaded themselves
    "missing dataset path": (["data.download=false", "data.path={tmp}/nope"],
                             "data.path = '{tmp}/nope': does not exist"),
    "empty dataset path": (["data.download=false", "data.path={tmp}/empty"], "data.path = '{tmp}/empty': is empty"),
    "dataset path is a file": (["data.path={tmp}/file.txt"], "not a directory"),
    "truncated IDX file": (["data.download=false", "data.path={tmp}/truncated"], "truncated"),
    "label out of range": (["data.download=false", "data.path={tmp}/labels"], "out of range"),
    "not Fashion-MNIST's content": (["data.path={tmp}/labels"], "{tmp}/labels/train-images-idx3-ubyte.gz: not "
                                    "Fashion-MNIST's file"),
    "corrupt image": (["data.dataset=image_folder", "data.path={tmp}/images", "data.image_size=16",
                       "data.batch_size=8"], "{tmp}/images/dog/broken.png"),
    "smaller than one batch": (["data.train_subset=40"], "fewer than one batch"),
}


def bad_data(tmp):
    """The broken datasets BAD_INPUTS points at, in their real formats."""
    import gzip
    from PIL import Image
    from test_data import make_idx_dataset
    (tmp / "empty").mkdir()
    (tmp / "file.txt").write_text("not a dataset")
    make_idx_dataset(tmp / "labels", label_max=12)
    images = make_idx_dataset(tmp / "truncated") / "train-images-idx3-ubyte.gz"
    images.write_bytes(gzip.compress(gzip.decompress(images.read_bytes())[:-100]))
    for cls in ("cat", "dog"):
        (tmp / "images" / cls).mkdir(parents=True)
        for i in range(20):
            Image.new("RGB", (20, 20), (i * 10, 10, 200)).save(tmp / "images" / cls / f"{i}.png")
    (tmp / "images" / "dog" / "broken.png").write_bytes(b"not a png")


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_fails_in_the_driver_naming_it(case, ray_cluster, tmp_path, cache_dir, capsys):
    """Each bad value or dataset: `convlens train` exits 2 before any worker starts, with one
    message that names the field or file, and leaves no run directory."""
    from convlens.cli import main
    bad_data(tmp_path)
    overrides, message = BAD_INPUTS[case]
    spec = tmp_path / "job.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec(tmp_path / "runs", cache_dir, "bad")))
    code = main(["train", str(spec), *(o.format(tmp=tmp_path) for o in overrides)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("convlens: error:") and message.format(tmp=tmp_path) in err, err
    assert "Traceback" not in err and not (tmp_path / "runs").exists()
