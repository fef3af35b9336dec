"""`convlens submit` on a real two-node Slurm cluster (`slurm/cluster.sh start --nodes 2`): two
network namespaces node1 and node2 on a private bridge, one slurmd each, the filesystem shared.
Ray's head runs on node1, a Ray worker on node2; DDP runs over gloo between the two addresses.

Needs root and the Debian Slurm packages plus iproute2. The cluster replaces the one-node cluster
while this module runs (tests/test_slurm.py brings that one back). Skipped with the
reason where the machine lacks root or those packages (a user), never under CI.
"""
from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import NamedTuple

import pytest
import yaml

from conftest import (DDP, TWO_WORKERS, assert_calm_log, assert_followed, assert_nothing_lost, submit_cli, committed_epochs, read_attempts, read_metrics, reordering_tolerance,
                      require, steps_per_epoch, tiny_spec)
from convlens.storage.checkpoint import checkpoint_epoch

REPO = Path(__file__).resolve().parents[1]
NAMESPACE = "convlens-node"  # node K runs in network namespace convlens-nodeK (cluster.sh)
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def nodes() -> dict[str, str]:
    """The two-node cluster, started for this module: {node name: its address}."""
    require("slurm", "namespaces")
    start = time.time()
    subprocess.run(["bash", str(REPO / "slurm/cluster.sh"), "start", "--nodes", "2"], check=True, timeout=600)
    print(f"\n[test_multinode] cluster.sh start --nodes 2 took {time.time() - start:.1f} s")
    out = subprocess.run(["sinfo", "-N", "-h", "-o", "%N %T %o"], capture_output=True, text=True, check=True)
    print(out.stdout)
    rows = [line.split() for line in out.stdout.splitlines()]
    assert [r[0] for r in rows] == ["node1", "node2"] and all(r[1] in ("idle", "mixed") for r in rows), rows
    return {name: addr for name, _, addr in rows}


@pytest.fixture(scope="module")
def work(tmp_path_factory, cache_dir):
    """The two-node profile with outputs in a temp dir, and a factory of tiny train specs."""
    tmp = tmp_path_factory.mktemp("multinode")
    profile = yaml.safe_load((REPO / "slurm/local2.yaml").read_text())
    profile.update(log_dir=str(tmp / "logs"), runs_root=str(tmp / "runs"), time_minutes=20)

    def spec(name, **sections):
        return write_yaml(tmp / f"{name}.yaml", tiny_spec(tmp / "elsewhere", cache_dir, name, **sections))
    return write_yaml(tmp / "cluster.yaml", profile), spec, tmp / "runs"


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def job_processes(node: int) -> list[str]:
    """Command lines of the Ray and training processes left in node K's network namespace."""
    pids = subprocess.run(["ip", "netns", "pids", f"{NAMESPACE}{node}"], capture_output=True, text=True).stdout
    left = []
    for pid in pids.split():
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if cmd.split(" ", 1)[0].endswith("slurmd"):  # the node's own daemon (its config lives in convlens-slurm)
            continue
        if any(word in cmd for word in ("ray", "convlens", "submitit", "python")):
            left.append(f"{pid}: {cmd[:160]}")
    return left


