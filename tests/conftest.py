"""Shared fixtures: one Ray cluster per test session, tiny real Fashion-MNIST jobs."""
from __future__ import annotations

import collections
import contextlib
import copy
import http.server
import json
import os
import re
import subprocess
import sys
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import NamedTuple

import pytest

from convlens.base.startup import collect_less
from convlens.specs.train import default_data_path

collect_less()  # as every convlens process does: the test processes import torch and Ray too

# Debian's Fashion-MNIST where it is installed, else the user cache that `make setup` filled
FMNIST = Path(default_data_path("fashion_mnist"))
REPO_ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
# Ray Train polls its workers every 2 s by default; each run ends, and each report lands, at a poll.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
# Token auth, as the CLI chooses for a new cluster (raycluster.env), from the start: so that the mode
# of every Ray this process starts does not depend on whether a CLI test ran main() in-process first.
os.environ.setdefault("RAY_AUTH_MODE", "token")


# ---------------------------------------------------------------- what a test needs of the machine
# A test that needs root, the local Slurm cluster, network namespaces or a browser skips with a
# reason that starts with LACKS where the machine has not got it (a user without root); under CI
# (CI=true, as root) such a skip is a failure: CI must run everything. (A GPU is another matter:
# CI has none, and tests/test_gpu.py skips with its own reason.)
LACKS = "not on this machine: "
IN_CI = os.environ.get("CI") == "true"
SBIN = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])  # where Debian puts daemons
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def missing_programs(*names: str) -> list[str]:
    return [n for n in names if shutil.which(n, path=SBIN) is None]


def lacking(part: str) -> str | None:
    """Why this machine cannot give a test `part` (root, slurm, namespaces, chromium), or None."""
    if part == "chromium":
        return None if Path(CHROMIUM).exists() else f"{LACKS}chromium ({CHROMIUM}), to render the report"
    if os.geteuid() != 0:
        return LACKS + {"root": "root, to create a user",
                        "slurm": "root, to run a local Slurm cluster (slurm/cluster.sh)",
                        "namespaces": "root, to make the two-node cluster's network namespaces"}[part]
    programs = {"root": (), "slurm": ("slurmctld", "slurmd", "munged", "sbatch"),
                "namespaces": ("ip", "unshare", "nsenter")}[part]
    gone = missing_programs(*programs)
    return f"{LACKS}{' '.join(gone)} (Debian packages of the {part} part)" if gone else None


def require(*parts: str) -> None:
    """Skip the calling test or fixture, with the reason, unless the machine has every part."""
    for part in parts:
        reason = lacking(part)
        if reason:
            pytest.skip(reason)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and isinstance(report.longrepr, tuple) and LACKS in report.longrepr[2]:
        report.outcome = "failed"
        report.longrepr = f"CI=true runs every test, but this one skipped: {report.longrepr[2].removeprefix('Skipped: ')}"


# ---------------------------------------------------------------- several test processes (pytest -n N)
# pytest-xdist hands each process whole groups of tests, so that a module's fixtures are made once.
# A group is a module, or several that share a machine-wide part or a session fixture:
SHARED = {
    # one local Slurm cluster, which test_multinode switches to two nodes and test_slurm back to one
    "test_multinode": "slurm", "test_slurm": "slurm",
    # uninterrupted()'s reference runs
    "test_cli": "reference", "test_reliability": "reference", "test_tracking": "reference", "test_train": "reference",
    # the demo fixture
    "test_analysis_job": "demo", "test_demo": "demo", "test_report": "demo", "test_rotation": "demo",
}
# Groups in the order they are handed out, longest first, so that no long group starts last (the
# demo's fixture alone takes about 3 min under -n 2); the rest follow in file order.
LONGEST_FIRST = ("slurm", "demo", "reference", "test_sweep_search", "test_sweep", "test_setup", "test_stream")


def pytest_configure(config):
    """The user's Ray auth token (~/.ray/auth_token), made once before any test process starts a
    Ray: two first clusters started at once would each write their own, and one GCS would then
    refuse the other's token (InvalidAuthToken)."""
    if os.environ.get("PYTEST_XDIST_WORKER") or os.environ.get("RAY_AUTH_TOKEN"):
        return
    from convlens.raycluster.nodes import ray_bin
    subprocess.run([ray_bin(), "get-auth-token", "--generate"], check=True, capture_output=True)


