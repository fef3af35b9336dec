"""W&B tracking, for real: a tiny training run logs offline and we read its .wandb log back."""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import (DDP, TWO_WORKERS, assert_absent, assert_nothing_lost, read_metrics, secret_key, steps_per_epoch,
                      tiny_spec)
from wandb_reader import RunLog, check_whole_job, covered, read_run, read_tables, wait_finished

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


def synced(folder: Path) -> dict[str, RunLog]:
    """What `convlens sync` would upload under folder, read back: run id -> its one segment."""
    from convlens.tracking.sync import plan
    chosen, _ = plan(folder)
    for seg in chosen:
        wait_finished(seg.folder, seg.run_id)
    assert len({s.run_id for s in chosen}) == len(chosen)  # one segment per W&B run
    return {seg.run_id: read_run(seg.folder / f"run-{seg.run_id}.wandb") for seg in chosen}


def epochs_of(log: RunLog) -> list[int]:
    return [row["epoch"] for row in log.history if "train/loss" in row]


@pytest.fixture(scope="module")
def retried(ray_cluster, tmp_path_factory, cache_dir):
    """A tracked 3-epoch 2-worker DDP run, trained once for the tests below, then probed: rank 1
    is SIGKILLed mid-epoch 2 and the worker group retried, rank 0 killed again in epoch 3 with no
    retry left (the driver fails, as a job cut off by Slurm), and the same spec run again finishes
    it (the path of a Slurm requeue). W&B samples system metrics every second. The workers are
    handed the W&B service of the process that started Ray (as under a notebook): each retry must
    still open the same W&B run.
    (run dir, summary, API key, wall seconds from the first start to the end, the probe's)"""
    import wandb
    from convlens.analysis.probes import probe
    from convlens.base.errors import JobFailed
    from convlens.specs.base import validate
    from convlens.specs.probe import ProbeJob
    from convlens.specs.train import TrainJob
    from convlens.training.run import train
    key, root = secret_key(), tmp_path_factory.mktemp("tracked")
    job = validate(TrainJob, tiny_spec(root / "runs", cache_dir, "tracked",
                                       run={**TWO_WORKERS, "max_failures": 1, "quiet": False},
                                       tracking={"mode": "offline", "log_checkpoints": "all", "tags": ["t"],
                                                 "stats_interval": 1.0}, **DDP))
    kills = [{"kind": "kill", "run": "tracked", "at": "1:2:5"}, {"kind": "kill", "run": "tracked", "at": "0:3:1", "times": 2}]
    env = {"WANDB_MODE": "offline", "WANDB_API_KEY": key, "CONVLENS_FAULTS": json.dumps(kills)}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        wandb.setup()  # this process's W&B service (an earlier test's, if one started it): it sets WANDB_SERVICE
        env["WANDB_SERVICE"] = os.environ["WANDB_SERVICE"]
        begun = time.time()
        with pytest.raises(JobFailed):
            train(job, trainer_kwargs={"worker_runtime_env": {"env_vars": env}})
        summary = train(job, trainer_kwargs={"worker_runtime_env": {"env_vars": env}})
        wall = time.time() - begun
        mp.delenv("CONVLENS_FAULTS")
        begun = time.time()
        probe(validate(ProbeJob, {"runs": [str(job.run_dir)], "stages": [1], "max_train": 256, "probe_epochs": 1}))
        probe_wall = time.time() - begun
    return job.run_dir, summary, key, wall, probe_wall


