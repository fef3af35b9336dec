"""`convlens submit` on a real one-node Slurm cluster (slurm/cluster.sh), with real Ray inside. (A
requeued job resuming from its checkpoint, one W&B run across the requeue: tests/test_multinode.py's
two-node faults job.)

Needs root and the Debian Slurm packages (cluster.sh installs them when missing); skipped with the
reason where they are not (a user without root), never under CI.
"""
from __future__ import annotations

import csv
import re
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from conftest import require, tiny_spec

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster():
    require("slurm")
    start = time.time()
    subprocess.run(["bash", str(REPO / "slurm/cluster.sh"), "start"], check=True, timeout=300)
    print(f"\n[test_slurm] cluster.sh start took {time.time() - start:.1f} s")
    out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, check=True).stdout
    assert out.split()[0] in ("idle", "mixed", "allocated")
    yield


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def setup(tmp_path, cache_dir):
    """Profile (local cluster, outputs in tmp_path) + a factory for tiny train specs."""
    local = yaml.safe_load((REPO / "slurm/local.yaml").read_text())
    local.update(log_dir=str(tmp_path / "logs"), runs_root=str(tmp_path / "runs"), time_minutes=10)
    profile = write_yaml(tmp_path / "cluster.yaml", local)

    def spec(name, **sections):
        # run.root points elsewhere on purpose: the profile's runs_root must win
        return write_yaml(tmp_path / f"{name}.yaml", tiny_spec(tmp_path / "elsewhere", cache_dir, name, **sections))
    return profile, spec, tmp_path / "runs"


def test_four_node_gpu_script_and_ray_commands(tmp_path):
    """The batch script and Ray commands of a 4-node GPU profile (the bootstrap for real, on two
    nodes: tests/test_multinode.py)."""
    from convlens.launch.sbatch import sbatch_script
    from convlens.raycluster import nodes
    from convlens.raycluster.allocation import Allocation
    from convlens.specs.cluster import load_profile
    gpu = yaml.safe_load((REPO / "slurm/example_gpu_cluster.yaml").read_text())
    gpu.update(log_dir=str(tmp_path / "gpu_logs"))
    script = sbatch_script(load_profile(write_yaml(tmp_path / "gpu.yaml", gpu)), "train-big")
    for flag in ("--nodes=4", "--ntasks-per-node=1", "--gpus-per-node=4", "--cpus-per-task=32",
                 "--signal=USR2@120", "--exclusive", "--account=my-project", "--mem=262144M",
                 "--constraint='a100|h100'", "--time=240"):
        assert f"#SBATCH {flag}" in script, flag
    assert "module load cuda/12.4" in script and "srun" in script and "RAY_AUTH_MODE" in script

    port = nodes.ray_port("12345")
    assert nodes.ray_port("12345_3") == port and 20000 <= port < 30000
    alloc = Allocation(32, 4, 256 * 2**30)
    head = nodes.head_command("10.0.0.1", port, alloc)
    worker = nodes.worker_command("10.0.0.2", f"10.0.0.1:{port}", alloc)
    assert "--head" in head and f"--port={port}" in head and "--num-gpus=4" in head
    assert "--log-color=false" in head and any(a.startswith("--object-store-memory=") for a in worker)
    assert f"--address=10.0.0.1:{port}" in worker and "--head" not in worker


def array_sweep(tmp_path: Path, spec, **fields) -> Path:
    """A grid sweep over two learning rates of a tiny train spec (spec: the setup fixture's factory)."""
    sweep = {"kind": "sweep", "name": "arr", "root": str(tmp_path / "elsewhere"), "base": str(spec("base")),
             "space": {"optim.lr": {"grid": [0.1, 0.05]}}, "search": "grid", "num_samples": 1,
             "scheduler": {"name": "none"}, **fields}
    return write_yaml(tmp_path / "arr.yaml", sweep)


def test_array_refuses_asha_and_other_kinds(setup, tmp_path):
    from convlens.base.errors import ConfigError
    from convlens.cli import main
    from convlens.launch.slurm import submit
    profile, spec, runs = setup
    path = array_sweep(tmp_path, spec, scheduler={"name": "asha"})
    with pytest.raises(ConfigError, match="scheduler.name = asha: .* set scheduler.name=none or drop --array"):
        submit(profile, "sweep", path, array=True)
    with pytest.raises(ConfigError, match="--array runs the trials of a sweep"):
        submit(profile, "train", spec("single"), array=True)
    assert not runs.exists() and not (tmp_path / "logs").exists()  # refused before anything was written
    assert main(["sweep", str(path), "--collect"]) == 2  # no array.json: a clear error, not a traceback


