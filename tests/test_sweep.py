"""`convlens sweep`: Ray Tune trials, each a real Ray Train run on tiny Fashion-MNIST."""
from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import inject, tiny_spec
from test_sweep_status import assert_compact_status
from convlens.base.errors import ConfigError
from convlens.specs.load import load_job
from convlens.specs.train import TrainJob

LIB = str(Path(__file__).resolve().parents[1] / "lib")
FAST = {"epochs": 3, "steps_per_epoch": 5}
SMALL_DATA = {"train_subset": 512, "test_subset": 128}


def write_sweep(tmp_path, cache_dir, name, space, run=None, data=None, tracking=None, **fields) -> Path:
    """A base train spec and a sweep spec over it, both in tmp_path; returns the sweep spec path."""
    base = tiny_spec(tmp_path / "unused", cache_dir, "base", run={**FAST, **(run or {})},
                     data={**SMALL_DATA, **(data or {})}, tracking=tracking or {})
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    spec = {"kind": "sweep", "name": name, "root": str(tmp_path / "sweeps"), "base": str(tmp_path / "base.yaml"),
            "space": space, "search": "grid", "num_samples": 1, "max_concurrent": 2,
            "scheduler": {"name": "asha", "grace_period": 1, "reduction_factor": 2}, **fields}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def read_trials(sweep_dir: Path) -> list[dict]:
    with open(sweep_dir / "trials.csv") as f:
        return list(csv.DictReader(f))


def wait_cpus_free(ray, want: float, timeout: float = 30.0) -> float:
    deadline = time.time() + timeout
    while time.time() < deadline:
        free = ray.available_resources().get("CPU", 0)
        if free >= want:
            return free
        time.sleep(0.5)
    return ray.available_resources().get("CPU", 0)


def test_spec_is_validated_at_the_door(tmp_path, cache_dir):
    path = write_sweep(tmp_path, cache_dir, "v", {"optim.lr": {"grid": [0.1]}})
    with pytest.raises(ConfigError, match="space.optim.lrr: no such TrainJob field"):
        load_job(path, ["space.optim.lrr={choice: [0.1]}"], "sweep")
    with pytest.raises(ConfigError, match=r"schedule.milestones = \[5\]: \[5\] not before the last epoch"):
        load_job(path, ["space.schedule.milestones={choice: [[1], [5]]}"], "sweep")
    with pytest.raises(ConfigError, match="optim.lr = 0.0: Input should be greater than 0"):
        load_job(path, ["space.optim.lr={grid: [0.1, 0.0]}"], "sweep")
    with pytest.raises(ConfigError, match="base = '/nope.yaml': train spec not found"):
        load_job(path, ["base=/nope.yaml"], "sweep")
    with pytest.raises(ConfigError, match="scheduler.grace_period: 3 leaves ASHA nothing to stop in the base's 3 epochs"):
        load_job(path, ["scheduler.grace_period=3"], "sweep")
    with pytest.raises(ConfigError, match="loguniform cannot be enumerated"):
        load_job(path, ["space.optim.lr={loguniform: [0.001, 0.1]}"], "sweep")


