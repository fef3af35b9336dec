"""W&B tracking, for real: a tiny training run logs offline and we read its .wandb log back."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from conftest import inject, tiny_spec
from wandb_reader import read_runs, wait_finished

LIB = str(Path(__file__).resolve().parents[1] / "lib")

pytest.importorskip("wandb")


def train_with_env(job, monkeypatch, env: dict) -> dict:
    """Train with W&B env vars set in the driver (finalize) and in the Ray workers.

    The session's Ray cluster started with WANDB_MODE=disabled, and workers inherit the
    cluster's environment, not this process's: pass the variables as the worker runtime env.
    """
    from convlens.training.run import train
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return train(job, trainer_kwargs={"worker_runtime_env": {"env_vars": env}})


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # free again once closed: nothing listens there


def secret_key() -> str:
    return "convlens" + uuid.uuid4().hex  # 40 characters, the length of a W&B key


def assert_absent(secret: str, folders: list[Path], text: str) -> int:
    assert secret not in text
    checked = 0
    for folder in folders:
        for path in Path(folder).rglob("*"):
            if path.is_file():
                assert secret.encode() not in path.read_bytes(), f"API key written to {path}"
                checked += 1
    return checked


def test_offline_run_logs_every_epoch_summary_and_images(tiny_job, ray_cluster, monkeypatch, capfd):
    from convlens.tracking import open_tracker
    key = secret_key()
    job = tiny_job(name="tracked", tracking={"mode": "offline", "log_checkpoints": True})
    summary = train_with_env(job, monkeypatch, {"WANDB_MODE": "offline", "WANDB_API_KEY": key})
    run_dir = job.run_dir
    run_id = (run_dir / "wandb_id.txt").read_text().strip()

    tracker = open_tracker(job, run_dir, 0)  # e.g. `convlens analyze` adding figures later
    tracker.log_images([(str(run_dir / "loss.png"), "loss curve, train vs validation")], key="analysis")
    tracker.finish()

    assert len(wait_finished(run_dir / "wandb", run_id)) == 3  # worker, finalize, this reopen
    log = read_runs(run_dir / "wandb", run_id)
    curves = [row for row in log.history if "train/loss" in row]
    assert [row["_step"] for row in curves] == [1, 2]
    for row in curves:
        assert {"val/loss", "val/accuracy", "lr", "images_per_second"} <= set(row)
        assert row["val/per_class_accuracy"]["_type"] == "table-file"
    assert log.config["run"]["name"] == "tracked" and log.config["model"]["width"] == 8
    assert log.summary["test_accuracy"] == pytest.approx(summary["test_accuracy"])
    captions = {c for m in log.media for c in m["captions"]}
    assert "loss curve, train vs validation" in captions and "loss" in captions
    media = [run_dir / "wandb" / p for m in log.media for p in m["paths"]]
    assert any(p.name.endswith(".png") for p in media)
    assert len({p.parent.name.split("-")[-1] for p in (run_dir / "wandb").glob("*run-*")}) == 1
    # log_checkpoints: the best and the last checkpoint folders, as versions of one model artifact
    arts = {alias: a for a in log.artifacts for alias in a["aliases"] if alias in ("best", "last")}
    assert set(arts) == {"best", "last"} and {a["type"] for a in arts.values()} == {"model"}
    assert Path(summary["best_checkpoint"]).name in arts["best"]["aliases"]
    assert "state.pt" in arts["last"]["files"] and "manifest.json" in arts["last"]["files"]
    out = capfd.readouterr()
    assert assert_absent(key, [run_dir], out.out + out.err) > 5


def test_online_without_server_falls_back_offline_and_keeps_key_secret(tiny_job, ray_cluster, monkeypatch,
                                                                       capfd, tmp_path):
    key = secret_key()
    wandb_dir = tmp_path / "wandb-files"
    job = tiny_job(name="unreachable", run={"epochs": 1},
                   tracking={"mode": "online", "init_timeout": 5, "dir": str(wandb_dir)})
    env = {"WANDB_MODE": "online", "WANDB_API_KEY": key,
           "WANDB_BASE_URL": f"http://127.0.0.1:{closed_port()}"}
    start = time.monotonic()
    summary = train_with_env(job, monkeypatch, env)
    seconds = time.monotonic() - start
    out = capfd.readouterr()
    assert summary["epochs"] == 1
    assert "logging offline" in out.out  # the driver's (finalize) reopen said so, once
    assert seconds < 120, f"tracking stalled training: {seconds:.0f}s"
    run_id = (job.run_dir / "wandb_id.txt").read_text().strip()
    wait_finished(wandb_dir / "wandb", run_id)
    log = read_runs(wandb_dir / "wandb", run_id)
    assert [row["_step"] for row in log.history if "train/loss" in row] == [1]
    assert "test_accuracy" in log.summary
    assert assert_absent(key, [job.run_dir, wandb_dir], out.out + out.err) > 5


def test_stopped_run_tells_wandb_why(tiny_job, ray_cluster, monkeypatch):
    from convlens.errors import RunStopped
    job = tiny_job(name="nan-tracked", tracking={"mode": "offline"})
    inject(monkeypatch, {"kind": "nan", "run": "nan-tracked", "at": "0:2:1"})
    with pytest.raises(RunStopped):
        train_with_env(job, monkeypatch, {"WANDB_MODE": "offline"})
    run_id = (job.run_dir / "wandb_id.txt").read_text().strip()
    wait_finished(job.run_dir / "wandb", run_id)
    log = read_runs(job.run_dir / "wandb", run_id)
    assert "non-finite loss at epoch 2" in log.summary["stop_reason"] and log.exit_code == 1
    assert [row["_step"] for row in log.history if "train/loss" in row] == [1]


EVERY_TRACKER_CALL = """
import json, os, sys
from convlens.specs.base import validate
from convlens.specs.train import TrainJob
from convlens.tracking import open_tracker
job = validate(TrainJob, json.loads(sys.argv[1]))
metrics = {"epoch": 1, "train_loss": 1.0, "val_accuracy": 0.5, "val_per_class_accuracy": [0.5]}
tracker = open_tracker(job, job.run_dir, 0)
tracker.log_history([metrics], ["a"])
tracker.log_epoch(metrics, ["a"])
tracker.log_images([(sys.argv[2], "an image")])
tracker.log_table("t", ["a"], [[1]])
tracker.stop("because")
tracker.finish()
fds = []
for fd in os.listdir("/proc/self/fd"):
    try:
        fds.append(os.readlink(f"/proc/self/fd/{fd}"))
    except FileNotFoundError:  # the listing's own descriptor, closed by now
        pass