if os.environ.get("PYTEST_XDIST_WORKER"):
    # one of several test processes: torch's threads in each would outnumber the cores
    import torch
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))


def group_of(nodeid: str) -> str:
    module = Path(nodeid.split("::", 1)[0]).stem
    return SHARED.get(module, module)


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's hook
def pytest_xdist_make_scheduler(config, log):
    """xdist's scheduling by scope, with our groups as the scopes (its own xdist_group marks are
    lost on pytest 9's node ids) in our order."""
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return group_of(nodeid)

    config.option.loadscopereorder = False  # keep the order of pytest_collection_modifyitems
    return GroupScheduling(config, log)


def pytest_collection_modifyitems(items):
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return  # one process: file order
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(group_of(item.nodeid), len(rank)))  # stable: file order within


class MirrorFiles:
    """What a mirror server serves: name -> bytes; GETs counted per name; `truncate` names are sent
    with their full Content-Length but only half the body; `delay` seconds after each MiB."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.gets: collections.Counter = collections.Counter()
        self.truncate: set[str] = set()
        self.delay = 0.0
        self.url = ""


@contextlib.contextmanager
def mirror_server():
    """An HTTP server on 127.0.0.1 as a dataset's mirror: yields its MirrorFiles (url set)."""
    files = MirrorFiles()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            name = self.path.lstrip("/")
            files.gets[name] += 1
            body = files.files.get(name)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            sent = body[:len(body) // 2] if name in files.truncate else body
            try:
                for i in range(0, len(sent), 1 << 20):
                    self.wfile.write(sent[i:i + (1 << 20)])
                    time.sleep(files.delay)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    files.url = f"http://127.0.0.1:{httpd.server_address[1]}/"
    try:
        yield files
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray cluster shared by every test; 4 logical CPUs so 2 trials x 1 worker fit, and one
    logical GPU (no device behind it) for the scheduling of GPU shares."""
    import ray
    from convlens.raycluster.connect import init_local
    if not ray.is_initialized():
        init_local(num_cpus=4, num_gpus=1, log_to_driver=True, logging_level="ERROR", configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("dataset-cache"))


def tiny_spec(root: Path, cache_dir: str, name: str = "tiny", **sections) -> dict:
    """A train spec small enough for seconds on CPU: 1-block-per-stage ResNet, 2k images."""
    spec = {
        "kind": "train",
        "run": {"name": name, "root": str(root), "epochs": 2, "workers": 1, "seed": 0,
                "quiet": True, "max_failures": 0},
        "data": {"dataset": "fashion_mnist", "path": str(FMNIST), "batch_size": 64,
                 "train_subset": 1024, "test_subset": 256, "cache_dir": cache_dir},
        "model": {"layers": [1, 1], "width": 8},
        "optim": {"name": "sgd", "lr": 0.05},
        "schedule": {"name": "constant"},
    }
    for section, values in sections.items():
        spec.setdefault(section, {}).update(values)
    return spec


def secret_key() -> str:
    return "convlens" + uuid.uuid4().hex  # 40 characters, the length of a W&B key


def assert_absent(secret: str, folders: list[Path], text: str) -> int:
    """The secret is in no file under folders and not in text; returns how many files were read."""
    assert secret not in text
    checked = 0
    for folder in folders:
        for path in Path(folder).rglob("*"):
            if path.is_file():
                assert secret.encode() not in path.read_bytes(), f"API key written to {path}"
                checked += 1
    return checked


# ---------------------------------------------------------------- the reduced demo, shared by the session

# The demo's networks and sweep trials at test size (overrides of jobs/demo.yaml's steps' specs).
TINY = {"data.train_subset": 768, "data.test_subset": 256, "model.layers": [1, 1], "model.width": 8,
        "run.workers": 1, "run.quiet": True}


class Demo(NamedTuple):
    root: Path  # the demo's root: supervised/, rotation/, the sweep, analysis/, report.html, timings.json
    report: Path  # the report the command said to open
    key: str  # the sentinel WANDB_API_KEY the command ran with
    stdout: str
    stderr: str
    ray_tmp: Path  # the command's own Ray's RAY_TMPDIR (its session logs)


def demo_spec(root: Path, cache_dir: str) -> dict:
    """jobs/demo.yaml at test size: both networks (2 epochs), probes, a 2-trial sweep, the analysis
    of every method at epochs [1, last] of both networks, the report."""
    from convlens.specs.base import read_yaml
    spec = read_yaml(REPO_ROOT / "jobs/demo.yaml")
    spec.update(root=str(root), quiet=True)
    # copies of TINY: lists shared between steps would be written as YAML anchors
    for step in ("supervised", "rotation"):
        spec[step]["overrides"].update(copy.deepcopy(TINY), **{"run.epochs": 2, "data.cache_dir": cache_dir})
    # the analysis tests' W&B run of the supervised network samples system metrics every second
    spec["supervised"]["overrides"]["tracking.stats_interval"] = 1.0
    spec["probes"]["overrides"].update({"stages": [1, 2], "max_train": 512, "probe_epochs": 2})
    spec["sweep"].setdefault("overrides", {}).update(
        {"base_overrides": {**copy.deepcopy(TINY), "run.epochs": 4, "data.cache_dir": cache_dir, "run.steps_per_epoch": 4},
         "num_samples": 2})
    spec["analysis"]["overrides"].update({"epochs": [1, "last"], "options": {
        "num_images": 32, "num_train": 128, "inversion_steps": 5, "tsne_points": 60}})
    return spec


@pytest.fixture(scope="session")
def demo(tmp_path_factory, cache_dir):
    """The reduced demo, run once per session as a user runs it: `convlens demo <spec.yaml>` in its
    own process, with its own local Ray (no RAY_ADDRESS; a private RAY_TMPDIR, kept until the session
    ends for its logs), WANDB_MODE=offline and a sentinel WANDB_API_KEY. Its run folders are read
    by several modules: a test writes its own outputs elsewhere."""
    import yaml
    from convlens.tracking.sync import plan
    from wandb_reader import wait_finished
    key = secret_key()
    folder = tmp_path_factory.mktemp("demo")
    root = folder / "demo"
    spec = folder / "demo.yaml"
    spec.write_text(yaml.safe_dump(demo_spec(root, cache_dir), sort_keys=False))
    ray_tmp = Path(tempfile.mkdtemp(prefix="rd", dir="/tmp"))  # short: Ray's socket paths must fit
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "WANDB_SERVICE")}
    env.update(WANDB_API_KEY=key, WANDB_MODE="offline", RAY_TMPDIR=str(ray_tmp), PYTHONPATH=str(REPO_ROOT / "lib"))
    try:
        proc = subprocess.run([sys.executable, "-m", "convlens.cli", "demo", str(spec)], cwd=REPO_ROOT, env=env,
                              capture_output=True, text=True, timeout=900)
        print(proc.stdout[-5000:])
        assert proc.returncode == 0, proc.stderr[-3000:]
        report = re.search(r"\[convlens\] demo finished in \d+ s; open (.+)$", proc.stdout.rstrip(), re.M)
        assert report, proc.stdout[-3000:]
        for seg in plan(root)[0]:  # settled before any test reads (or hashes) the demo's folders
            wait_finished(seg.folder, seg.run_id)
        yield Demo(root, Path(report.group(1)), key, proc.stdout, proc.stderr, ray_tmp)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


# The sections of every tiny run that a test compares with a reference (1 vs 2 workers, 2 nodes, killed
# workers or drivers ending with the same seed's metrics): one set, so that uninterrupted() trains each
# reference once, on 2 workers and on 1.
DDP = dict(model={"layers": [1, 1], "width": 8, "sync_bn": True}, optim={"lr": 0.01},
           data={"batch_size": 64, "train_subset": 768})
TWO_WORKERS = {"workers": 2, "epochs": 3}
ONE_WORKER = {**TWO_WORKERS, "workers": 1}


@pytest.fixture
def tiny_job(tmp_path, cache_dir):
    """Factory: tiny_job(name=..., run={...}, data={...}) -> validated TrainJob."""
    from convlens.specs.base import validate
    from convlens.specs.train import TrainJob

    def make(name="tiny", **sections):
        return validate(TrainJob, tiny_spec(tmp_path / "runs", cache_dir, name, **sections))
    return make


@pytest.fixture(scope="session")
def uninterrupted(request, tmp_path_factory, cache_dir):
    """Factory: the run directory of an uninterrupted tiny run with these sections, trained
    once: the reference a faulted run of the same seed must end equal to. Under pytest -n N the
    processes share it (a file lock in the folder above theirs, pytest-xdist's recipe): the one
    that asks first trains it, and only a process that trains one starts the session's Ray."""
    import hashlib
    from filelock import FileLock
    from convlens.specs.base import validate
    from convlens.specs.train import TrainJob
    from convlens.training.run import train
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base

    def run(**sections) -> Path:
        key = hashlib.sha256(json.dumps(sections, sort_keys=True).encode()).hexdigest()[:12]
        root = shared / f"uninterrupted-{key}"
        with FileLock(f"{root}.lock"):
            job = validate(TrainJob, tiny_spec(root, cache_dir, "reference", **sections))
            if not (job.run_dir / "summary.json").is_file():
                request.getfixturevalue("ray_cluster")
                shutil.rmtree(root, ignore_errors=True)  # a process that died while training it
                train(job)
        return job.run_dir
    return run


def read_attempts(run_dir: Path) -> list[dict]:
    """attempts.jsonl: where each start of a run (first, retry, rerun, requeue) began."""
    return [json.loads(line) for line in (Path(run_dir) / "attempts.jsonl").read_text().splitlines()]


def read_metrics(run_dir: Path) -> list[dict]:
    from convlens.storage.rundir import RunDir
    return RunDir(run_dir).read_metrics()


def inject(monkeypatch, *faults: dict) -> str:
    """Plan test faults (convlens.testing.faults) for the runs this test starts (each fault names its run,
    so a reference run trained meanwhile stays clean): the driver forwards CONVLENS_FAULTS to its
    Ray workers, Tune trials and analysis tasks. Returns the value."""
    from convlens.testing.faults import ENV
    value = json.dumps(list(faults))
    monkeypatch.setenv(ENV, value)
    return value


def committed_epochs(run_dir: Path) -> list[int]:
    """Epochs of the checkpoints Ray Train has registered and that verify: what a restarted
    run can resume from (a damaged one stays registered, but counts for nothing)."""
    from convlens.storage import checkpoint as ckpt
    return sorted({ckpt.checkpoint_epoch(f) for f in ckpt.registered_checkpoints(run_dir)
                   if ckpt.first_verified([f])})


def final_weights(run_dir: Path) -> dict:
    from convlens.storage import checkpoint as ckpt
    return ckpt.load_checkpoint(ckpt.latest_verified(run_dir))["model"]


def assert_nothing_lost(run_dir: Path, epochs: int, steps_per_epoch: int, start_epochs: list[int],
                        reference: Path | None = None, atol: float = 0.0) -> None:
    """What "nothing lost" means after a fault, checked the same way in every scenario:
    every epoch in metrics.jsonl exactly once, epochs x steps done, the committed checkpoints
    contiguous up to the last epoch, each attempt started at the last committed epoch + 1
    (start_epochs, one per attempt), and, where given, the weights of an uninterrupted run
    (equal, or within atol)."""
    import torch
    history = read_metrics(run_dir)
    assert [m["epoch"] for m in history] == list(range(1, epochs + 1))
    assert history[-1]["steps"] == epochs * steps_per_epoch
    committed = committed_epochs(run_dir)
    assert committed and committed == list(range(committed[0], epochs + 1)), committed
    assert [a["start_epoch"] for a in read_attempts(run_dir)] == start_epochs
    if reference is not None:
        ours, theirs = final_weights(run_dir), final_weights(reference)
        assert ours.keys() == theirs.keys()
        for name in ours:
            assert torch.allclose(ours[name].double(), theirs[name].double(), rtol=0, atol=atol), name


def reordering_tolerance(epoch: int) -> float:
    """Relative tolerance for the losses of one worker vs N workers (same seed, global batch,
    model.sync_bn) at an epoch of the tiny 2-vs-1 run (10 steps per epoch, lr 0.01).

    With the same arithmetic everywhere (syncbn.GlobalBatchNorm2d on one worker too), what
    still differs is summation order: a worker sums its half of each weight gradient
    (64 x 28 x 28 terms in float32), about 5e-6 relative from the whole batch's sum (up to
    eps * sqrt(n) = 1.3e-5), and training amplifies that by about 10x per epoch. A pure
    reordering control, the same workers with 2 threads instead of 1, diverged by up to 2.4e-6,
    2.2e-5 and 7.1e-5 at epochs 1-3 on a 2-core AVX2 EPYC; 2 workers vs 1 by 1.7e-7, 4.3e-6
    and 7.7e-5. The bound is about 10x that: 1e-5 * 10 ** (epoch - 1). Real bugs show at epoch 1:
    2 workers without SyncBN are 1.5e-4 off there, a missing gradient average far more."""
    return 1e-5 * 10 ** (epoch - 1)


def steps_per_epoch(job) -> int:
    """Optimizer steps in one epoch of a tiny job, from its config alone."""
    n = job.data.train_subset
    steps = (n - round(n * job.data.val_fraction)) // job.data.batch_size
    return min(steps, job.run.steps_per_epoch or steps)


# ---------------------------------------------------------------- followed Slurm jobs (test_slurm, test_multinode)

EPOCH = re.compile(r"\[convlens\] (\S+) epoch (\d+)/(\d+): train loss")


def assert_calm_log(log: str, name: str, epochs: int) -> None:
    """Rank 0's log as issue 27 asks: no colour codes, no `ray start` banner or Ray advice, none of
    the warnings of a node without internet, every epoch line once and before the summary line."""
    for noise in ("\x1b[", "ray stop", "8.8.8.8", "[repeated", "hostname of the client socket"):
        assert noise not in log, noise
    lines = log.splitlines()
    epoch_lines = [i for i, line in enumerate(lines) if EPOCH.search(line) and f"] {name} epoch" in line]
    assert [EPOCH.search(lines[i]).group(2) for i in epoch_lines] == [str(e) for e in range(1, epochs + 1)], lines
    summary = [i for i, line in enumerate(lines) if line.startswith(f"[convlens] {name}: best epoch")]
    assert len(summary) == 1 and epoch_lines[-1] < summary[0], lines


def submit_cli(profile: Path, spec: Path, *extra: str, overrides: list[str] = (),
               timeout: float = 400) -> subprocess.CompletedProcess:
    """`convlens submit --wait [extra] train spec [overrides]` as a user runs it: its transcript and exit status."""
    return subprocess.run([sys.executable, "-m", "convlens.cli", "submit", "--cluster", str(profile), "--wait",
                           *extra, "train", str(spec), *overrides], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT / "lib")})


def assert_followed(transcript: str, name: str, epochs: int) -> str:
    """The --wait transcript: state changes, rank 0's progress and epoch lines, the outcome; returns the job id."""
    job_id = re.search(r"submitted slurm job (\d+)", transcript).group(1)
    assert f"[convlens] job {job_id}: RUNNING" in transcript
    assert re.search(rf"\[convlens\] {name} epoch 1/{epochs}: +\d+% \(", transcript)  # a progress line
    assert [m.group(2) for m in EPOCH.finditer(transcript)] == [str(e) for e in range(1, epochs + 1)]
    assert all(line.startswith(("[convlens]", "  ")) for line in transcript.splitlines()), transcript  # not Ray's
    last = transcript.rstrip("\n").splitlines()[-1]
    assert re.fullmatch(rf"\[convlens\] job {job_id} done: {name}: best val acc 0\.\d{{4}} at epoch \d, test acc "
                        rf"0\.\d{{4}}; run \S+/{name}; W&B group train-{name}", last), last
    return job_id