@pytest.fixture
def other_ray():
    """A second private Ray on the machine, as another convlens command in another terminal runs."""
    proc = subprocess.Popen([sys.executable, "-c", "import ray, sys; ray.init(address='local', num_cpus=1, "
                             "include_dashboard=False, logging_level='ERROR'); print('up', flush=True); "
                             "sys.stdin.read()"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "up"
    yield
    proc.stdin.close()
    proc.wait(timeout=60)


def test_nan_trial_does_not_stop_the_others_and_array_draws_the_same_trials(ray_cluster, tmp_path, cache_dir,
                                                                              monkeypatch):
    """Two of three trials hit a non-finite loss (one before its first checkpoint, one after): each
    stops with its reason and the third completes. The same spec and seed give the same trials and
    run names in an `--array` sweep (start_array draws and records them in array.json; no Slurm needed)."""
    from convlens.sweep.array import start_array
    from convlens.sweep.tune_runner import sweep
    inject(monkeypatch, {"kind": "nan", "run": "*_00001", "at": "0:1:2"},
           {"kind": "nan", "run": "*_00002", "at": "0:2:2"})
    space = {"optim.name": {"choice": ["sgd", "adam"]}, "optim.lr": {"loguniform": [0.001, 0.1]},
             "run.seed": {"randint": [0, 1000]}}
    path = write_sweep(tmp_path, cache_dir, "nan", space, run={"epochs": 2}, search="random", num_samples=3,
                       seed=7, scheduler={"name": "none"})
    job = load_job(path, [], "sweep")
    sweep(job)
    rows = read_trials(job.sweep_dir)
    trials = {r["trial_id"][-5:]: r for r in rows}
    assert trials["00001"]["status"] == "stopped"
    assert "non-finite loss at epoch 1" in trials["00001"]["stop_reason"]
    # A NaN after a checkpoint exists still stops the trial (not finalized as if it completed).
    assert trials["00002"]["status"] == "stopped"
    assert "non-finite loss at epoch 2" in trials["00002"]["stop_reason"]
    assert trials["00001"]["best"] == trials["00002"]["best"] == "False"
    assert trials["00000"]["status"] == "completed" and trials["00000"]["best"] == "True"

    ran = {r["trial_id"]: {k: yaml.safe_load(r[f"config/{k}"]) for k in space} for r in rows}
    arrayed = load_job(path, ["name=arrayed"], "sweep")
    jobs = start_array(arrayed)
    recorded = json.loads((arrayed.sweep_dir / "array.json").read_text())["trials"]
    assert ran == recorded and len(recorded) == 3, (ran, recorded)
    assert len({t["optim.lr"] for t in recorded.values()}) == 3  # drawn per trial
    assert sorted(r["run"] for r in rows) == [f"nan_trial_{tid}" for tid in sorted(recorded)]
    assert sorted(j.run.name for j in jobs.values()) == [f"arrayed_trial_{tid}" for tid in sorted(recorded)]
    assert all(Path(r["run_dir"]).parent == job.sweep_dir / "trials" for r in rows)


def test_stopped_trial_is_closed_without_reading_its_dataset(tmp_path, cache_dir, monkeypatch):
    """The driver closes an ASHA-stopped trial's W&B run with the class names its checkpoint
    recorded (what the trial logged under): it reads neither the dataset's files nor its cache."""
    from convlens.data import fashion_mnist, load
    from convlens.storage import checkpoint as ckpt
    from convlens.storage.rundir import RunDir
    from convlens.sweep.tune_runner import close_stopped_trial
    from convlens.tracking import tracker
    run = RunDir(tmp_path / "asha_trial_00001")
    run.path.mkdir()
    spec = tiny_spec(tmp_path, cache_dir, run.name)
    (run / RunDir.CONFIG).write_text(yaml.safe_dump(spec))
    ckpt.save_checkpoint({"epoch": 1}, run / RunDir.folder_name(RunDir.CHECKPOINT, 1),
                         {"epoch": 1, "classes": fashion_mnist.CLASSES})
    reads = []
    monkeypatch.setattr(load, "read_cache", lambda path, real=load.read_cache: reads.append(path) or real(path))
    monkeypatch.setitem(load.LOADERS, "fashion_mnist",
                        lambda path, cfg, real=load.LOADERS["fashion_mnist"]: reads.append(path) or real(path, cfg))
    closed = []
    monkeypatch.setattr(tracker, "close_run", lambda job, run_dir, names, **kw: closed.append((names, kw)))
    monkeypatch.setenv("WANDB_MODE", "offline")
    close_stopped_trial({"run_dir": str(run.path), "stop_reason": "ASHA stopped it after epoch 1"})
    assert reads == []
    assert closed == [(fashion_mnist.CLASSES, {"stop_reason": "ASHA stopped it after epoch 1", "failed": False})]


def sweep_cli(spec: Path, *args: str) -> subprocess.Popen:
    import ray
    env = {**os.environ, "PYTHONPATH": LIB, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    return subprocess.Popen([sys.executable, "-m", "convlens.cli", "sweep", str(spec), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def check_sweep_run(sweep_dir: Path, wall: float, killed: float) -> None:
    """What `convlens sync` uploads of a sweep killed at `killed` and resumed: one run with the
    trials table, its runtime from the first start, system metrics and console of both drivers."""
    from convlens.tracking.sync import plan
    from wandb_reader import check_whole_job, read_run, read_tables, wait_finished
    chosen, superseded = plan(sweep_dir)
    run_id = (sweep_dir / "wandb_id.txt").read_text().strip()
    assert [s.run_id for s in chosen] == [run_id] and len(superseded) == 1  # the killed driver's segment
    wait_finished(chosen[0].folder, run_id)
    log = read_run(chosen[0].folder / f"run-{run_id}.wandb")
    assert (log.job_type, log.config["trials"], log.summary["completed"]) == ("sweep", 3, 3)
    assert len(read_tables(log, "trials")[0]["data"]) == 3
    assert log.start_time == pytest.approx(float((sweep_dir / "started.txt").read_text()), abs=0.01)
    text = check_whole_job(log, wall, 1.0)
    times = [s["time"] for s in log.stats]
    assert min(times) < killed < max(times)  # both drivers sampled
    said = [o["time"] for o in log.output if o["line"].strip()]
    assert min(said) < killed < max(said) and "[convlens] best trial" in text, text[-3000:]  # both drivers' lines


def test_sample_trials_grid_product_and_seeded_draws(tmp_path, cache_dir):
    from convlens.sweep.space import draw_trials
    path = write_sweep(tmp_path, cache_dir, "draws", {"optim.lr": {"grid": [0.1, 0.05]},
                                                      "optim.momentum": {"choice": [0.0, 0.9]}})
    grid = draw_trials(load_job(path, ["num_samples=3"], "sweep"))  # search: grid counts choice as a grid
    assert len(grid) == 2 * 2 * 3
    assert sorted((t["optim.lr"], t["optim.momentum"]) for t in grid[:4]) == [(0.05, 0.0), (0.05, 0.9),
                                                                              (0.1, 0.0), (0.1, 0.9)]
    assert grid[4:8] == grid[:4]
    space = ["space.optim.lr={loguniform: [0.001, 0.1]}", "space.optim.momentum={uniform: [0.5, 0.9]}",
             "space.run.epochs={randint: [1, 4]}", "search=random", "num_samples=50"]
    draws = draw_trials(load_job(path, space, "sweep"))
    assert len(draws) == 50
    assert all(0.001 <= t["optim.lr"] <= 0.1 and 0.5 <= t["optim.momentum"] <= 0.9 for t in draws)
    assert {t["run.epochs"] for t in draws} == {1, 2, 3}
    assert min(t["optim.lr"] for t in draws) < 0.01 < max(t["optim.lr"] for t in draws)  # log scale, not linear
    assert draw_trials(load_job(path, space, "sweep")) == draws
    assert draw_trials(load_job(path, [*space, "seed=1"], "sweep")) != draws


def test_asha_bench_runs_the_same_trials_with_asha_and_in_full(ray_cluster, other_ray, tmp_path, cache_dir, capsys):
    """python -m convlens.bench.asha: both sweeps train the same seeded configs; ASHA stops the trial
    at chance and the table says how many of the full run's epochs it trained. One trial at a time,
    the useful lr first: the trial at chance then meets a rung that has a result, so ASHA judges it
    (the first trial to reach a rung passes unjudged). (How many epochs it saves depends on how fast
    the stop reaches the trial's Train run: on a busy machine its second and last epoch may finish
    first, so the count is only bounded here.)
    The ASHA sweep is checked as a user sees one: its compact status, why each trial stopped, its
    best_job.yaml and curves; and with another Ray on the machine too, Ray Train's placement group
    cleaner must still find this cluster and free what the stopped trials held."""
    from convlens.bench.asha import main
    path = write_sweep(tmp_path, cache_dir, "bench", {"optim.lr": {"grid": [0.1, 1e-7]}},
                       run={"epochs": 2, "steps_per_epoch": 20}, data={"train_subset": 2000}, max_concurrent=1)
    figures = main([str(path), "--root", str(tmp_path / "bench")])
    out = capsys.readouterr()
    asha, full = (read_trials(tmp_path / "bench" / name) for name in ("asha", "full"))
    configs = {name: {r["trial_id"]: r["config/optim.lr"] for r in rows} for name, rows in (("asha", asha), ("full", full))}
    assert configs["asha"] == configs["full"] and len(configs["full"]) == 2
    assert [int(r["epochs"]) for r in full] == [2] * 2 and figures["full"]["epochs"] == 4
    assert {float(r["config/optim.lr"]): r["status"] for r in asha}[1e-7] == "early_stopped"  # it stays at chance
    assert figures["asha"]["epochs"] == sum(int(r["epochs"]) for r in asha) <= 4
    assert figures["asha"]["planned"] == figures["full"]["planned"] == 4
    assert f"ASHA trained {figures['asha']['epochs'] / 4:.0%} of the epochs in " in out.out

    # the ASHA sweep's own output: everything before the full sweep's first status line
    lines = (out.out + out.err).splitlines()
    asha_lines = lines[:next(i for i, line in enumerate(lines) if "[convlens] sweep full [" in line)]
    assert_compact_status(asha_lines, {r["trial_id"]: r for r in asha}, 2)
    assert {r["status"] for r in asha} <= {"completed", "early_stopped"}
    stopped = [r for r in asha if r["status"] == "early_stopped"]
    # ASHA decides on the epoch Tune saw; the nested Train run may write one more before it dies.
    stopped_at = [int(re.search(r"ASHA stopped it after epoch (\d+)", r["stop_reason"]).group(1)) for r in stopped]
    # ASHA's rungs lie before the last epoch: a trial that trained every epoch gets its test run.
    assert all(epoch < 2 for epoch in stopped_at), asha
    assert all(r["test_accuracy"] == "" for r in stopped), asha
    assert [r["planned_epochs"] for r in asha] == ["2"] * 2  # for the report's line
    trained = figures["asha"]["epochs"]
    assert f"2 trials trained {trained} of 4 epochs; early stopping saved {4 - trained} " in "\n".join(asha_lines)
    best = [r for r in asha if r["best"] == "True"]
    assert len(best) == 1 and best[0]["status"] == "completed" and float(best[0]["test_accuracy"]) > 0
    assert float(best[0]["config/optim.lr"]) == 0.1
    best_job = load_job(tmp_path / "bench/asha/best_job.yaml", [], "train")
    assert isinstance(best_job, TrainJob)
    assert best_job.optim.lr == float(best[0]["config/optim.lr"]) and best_job.tracking.group == "asha"
    assert (tmp_path / "bench/asha/curves.png").stat().st_size > 10_000
    # ASHA's stops tore the nested Train runs down: every CPU is free again.
    assert wait_cpus_free(ray_cluster, 4) >= 4