def test_array_sweep_runs_one_task_per_trial(cluster, setup, tmp_path, capsys):
    from convlens.cli import main
    from convlens.launch.slurm import submit
    from convlens.specs.load import load_job
    from convlens.specs.train import TrainJob
    profile, spec, runs = setup
    path = array_sweep(tmp_path, spec)
    assert submit(profile, "sweep", path, array=True, wait=True, timeout=300) == 0
    out = capsys.readouterr().out
    array_id = re.search(r"submitted slurm array job (\d+): 2 trials of sweep arr, at most 4 at once", out).group(1)
    assert "W&B group: arr" in out
    for task in ("0", "1"):  # Slurm's array variables, as the task itself saw them
        log = (tmp_path / f"logs/{array_id}_{task}/{array_id}_{task}_0_log.out").read_text()
        assert f"slurm job {array_id}_{task} rank 0/1" in log and "convlens train" in log
    sweep_dir = runs / "arr"
    with open(sweep_dir / "trials.csv") as f:
        trials = list(csv.DictReader(f))
    assert sorted(float(r["config/optim.lr"]) for r in trials) == [0.05, 0.1]
    assert all(r["status"] == "completed" for r in trials), trials
    assert [r["best"] for r in trials].count("True") == 1
    assert all((Path(r["run_dir"]) / "summary.json").is_file() for r in trials)
    assert {Path(r["run_dir"]).parent for r in trials} == {sweep_dir / "trials"}
    best = load_job(sweep_dir / "best_job.yaml", [], "train")
    assert isinstance(best, TrainJob) and best.tracking.group == "arr"
    assert (sweep_dir / "curves.png").is_file()
    # --collect rebuilds the same table from the run directories
    (sweep_dir / "trials.csv").unlink()
    assert main(["sweep", str(path), f"root={runs}", "--collect"]) == 0
    with open(sweep_dir / "trials.csv") as f:
        assert list(csv.DictReader(f)) == trials


# ---------------------------------------------------------------- a sized Ray, a follower's lines (a followed job:
# tests/test_multinode.py's)

def test_ray_sized_to_the_allocation():
    """Ray's CPUs, GPUs and memory come from Slurm's variables; memory + object store fit the grant."""
    from convlens.raycluster.allocation import Allocation, granted, ray_init_kwargs, ray_start_args
    job = {"SLURM_JOB_ID": "7", "SLURM_CPUS_ON_NODE": "3", "SLURM_MEM_PER_NODE": "4096", "SLURM_GPUS_ON_NODE": "2"}
    alloc = granted(cpus=32, gpus=4, env=job)
    assert alloc == Allocation(3, 2, 4096 * 2**20)
    memory, store = alloc.ray_memory()
    assert memory + store <= alloc.mem_bytes and store >= 75 * 2**20 and memory > store
    assert ray_start_args(alloc) == ["--num-cpus=3", "--num-gpus=2", f"--memory={memory}",
                                     f"--object-store-memory={store}"]
    assert ray_init_kwargs(alloc) == {"num_cpus": 3, "num_gpus": 2, "_memory": memory, "object_store_memory": store}
    assert "3 CPUs, 2 GPUs, mem_gb 4.0" in alloc.describe()
    per_cpu = {"SLURM_JOB_ID": "7", "SLURM_CPUS_ON_NODE": "2", "SLURM_MEM_PER_CPU": "1024",
               "CUDA_VISIBLE_DEVICES": "0,1"}
    assert granted(8, 0, per_cpu) == Allocation(2, 2, 2048 * 2**20)
    assert granted(4, 1, {}) == Allocation(4, 1, None)  # outside Slurm: the profile's request, Ray's memory default
    outside = granted(4, 1, {})
    assert outside.ray_memory() is None and ray_start_args(outside) == ["--num-cpus=4", "--num-gpus=1"]


def test_follow_reads_own_lines_and_the_outcome_from_the_run(tmp_path):
    from convlens.launch.follow import LogTail, own_line, sweep_outcome
    assert own_line("(RayTrainWorker pid=12, ip=10.77.0.12) [convlens] r epoch 1/2: 50% (3/6 steps)") == \
        "[convlens] r epoch 1/2: 50% (3/6 steps)"
    for noise in ("2026-12-06 02:45:54,398\tINFO usage_lib.py:448 -- Usage stats collection is disabled.",
                  "submitit INFO (2026-12-06 02:45:50,714) - Loading pickle", "(pid=3) [W socket.cpp:207] [c10d]"):
        assert own_line(noise) is None
    log = tmp_path / "log.out"
    tail = LogTail(log)
    assert tail.lines() == []
    log.write_text("[convlens] a\n[convlens] b")  # b still being written
    assert tail.lines() == ["[convlens] a"]
    with open(log, "a") as f:
        f.write(" done\n")
    assert tail.lines() == ["[convlens] b done"] and tail.lines() == []
    trials = tmp_path / "sw" / "trials.csv"
    trials.parent.mkdir()
    trials.write_text("trial_id,config/optim.lr,status,best_epoch,best_val_accuracy,test_accuracy,run_dir,best\n"
                      "00001,0.1,completed,2,0.81,0.8,/r/t1,True\n00000,0.05,completed,2,0.7,0.69,/r/t0,False\n")
    assert sweep_outcome(trials, "sw", "g") == ("sweep sw: best trial 00001 (optim.lr=0.1): val acc 0.8100 at epoch 2, "
                                                f"test acc 0.8000; run /r/t1; sweep {trials.parent}; W&B group g")