children = [p for p in os.listdir("/proc") if p.isdigit() and
            open(f"/proc/{p}/stat").read().split(")")[-1].split()[1] == str(os.getpid())]
print(json.dumps({"wandb_imported": "wandb" in sys.modules, "children": children,
                  "sockets": [f for f in fds if f.startswith("socket:")]}))
"""


@pytest.mark.parametrize("spec_mode, env_mode", [("disabled", None), ("online", "disabled")])
def test_disabled_mode_opens_no_socket(tmp_path, cache_dir, spec_mode, env_mode):
    """tracking.mode disabled (or WANDB_MODE=disabled over an online spec): every tracker call a
    run makes, in a fresh process, imports no wandb, starts no W&B service, opens no socket."""
    spec = tiny_spec(tmp_path / "runs", cache_dir, "quiet_run", tracking={"mode": spec_mode})
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update({"PYTHONPATH": LIB, **({"WANDB_MODE": env_mode} if env_mode else {})})
    from PIL import Image
    Image.new("RGB", (8, 8)).save(tmp_path / "image.png")
    proc = subprocess.run([sys.executable, "-c", EVERY_TRACKER_CALL, json.dumps(spec), str(tmp_path / "image.png")],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    seen = json.loads(proc.stdout.splitlines()[-1])
    assert seen == {"wandb_imported": False, "children": [], "sockets": []}
    assert not (tmp_path / "runs").exists()


def test_api_key_never_written_by_a_training_and_a_sweep(tmp_path, cache_dir):
    """WANDB_API_KEY set to a sentinel in the shell of `convlens train` and `convlens sweep`
    (offline W&B, their own local Ray): the sentinel is in no run, trial or W&B file, in none
    of Ray's session logs, and in none of their output."""
    key = secret_key()
    ray_tmp = Path(tempfile.mkdtemp(prefix="rk", dir="/tmp"))  # short: Ray's socket paths must fit
    base = tmp_path / "base.yaml"
    base.write_text(json.dumps(tiny_spec(tmp_path / "runs", cache_dir, "secret", run={"epochs": 1},
                                         tracking={"mode": "offline"})))
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(json.dumps({"kind": "sweep", "name": "secret_sweep", "root": str(tmp_path / "sweeps"),
                                 "base": str(base), "space": {"optim.lr": {"grid": [0.05, 0.1]}},
                                 "search": "grid", "num_samples": 1, "scheduler": {"name": "none"}}))
    script = (f"import sys; from convlens.cli import main; "
              f"sys.exit(main(['train', {str(base)!r}]) or main(['sweep', {str(sweep)!r}]))")
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "WANDB_SERVICE")}
    env.update(WANDB_API_KEY=key, WANDB_MODE="offline", RAY_TMPDIR=str(ray_tmp), PYTHONPATH=LIB)
    try:
        proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                              timeout=420)
        assert proc.returncode == 0, proc.stderr[-3000:]
        wandb_logs = [*(tmp_path / "runs").rglob("*.wandb"), *(tmp_path / "sweeps").rglob("*.wandb")]
        ray_logs = list(ray_tmp.rglob("session_*/logs/*"))
        assert len(wandb_logs) >= 4 and len(ray_logs) > 10  # both runs logged; Ray wrote its logs
        checked = assert_absent(key, [tmp_path / "runs", tmp_path / "sweeps", ray_tmp], proc.stdout + proc.stderr)
        assert checked > 50
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