def assert_nodes_clean(timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while (left := job_processes(1) + job_processes(2)) and time.time() < deadline:
        time.sleep(1)
    assert not left, left


class Followed(NamedTuple):
    run_dir: Path
    transcript: str  # what `convlens submit --wait` printed
    job_id: str
    log: str  # rank 0's log
    profile: Path  # the cluster profile it was submitted with


@pytest.fixture(scope="module")
def ddp_run(nodes, work) -> Followed:
    """A train job on 2 nodes x 1 worker (3 epochs, every checkpoint kept) as a user runs it:
    `convlens submit --wait` with an override (optim.lr=0.01: not tiny_spec's 0.05, so the config
    shows it arrived; DDP's, so the run is the reference's), 2 GiB of each node's 12."""
    profile, spec, runs = work
    small = write_yaml(profile.parent / "small.yaml", {**yaml.safe_load(profile.read_text()), "mem_gb": 2})
    start = time.time()
    path = spec("ddp2", run={**TWO_WORKERS, "keep_last": 3, "quiet": False}, model=DDP["model"], data=DDP["data"])
    done = submit_cli(small, path, overrides=[f"optim.lr={DDP['optim']['lr']}"], timeout=600)
    seconds = time.time() - start
    print(f"\n[test_multinode] 2-node DDP job (submit --wait to its outcome): {seconds:.1f} s\n{done.stdout}")
    assert done.returncode == 0, done.stdout + done.stderr
    job_id = assert_followed(done.stdout, "ddp2", 3)
    log = (profile.parent / f"logs/{job_id}/{job_id}_0_log.out").read_text()
    return Followed(runs / "ddp2", done.stdout, job_id, log, small)


def test_followed_job_lands_under_the_profile_and_can_be_followed_again(work, ddp_run, capsys, monkeypatch):
    """The submit --wait transcript (states, rank 0's lines, the outcome; tests/conftest.py's
    assert_followed) names the job, its stdout file and W&B group; the run's summary and config land
    under the profile's runs_root with the override; the job's Ray has the granted memory. `convlens
    follow` of the ended job gives the outcome again; Ctrl-C says how to follow again."""
    from convlens.cli import main
    from convlens.launch import follow
    import convlens.launch.jobstate as jobstate
    profile, _, runs = work
    run = ddp_run
    assert re.search(r"submitted slurm job \d+", run.transcript) and "stdout:" in run.transcript
    assert "W&B group: train-ddp2" in run.transcript
    assert json.loads((runs / "ddp2/summary.json").read_text())["epochs"] == 3
    assert yaml.safe_load((runs / "ddp2/config.yaml").read_text())["optim"]["lr"] == DDP["optim"]["lr"]
    assert not (profile.parent / "elsewhere").exists()
    up = next(line for line in run.log.splitlines() if "Ray cluster up" in line)
    node_mb = int(subprocess.run(["sinfo", "-h", "-N", "-o", "%m"], capture_output=True, text=True).stdout.split()[0])
    assert "each node as granted: 1 CPUs, 0 GPUs, mem_gb 2.0 " in up and 2 * 1024 < node_mb, up
    each = re.search(r"\(Ray memory ([\d.e+]+) \+ object store ([\d.e+]+)", up).groups()  # a node's, not the total
    assert sum(map(float, each)) <= 2 * 2**30, up

    capsys.readouterr()
    assert main(["follow", run.job_id, "--cluster", str(run.profile)]) == 0  # an ended job: its outcome at once
    assert capsys.readouterr().out.splitlines()[-1] == run.transcript.splitlines()[-1]

    def interrupted(job_id):
        raise KeyboardInterrupt
    with monkeypatch.context() as patch:
        patch.setattr(jobstate, "slurm_state", interrupted)
        with pytest.raises(KeyboardInterrupt):
            follow.follow_id(str(run.profile), run.job_id)
    assert f"stopped following; job {run.job_id} goes on. Follow it again with: convlens follow {run.job_id} " \
        f"--cluster {run.profile}" in capsys.readouterr().err


def test_analysis_tasks_run_on_both_nodes(nodes, work, ddp_run, capsys):
    """An analyze job through the head+workers bootstrap (`ray start` on each node of the
    allocation): its tasks on both nodes, its outputs under the profile's runs_root, a calm log,
    and a Ray that stops at once at the end and does not become the node's default cluster."""
    from convlens.launch.slurm import submit
    from convlens.raycluster.nodes import ray_port
    profile, _, runs = work
    spec = write_yaml(profile.parent / "analyze.yaml", {
        "kind": "analyze", "name": "two_nodes", "runs": [str(ddp_run.run_dir)], "epochs": "all",
        "methods": ["filters", "gradcam"], "options": {"num_images": 16, "num_train": 64}})
    assert submit(profile, "analyze", spec, wait=True, timeout=600) == 0
    out = runs / "analysis/two_nodes"
    index = json.loads((out / "index.json").read_text())
    assert {(e["epoch"], e["method"]) for e in index["files"]} >= {(e, m) for e in (1, 2, 3)
                                                                  for m in ("filters", "gradcam")}
    pngs = [out / e["file"] for e in index["files"] if e["file"].endswith(".png")]
    assert len(pngs) >= 6 and all(p.stat().st_size > 1000 for p in pngs)
    hosts = [json.loads(p.read_text())["host"] for p in out.glob("ddp2/*/*.json")]  # per task (not the driver's compare/)
    assert len(hosts) == 6 and set(hosts) == {"node1", "node2"}, hosts
    job_id = re.search(r"submitted slurm job (\d+)", capsys.readouterr().out).group(1)
    log_file = profile.parent / f"logs/{job_id}/{job_id}_0_log.out"
    log = log_file.read_text()
    assert "Ray cluster up: 2 nodes in" in log and "each node as granted: 1 CPUs, 0 GPUs, mem_gb 4.0" in log, log
    assert "ray stop" not in log and "\x1b[" not in log and "Ray runtime started" not in log  # the banner: in its file
    head_log = (log_file.parent / "ray_start_head.log").read_text()
    assert "Ray runtime started" in head_log and "Draining" not in head_log, head_log  # stopped at once at the end
    # the job's `ray start` must not become the node's default cluster for other ray.init() calls
    shared = Path("/tmp/ray/ray_current_cluster")
    assert not shared.exists() or not shared.read_text().endswith(f":{ray_port(job_id)}")


def test_sweep_trials_run_on_both_nodes(nodes, work):
    """A Tune sweep in one 2-node allocation: two trials side by side, one on each node."""
    from convlens.launch.slurm import submit
    profile, spec, runs = work
    sweep = write_yaml(profile.parent / "sweep2.yaml", {
        "kind": "sweep", "name": "sweep2", "base": str(spec("base", run={"cpus_per_worker": 0.5})),
        "space": {"optim.lr": {"grid": [0.1, 0.05]}}, "search": "grid", "num_samples": 1,
        "scheduler": {"name": "none"}, "resources": {"trial_cpus": 0.5}})
    assert submit(profile, "sweep", sweep, wait=True, timeout=600) == 0
    with open(runs / "sweep2/trials.csv") as f:
        trials = list(csv.DictReader(f))
    assert [r["status"] for r in trials] == ["completed", "completed"], trials
    assert sorted(r["node"] for r in trials) == sorted(nodes.values()), [r["node"] for r in trials]


def first_checkpoint(run_dir: Path, job, timeout: float = 400) -> int:
    """Wait until the run has committed a checkpoint; the epochs committed by then."""
    from convlens.launch.jobstate import slurm_state
    deadline = time.time() + timeout
    while not (done := committed_epochs(run_dir)):
        assert time.time() < deadline, f"no checkpoint after {timeout} s; job {slurm_state(job.job_id)}"
        time.sleep(0.3)
    return len(done)


def requeued_checkpoint(run_dir: Path, job, timeout: float = 600) -> int:
    """Wait until the requeued attempt (the run's second) has committed a checkpoint of its own;
    the last epoch committed by then."""
    from convlens.launch.jobstate import slurm_state
    deadline = time.time() + timeout
    while True:
        try:
            attempts = read_attempts(run_dir)
        except ValueError:  # a line being written
            attempts = []
        done = committed_epochs(run_dir)
        if len(attempts) >= 2 and done and done[-1] >= attempts[1]["start_epoch"]:
            return done[-1]
        assert time.time() < deadline, f"no checkpoint of the requeued attempt after {timeout} s; " \
                                       f"job {slurm_state(job.job_id)}, attempts {attempts}"
        time.sleep(0.3)


def steps(spec_path: Path) -> int:
    from convlens.specs.load import load_job
    return steps_per_epoch(load_job(spec_path, [], "train"))


def raylet_pids(node: int) -> list[int]:
    return [int(line.split(":")[0]) for line in job_processes(node) if "/raylet" in line.split(":", 1)[1]]


def registered_checkpoints(run_dir: Path) -> list[dict]:
    """Epoch metrics of the checkpoints Ray Train has registered: what a restarted run resumes from."""
    try:
        snapshot = json.loads((run_dir / "checkpoint_manager_snapshot.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return []
    return [r["metrics"] for r in snapshot["checkpoint_results"]]


def test_requeue_then_worker_node_lost_in_one_two_node_job(nodes, work, monkeypatch):
    """Two faults of one tracked 2-node training job, each mid-run. First `scontrol requeue` after
    the first committed checkpoint: both nodes restart and the run resumes from its checkpoint (the
    epochs done before are not trained again). Then, once the requeued attempt has committed a
    checkpoint of its own, node2's raylet is killed: node2 rejoins the Ray cluster, the run retries
    its workers (run.max_failures) and resumes again (or, the other acceptable end, fails with a
    clear error naming the lost node). Every epoch once, nothing lost; the logs name the lost node;
    afterwards no Ray or training process is left on either node. W&B (offline; the submitter has
    a W&B service of its own, which the job must not use): one run across the attempts, and what
    `convlens sync` uploads of a finished job shows it whole, from its first start."""
    import signal
    import wandb
    from convlens.base.errors import JobFailed
    from convlens.launch.jobstate import wait_for
    from convlens.launch.slurm import submit
    profile, spec, runs = work
    monkeypatch.setenv("WANDB_MODE", "offline")  # the job inherits the submitter's environment
    wandb.setup()  # a submitter with a W&B service of its own (a notebook): the job must not use it
    assert os.environ.get("WANDB_SERVICE")
    # Epochs of about 2 s (6144 images): with 0.5 s epochs the run could end before the lost
    # raylet was noticed. 7 epochs: the requeue lands after epoch 1 or 2, the requeued attempt
    # commits one more, and then at least 3 epochs are left for the node loss (as 3 of 6 were
    # when each fault had a job of its own).
    epochs = 7
    path = spec("faults2", run={"workers": 2, "epochs": epochs, "max_failures": 2, "quiet": False},
                data={"train_subset": 6144}, tracking={"mode": "offline", "stats_interval": 1.0})
    submitted = time.time()
    job = submit(profile, "train", path)
    run_dir = runs / "faults2"

    # 1. the requeue: both nodes restart, the run resumes from its checkpoint
    first_checkpoint(run_dir, job)
    before = registered_checkpoints(run_dir)
    assert len(before) < epochs - 3, "run too far along at the requeue; make epochs slower"
    subprocess.run(["scontrol", "requeue", job.job_id], check=True)
    requeued = time.time()
    resumed = requeued_checkpoint(run_dir, job)
    attempts = read_attempts(run_dir)
    assert len(attempts) == 2 and attempts[1]["start_epoch"] >= len(before) + 1, attempts
    assert attempts[0]["start_epoch"] == 1 and attempts[0]["resumed_from"] is None
    assert attempts[1]["start_epoch"] == checkpoint_epoch(attempts[1]["resumed_from"]) + 1
    assert all(sorted(n["address"] for n in a["nodes"]) == sorted(nodes.values()) for a in attempts)
    assert read_metrics(run_dir)[:len(before)] == before  # same rows, same timings: resumed, not retrained

    # 2. node2's raylet killed mid-run in the requeued attempt
    assert resumed <= epochs - 3, "the node was lost too late in the run; make epochs slower"
    # the requeue wrote lost-node lines of its own: only what the logs say from the kill on counts
    worker_path = Path(str(job.paths.stdout).replace("_0_log.out", "_1_log.out"))
    log_paths = [Path(job.paths.stdout), Path(job.paths.stderr)]
    worker_from, logs_from = worker_path.stat().st_size, [p.stat().st_size for p in log_paths]
    [raylet] = raylet_pids(2)
    os.kill(raylet, signal.SIGKILL)
    try:
        assert wait_for(job, timeout=600) == 0
        finished = True
    except JobFailed as err:  # the other acceptable end: a clear error naming the lost node
        assert "node2" in str(err) and "10.77.0.12" in str(err), err
        assert read_attempts(run_dir)[:2] == attempts
        finished = False
    else:
        after = read_attempts(run_dir)
        assert after[:2] == attempts and len(after) >= 3 and after[-1]["start_epoch"] >= resumed + 1, after
        assert_nothing_lost(run_dir, epochs, steps(path), [a["start_epoch"] for a in after])
    ended = time.time()
    head_log = Path(job.paths.stdout).read_text()
    assert "restart 0," in head_log and "restart 1," in head_log
    logs = "".join(p.read_bytes()[start:].decode(errors="replace") for p, start in zip(log_paths, logs_from))
    worker_log = worker_path.read_bytes()[worker_from:].decode(errors="replace")
    assert "Ray on node node2 (10.77.0.12) exited" in worker_log
    assert "Ray node node2 (10.77.0.12) was lost during the job" in logs
    assert_nodes_clean()
    check_wandb_across_the_requeue(run_dir, finished, epochs, submitted, requeued, ended)


def check_wandb_across_the_requeue(run_dir: Path, finished: bool, epochs: int, submitted: float,
                                   requeued: float, ended: float) -> None:
    """One W&B run id across the attempts, the requeued one and the driver's closing write. Of a
    finished job, what `convlens sync` uploads is one segment of it with each epoch once, in order,
    and the summary; its Overview, System and Logs tabs show the job from its first start, sampled
    before the requeue and from the requeued attempt on (in between the job waits in the queue
    with no process of it anywhere)."""
    from convlens.tracking.sync import plan
    from wandb_reader import check_whole_job, covered, read_run, wait_finished
    run_id = (run_dir / "wandb_id.txt").read_text().strip()
    segments = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(segments) >= 3 and {s.name.rsplit("-", 1)[1] for s in segments} == {run_id}, segments
    if not finished:  # the node loss ended the job: no closing write, nothing more to show
        return
    chosen, superseded = plan(run_dir)
    assert [seg.run_id for seg in chosen] == [run_id] and len(superseded) >= 2
    wait_finished(chosen[0].folder, run_id)
    log = read_run(chosen[0].folder / f"run-{run_id}.wandb")
    assert log.run_id == run_id and "test_accuracy" in log.summary and log.exit_code == 0
    assert [row["epoch"] for row in log.history if "val/accuracy" in row] == list(range(1, epochs + 1))
    started = float((run_dir / "started.txt").read_text())
    assert submitted < started < requeued  # the job's first start, not the requeued one's
    text = check_whole_job(log, ended - started, 1.0, coverage=0)
    resumed = read_attempts(run_dir)[1]["time"]
    times, end = [s["time"] for s in log.stats], log.start_time + log.runtime
    for lo, hi in ((started, requeued), (resumed, end)):
        assert covered(times, 1.0, lo, hi) >= 0.8 * (hi - lo) - 1, (lo, hi, times)
    assert "attempt 2 resumes at epoch" in text and text.count(f"faults2 epoch {epochs}/{epochs}: train loss") == 1


def test_unwritable_runs_root_on_a_node_fails_before_the_job(nodes, work, tmp_path):
    """runs_root read-only on node2 only (a missing shared mount): the job fails before training,
    naming the node and the path."""
    from convlens.base.errors import JobFailed
    from convlens.launch.slurm import submit
    profile, spec, _ = work
    root = tmp_path / "runs_ro"
    root.mkdir()
    data = yaml.safe_load(profile.read_text())
    ro_profile = write_yaml(tmp_path / "ro.yaml", {**data, "runs_root": str(root)})
    slurmd = (Path("/var/lib/convlens-slurm") / "slurmd.node2.pid").read_text().strip()
    in_node2 = ["nsenter", f"--target={slurmd}", "--mount", "--"]
    subprocess.run([*in_node2, "sh", "-c", f"mount --bind {root} {root} && mount -o remount,bind,ro {root}"],
                   check=True)
    try:
        with pytest.raises(JobFailed, match=rf"runs_root {root} is not writable on node node2 \(10.77.0.12\): "
                                            r".*Read-only file system"):
            submit(ro_profile, "train", spec("ro"), wait=True, timeout=600)
    finally:
        subprocess.run([*in_node2, "umount", str(root)], check=True)
    assert not (root / "ro").exists()
    assert_nodes_clean()


def test_ddp_across_two_nodes_matches_one_node(nodes, ddp_run, uninterrupted):
    """One Ray Train worker per node, DDP over gloo between node1 and node2: the same losses as a
    one-node 2-worker run of the same seed (tests/test_train.py's tolerance). Last in the module:
    under pytest -n N another process has trained that reference by then, and this one need not
    start a Ray of its own beside the Slurm jobs."""
    run_dir, log = ddp_run.run_dir, ddp_run.log
    [attempt] = read_attempts(run_dir)
    print(f"[test_multinode] attempts.jsonl: {json.dumps(attempt)}")
    assert attempt["workers"] == 2 and attempt["backend"] == "gloo"
    assert sorted(n["address"] for n in attempt["nodes"]) == sorted(nodes.values())  # two distinct nodes
    assert sorted(n["host"] for n in attempt["nodes"]) == ["node1", "node2"]
    assert "Ray cluster up: 2 nodes" in log
    assert_calm_log(log, "ddp2", 3)
    print(f"[test_multinode] rank 0's log: {len(log.splitlines())} lines")
    up = next(line for line in log.splitlines() if "Ray cluster up" in line)
    assert "2 CPUs" in up, up  # each node's grant: test_followed_job_lands_under_the_profile_...
    reference = read_metrics(uninterrupted(run=TWO_WORKERS, **DDP))
    ours = read_metrics(run_dir)
    assert [m["epoch"] for m in ours] == [1, 2, 3]
    for a, b in zip(reference, ours):
        tol = reordering_tolerance(a["epoch"])
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=tol), a["epoch"]
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=tol), a["epoch"]
    print(f"[test_multinode] images/s per epoch: 2 nodes x 1 worker {[round(m['images_per_second']) for m in ours]}, "
          f"1 node x 2 workers {[round(m['images_per_second']) for m in reference]}; {up[:60]}")