def test_retried_run_syncs_as_one_complete_run(retried, capfd):
    """Worker killed in epoch 2, retried: the run left several segments of its id, and what
    convlens syncs is one of them with every epoch once, in order, its summary and checkpoints."""
    run_dir, summary, key, _, _ = retried
    run_id = (run_dir / "wandb_id.txt").read_text().strip()
    assert summary["wandb_run_id"] == run_id
    assert len(list((run_dir / "wandb").glob(f"offline-run-*-{run_id}"))) >= 3  # 2 attempts + closing write
    runs = synced(run_dir)
    log = runs[run_id]
    assert epochs_of(log) == [1, 2, 3]
    assert [row["_step"] for row in log.history if "train/loss" in row] == [1, 2, 3]
    assert log.summary["test_accuracy"] == pytest.approx(summary["test_accuracy"]) and log.exit_code == 0
    # organisation: group, job type, tags, epoch as x-axis, best-of summaries
    assert (log.group, log.job_type) == ("tracked", "train")
    assert set(log.tags) == {"supervised", "fashion_mnist", "resnet-basic-1.1-w8", "t"}
    assert log.metrics["train/*"]["step_metric"] == "epoch" and log.metrics["val/*"]["step_metric"] == "epoch"
    assert log.metrics["val/accuracy"]["summary"] == ["max"] and log.metrics["val/loss"]["summary"] == ["min"]
    classes = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    for row in (r for r in log.history if "train/loss" in r):
        assert all(0 <= row[f"val/accuracy/{c}"] <= 1 for c in classes)
    assert log.config["run"]["name"] == "tracked" and log.config["model"]["width"] == 8
    assert {c for m in log.media for c in m["captions"]} >= {"loss", "accuracy"}
    # checkpoints: model-<run id>, one version per kept epoch, with epoch / val_error / sha256
    arts = {a["metadata"]["epoch"]: a for a in log.artifacts}
    assert set(arts) == {2, 3} and {a["name"] for a in arts.values()} == {f"model-{run_id}"}
    assert "latest" in arts[3]["aliases"] and "epoch-3" in arts[3]["aliases"]
    best = summary["best_epoch"]
    assert best not in arts or "best" in arts[best]["aliases"]
    state = (Path(summary["best_checkpoint"]) / "state.pt").read_bytes()
    import hashlib
    assert json.loads((Path(summary["best_checkpoint"]) / "manifest.json").read_text())["files"]["state.pt"] \
        == hashlib.sha256(state).hexdigest()
    assert all(a["metadata"]["sha256"] and 0 <= a["metadata"]["val_error"] <= 1 for a in arts.values())
    from convlens.cli import main
    assert main(["sync", str(run_dir), "--dry-run"]) == 0  # what it tells the user, uploading nothing
    out = capfd.readouterr()
    assert out.out.count("would sync") == 2 and out.out.count(f"superseded by the complete segment of run {run_id}") >= 2
    lines = len("".join(o["line"] for o in log.output).splitlines())
    assert (f"train tracked: runtime {log.runtime} s, {len(log.stats)} system-metric records over "
            f"{log.stats[-1]['time'] - log.stats[0]['time']:.0f} s, {lines} console lines") in out.out, out.out
    assert assert_absent(key, [run_dir], out.out + out.err) > 5


def steps_of(run_dir: Path) -> int:
    """Optimizer steps per epoch of a run, from the config.yaml it ran with."""
    import yaml
    from convlens.specs.base import validate
    from convlens.specs.train import TrainJob
    return steps_per_epoch(validate(TrainJob, yaml.safe_load((run_dir / "config.yaml").read_text())))


def test_killed_failed_and_rerun_run_ends_as_an_uninterrupted_one(retried, uninterrupted):
    """The same run (a worker killed and retried, killed again with no retry left so the driver
    failed, then the spec run again): one kill marker per kill, every epoch once, each attempt
    started after the last committed epoch, and the weights of an uninterrupted 2-worker run of
    the same seed (the reference of tests/test_train.py); same seed, same metrics: every epoch's
    losses and accuracies equal the reference's exactly, through the faults."""
    run_dir, *_ = retried
    reference = uninterrupted(run=TWO_WORKERS, **DDP)
    assert len(list((run_dir / ".faults").glob("kill-*"))) == 2
    assert_nothing_lost(run_dir, 3, steps_of(run_dir), [1, 2, 3], reference=reference, atol=1e-6)
    keys = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "steps")
    assert [[m[k] for k in keys] for m in read_metrics(run_dir)] == [[m[k] for k in keys] for m in read_metrics(reference)]


def test_covered_counts_overlaps_once():
    assert covered([1, 2, 2.5, 10], 1.0, 0, 10) == pytest.approx(3.5)  # [0,1] [1,2] [2,2.5] [9,10]
    assert covered([], 1.0, 0, 10) == 0


def test_synced_run_shows_its_runtime_system_metrics_and_logs(retried):
    """What `convlens sync` uploads for the run (killed and retried, then failed and run again)
    holds the job's runtime, the system metrics of every attempt over the whole run, in time
    order, and rank 0's console lines: W&B's Overview, System and Logs tabs."""
    run_dir, summary, _, wall, _ = retried
    run_id = (run_dir / "wandb_id.txt").read_text().strip()
    log = synced(run_dir)[run_id]
    started = float((run_dir / "started.txt").read_text())
    assert log.summary["_runtime"] == pytest.approx(wall, rel=0.1), (log.summary["_runtime"], wall)
    assert log.summary["_wandb"]["runtime"] == log.summary["_runtime"] and log.runtime == log.summary["_runtime"]
    assert log.start_time == pytest.approx(started, abs=0.01)
    times = [s["time"] for s in log.stats]
    assert times == sorted(times)
    end = started + log.runtime
    assert covered(times, 1.0, started, end) >= 0.8 * (end - started), (len(times), end - started)
    attempts = [json.loads(line)["time"] for line in (run_dir / "attempts.jsonl").read_text().splitlines()]
    assert len(attempts) == 3  # first, retried after the kill, the rerun after the failed driver
    for lo, hi in zip(attempts, attempts[1:] + [end]):
        assert any(lo <= t <= hi for t in times), f"no system metrics between {lo} and {hi}"
    keys = set().union(*(s["metrics"] for s in log.stats))
    for prefix in ("cpu", "memory", "disk.", "network.", "proc.cpu.", "proc.memory."):
        assert any(k.startswith(prefix) for k in keys), (prefix, sorted(keys))
    text = "".join(o["line"] for o in log.output)  # rank 0's console, every attempt once, in order
    steps = steps_of(run_dir)
    # step 8: past both kills (rank 0 waits in step 5 of epoch 2 for the killed rank 1; killed itself at step 1 of epoch 3)
    starts = [text.find(f"[convlens] tracked epoch {epoch}/3: {800 // steps:3d}% (8/{steps} steps)") for epoch in (1, 2, 3)]
    assert all(text.count(text[i:i + 45]) == 1 for i in starts) and -1 < starts[0] < starts[1] < starts[2], text
    assert "attempt 2 resumes at epoch 2" in text and "attempt 3 resumes at epoch 3" in text
    assert text.count("[convlens] tracked epoch 3/3: train loss") == 1  # attempt 2 was killed at its first step
    assert (log_folder(run_dir, run_id) / "files" / "output.log").read_text() == text


def log_folder(run_dir: Path, run_id: str) -> Path:
    from convlens.tracking.sync import plan
    return next(s.folder for s in plan(run_dir)[0] if s.run_id == run_id)


def test_probe_is_its_own_run_using_the_checkpoint(retried):
    """The probe's run: the checkpoint it read, its table and summary; and the whole probe job
    (runtime, system metrics, its printed table) in what `convlens sync` uploads."""
    run_dir, summary, _, _, wall = retried
    run_id = (run_dir / "wandb_id.txt").read_text().strip()
    probes = json.loads((run_dir / "probes.json").read_text())
    runs = synced(run_dir)
    log = runs[probes["wandb_run_id"]]
    assert (log.group, log.job_type) == ("tracked", "probe") and log.config["train_run_id"] == run_id
    used = [a for a in log.artifacts if a["used"]]
    assert [a["name"] for a in used] == [f"model-{run_id}"]
    assert used[0]["metadata"]["epoch"] == summary["best_epoch"]
    trained = {a["digest"] for a in runs[run_id].artifacts}
    assert summary["best_epoch"] not in (2, 3) or used[0]["digest"] in trained  # the very version trained
    table = [t for t in log.tables if t["key"] == "probes"]
    assert len(table) == 1
    data = read_tables(log, "probes")[0]
    assert data["columns"][:3] == ["run", "task", "stage"] and len(data["data"]) == 1
    assert log.summary["probe/stage1/knn"] == pytest.approx(probes["stages"]["1"]["knn_accuracy"])
    text = check_whole_job(log, wall, 1.0)
    assert "linear" in text and f"{probes['stages']['1']['knn_accuracy']:8.4f}" in text  # the table it printed


def test_run_logging_to_a_file_on_a_node_without_internet(tiny_job, ray_cluster, monkeypatch, capfd, tmp_path):
    """A 2-worker run as a batch job has it: its output to a file (not a terminal; pytest captures)
    and W&B online with no server reachable. Rank 0 prints a plain line every ~10% of an epoch and
    none of Ray Train's per-rank report lines; W&B falls back offline within its init_timeout,
    training is not held up, the run is whole offline, and the API key is written nowhere."""
    key = secret_key()
    wandb_dir = tmp_path / "wandb-files"
    job = tiny_job(name="chatty", run={"quiet": False, "workers": 2}, data={"train_subset": 2048},
                   tracking={"mode": "online", "init_timeout": 5, "dir": str(wandb_dir)})
    env = {"WANDB_MODE": "online", "WANDB_API_KEY": key,
           "WANDB_BASE_URL": f"http://127.0.0.1:{closed_port()}"}
    start = time.monotonic()
    summary = train_with_env(job, monkeypatch, env)
    seconds = time.monotonic() - start
    out = capfd.readouterr()
    for epoch in (1, 2):
        lines = re.findall(rf"\[convlens\] chatty epoch {epoch}/2: +(\d+)% \(\d+/\d+ steps\), loss [\d.]+, \d+ img/s",
                           out.out)
        assert 5 <= len(lines) <= 10 and lines[-1] == "100", (epoch, lines)
        assert f"[convlens] chatty epoch {epoch}/2: train loss" in out.out
    assert "Reporting training result" not in out.out and "test acc" in out.out
    assert summary["epochs"] == 2
    assert "logging offline" in out.out  # the driver's (finalize) reopen said so, once
    assert seconds < 120, f"tracking stalled training: {seconds:.0f}s"
    run_id = (job.run_dir / "wandb_id.txt").read_text().strip()
    log = synced(wandb_dir)[run_id]
    assert epochs_of(log) == [1, 2] and "test_accuracy" in log.summary
    assert assert_absent(key, [job.run_dir, wandb_dir], out.out + out.err) > 5


EVERY_TRACKER_CALL = """
import json, os, sys
from convlens.specs.base import validate
from convlens.specs.train import TrainJob
from convlens.tracking.tracker import open_tracker
job = validate(TrainJob, json.loads(sys.argv[1]))
metrics = {"epoch": 1, "train_loss": 1.0, "val_accuracy": 0.5, "val_per_class_accuracy": [0.5]}
tracker = open_tracker(job, job.run_dir, 0)
tracker.log_history([metrics], ["a"])
tracker.log_epoch(metrics, ["a"])
tracker.log_images([(sys.argv[2], "an image")])
tracker.stop("because")
tracker.finish()
fds = []
for fd in os.listdir("/proc/self/fd"):
    try:
        fds.append(os.readlink(f"/proc/self/fd/{fd}"))
    except FileNotFoundError:  # the listing's own descriptor, closed by now
        pass
def parent(pid):
    try:
        return open(f"/proc/{pid}/stat").read().split(")")[-1].split()[1]
    except (FileNotFoundError, ProcessLookupError):  # a process of the machine's that ended meanwhile
        return None
children = [p for p in os.listdir("/proc") if p.isdigit() and parent(p) == str(os.getpid())]
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


def segment(folder: Path, run_id: str, start: float, stats: list[float],
            driver: bool = False, finished: bool = True) -> Path:
    """A synthetic offline segment: run record and system-metric samples at the given times
    (epoch seconds), a summary with wandb's own runtime and, if finished, an exit."""
    from wandb.proto import wandb_internal_pb2 as pb
    from convlens.tracking.segments import encode, mark_driver

    def rec(**kw):
        return pb.Record(**kw).SerializeToString()
    run = pb.RunRecord(run_id=run_id)
    run.start_time.FromMicroseconds(int(start * 1e6))
    records = [rec(run=run)]
    for t in stats:
        s = pb.StatsRecord(item=[pb.StatsItem(key="cpu", value_json="1.0")])
        s.timestamp.FromMicroseconds(int(t * 1e6))
        records.append(rec(stats=s))
    records.append(rec(summary=pb.SummaryRecord(update=[pb.SummaryItem(key="_runtime", value_json="1")])))
    records += [rec(exit=pb.RunExitRecord(exit_code=0, runtime=1))] if finished else []
    path = folder / f"offline-run-{int(start)}-{run_id}" / f"run-{run_id}.wandb"
    path.parent.mkdir(parents=True)
    path.write_bytes(encode(records))
    if driver:
        mark_driver(path)
    return path


def test_late_closing_of_a_stopped_run_ends_at_its_last_record(tmp_path):
    """An ASHA-stopped trial: its driver (cut off) and rank 0 wrote until t=60; the sweep closes
    it at its own end. The closing segment holds the driver's samples and rank 0's lines once,
    in time order, its runtime ends at 60, and merging again changes nothing."""
    import time as clock
    from convlens.tracking.segments import carry_into_closing
    t0 = clock.time() - 300
    segment(tmp_path, "abc", t0, [t0 + 15 * i for i in range(1, 5)], driver=True, finished=False)
    segment(tmp_path, "abc", t0 + 5, [t0 + 20, t0 + 35], finished=False)
    (tmp_path / "console").mkdir()
    writes = [{"time": t0 + 6, "stream": "stdout", "text": "epoch 1\n"},
              {"time": t0 + 7, "stream": "stderr", "text": "epoch 2\n"}]
    (tmp_path / "console" / "abc-1-2.jsonl").write_text(
        "".join(json.dumps(w) + "\n" for w in writes) + '{"time": 1, "str')  # cut off by a kill
    closing = segment(tmp_path, "abc", t0 + 290, [t0 + 291])
    for _ in range(2):
        assert carry_into_closing(closing, "abc") == {"runtime": 60, "stats": 4, "output": 2}
    log = read_run(closing)
    assert [round(s["time"] - t0) for s in log.stats] == [15, 30, 45, 60]
    assert [(o["line"], o["stream"]) for o in log.output] == [("epoch 1\n", "stdout"), ("epoch 2\n", "stderr")]
    assert log.summary["_runtime"] == 60 and log.runtime == 60 and log.start_time == pytest.approx(t0)


def test_console_file_keeps_every_write_of_a_process_killed_right_after(tmp_path):
    """What rank 0 printed up to a SIGKILL is all in its console file: wandb's own capture
    would have lost the last flush interval of it."""
    script = """
import os, signal, sys
from convlens.tracking.console import ConsoleFile
ConsoleFile(sys.argv[1], "abc")
for i in range(200):
    print(f"line {i}", flush=i % 7 == 0)
sys.stderr.write("last words\\n")
os.kill(os.getpid(), signal.SIGKILL)
"""
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -9, proc.stderr
    from convlens.tracking.console import read_console
    writes = read_console(tmp_path, "abc")
    assert "".join(w["text"] for w in writes if w["stream"] == "stdout") == "".join(f"line {i}\n" for i in range(200))
    assert writes[-1] == {**writes[-1], "stream": "stderr", "text": "last words\n"}
    assert [w["time"] for w in writes] == sorted(w["time"] for w in writes)
    assert read_console(tmp_path, "other") == []
