"""The batch scripts `convlens submit` writes, read line by line, without Slurm: `--dry-run`, the
profile's `python`, and containers (Apptainer around the command, pyxis's flags on srun), which
cannot be installed here. Nothing is submitted: the CLI runs with no sbatch or srun on PATH, or
with a fake sbatch that would leave a mark.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from conftest import tiny_spec
from convlens.base.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
LIB = str(REPO / "lib")
GPU = REPO / "slurm/example_gpu_cluster.yaml"
CONTAINER = REPO / "slurm/example_container_cluster.yaml"
SUBMIT = "-u -m submitit.core._submit"


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def profile_from(tmp_path: Path, base: Path, name: str = "cluster.yaml", **fields) -> Path:
    data = yaml.safe_load(base.read_text())
    data.update(fields)
    return write_yaml(tmp_path / name, {k: v for k, v in data.items() if v is not None})


def dry_run_cli(args: list[str], cwd: Path, bin_dir: Path, home: Path | None = None) -> str:
    """`convlens submit --dry-run ARGS` in a fresh process whose PATH is bin_dir only."""
    env = {**os.environ, "PATH": str(bin_dir), "PYTHONPATH": LIB, "HOME": str(home or Path.home())}
    env.pop("TMPDIR", None)
    out = subprocess.run([sys.executable, "-m", "convlens.cli", "submit", "--dry-run", *args], cwd=cwd, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def sections(text: str) -> dict[str, list[str]]:
    """The batch script's sections ("Parameters", "setup", "command") of a dry run's output, as lines."""
    script = text[text.index("#!/bin/bash"):text.index("\n[convlens]", text.index("#!/bin/bash"))]
    out, name = {}, None
    for line in script.splitlines()[1:]:
        if line.startswith("# ") and not line.startswith("#SBATCH"):
            name = line[2:]
            out[name] = []
        elif line and name:
            out[name].append(line)
    return out


def resolved_spec(text: str) -> dict:
    head = text.index("\n", text.index("[convlens] resolved spec"))
    return yaml.safe_load(text[head:])


def srun(folder: str, *args: str) -> str:
    return shlex.join(["srun", "--unbuffered", "--output", f"{folder}/%j/%j_%t_log.out",
                       "--error", f"{folder}/%j/%j_%t_log.err", *args])


@pytest.fixture
def bare(tmp_path):
    """A directory for PATH with neither sbatch nor srun in it."""
    path = tmp_path / "bin"
    path.mkdir()
    return path


@pytest.fixture
def fake_sbatch(tmp_path):
    """A PATH directory whose sbatch and srun only leave a mark: a dry run must not call them."""
    path, mark = tmp_path / "fakebin", tmp_path / "sbatch-called"
    path.mkdir()
    for name in ("sbatch", "srun"):
        (path / name).write_text(f"#!/bin/sh\necho {name} >> {mark}\necho 'Submitted batch job 1'\n")
        (path / name).chmod(0o755)
    return path, mark


def test_dry_run_gpu_cluster_prints_script_and_spec(tmp_path, bare):
    """slurm/example_gpu_cluster.yaml as it is: every #SBATCH line, the setup lines, the command and
    the resolved spec, on a machine without Slurm, and nothing is written under its log_dir."""
    from convlens.launch.slurm import resolve_job
    from convlens.specs.cluster import load_profile
    spec = REPO / "jobs/fmnist_resnet.yaml"
    overrides = ["run.workers=16", "run.use_gpu=true"]
    existed = Path("/shared/convlens").exists()
    text = dry_run_cli(["--cluster", str(GPU), "train", str(spec), *overrides], tmp_path, bare)
    logs = "/shared/convlens/slurm_logs"
    script = sections(text)
    assert script["Parameters"] == [
        "#SBATCH --account=my-project", "#SBATCH --constraint='a100|h100'", "#SBATCH --cpus-per-task=32",
        f"#SBATCH --error={logs}/%j/%j_0_log.err", "#SBATCH --exclusive", "#SBATCH --gpus-per-node=4",
        "#SBATCH --job-name=convlens-train-fmnist_resnet", "#SBATCH --mail-type=FAIL", "#SBATCH --mem=262144M",
        "#SBATCH --nodes=4", "#SBATCH --ntasks-per-node=1", "#SBATCH --open-mode=append",
        f"#SBATCH --output={logs}/%j/%j_0_log.out", "#SBATCH --partition=gpu", "#SBATCH --qos=normal",
        "#SBATCH --signal=USR2@120", "#SBATCH --time=240", "#SBATCH --wckey=submitit"]
    assert script["setup"] == [
        f"export PYTHONPATH={LIB}", f"export CONVLENS_SLURM_FOLDER={logs}/$SLURM_JOB_ID", "unset WANDB_SERVICE",
        'export RAY_AUTH_MODE="${RAY_AUTH_MODE:-token}"', "module load cuda/12.4",
        "source /shared/envs/convlens/.venv/bin/activate", "export WANDB_MODE=offline",
        "export NCCL_SOCKET_IFNAME=ib0"]
    # the profile's python, not this process's interpreter
    assert script["command"] == [
        "export SUBMITIT_EXECUTOR=slurm",
        f"{srun(logs)} /shared/envs/convlens/.venv/bin/python {SUBMIT} {logs}/%j"]
    assert f"  convlens train {logs}/specs/train-fmnist_resnet-<time>.yaml" in text.splitlines()
    assert "rank 0 starts the Ray head" in text
    want = resolve_job("train", spec, overrides, load_profile(GPU)).model_dump(mode="json")
    assert resolved_spec(text) == want
    assert want["run"]["root"] == "/shared/convlens/runs" and want["run"]["workers"] == 16
    assert Path("/shared/convlens").exists() == existed  # nothing made under log_dir or runs_root


def test_dry_run_writes_and_submits_nothing(tmp_path, fake_sbatch, cache_dir):
    """With sbatch and srun on PATH: neither is called, and neither log_dir nor runs_root appears."""
    bin_dir, mark = fake_sbatch
    profile = profile_from(tmp_path, REPO / "slurm/local.yaml", log_dir=str(tmp_path / "logs"),
                           runs_root=str(tmp_path / "runs"))
    spec = write_yaml(tmp_path / "tiny.yaml", tiny_spec(tmp_path / "elsewhere", cache_dir))
    text = dry_run_cli(["--cluster", str(profile), "train", str(spec)], tmp_path, bin_dir)
    command = sections(text)["command"][1]
    assert command == f"{srun(str(tmp_path / 'logs'))} {shlex.quote(sys.executable)} {SUBMIT} {tmp_path}/logs/%j"
    assert "  convlens train " in text and "one task, with a Ray of its own" in text
    assert not mark.exists() and not (tmp_path / "logs").exists() and not (tmp_path / "runs").exists()
    assert not (tmp_path / "elsewhere").exists()


def test_dry_run_array_shows_every_trial(tmp_path, fake_sbatch, cache_dir):
    """--array --dry-run: one array script of the trials drawn, each task's trial; array.json unwritten."""
    bin_dir, mark = fake_sbatch
    profile = profile_from(tmp_path, REPO / "slurm/local.yaml", log_dir=str(tmp_path / "logs"),
                           runs_root=str(tmp_path / "runs"))
    base = write_yaml(tmp_path / "base.yaml", tiny_spec(tmp_path / "elsewhere", cache_dir, "base"))
    sweep = write_yaml(tmp_path / "arr.yaml", {
        "kind": "sweep", "name": "arr", "base": str(base), "space": {"optim.lr": {"grid": [0.1, 0.05]}},
        "search": "grid", "num_samples": 1, "scheduler": {"name": "none"}})
    text = dry_run_cli(["--cluster", str(profile), "--array", "sweep", str(sweep)], tmp_path, bin_dir)
    params = sections(text)["Parameters"]
    assert "#SBATCH --array=0-1%2" in params and f"#SBATCH --output={tmp_path}/logs/%A_%a/%A_%a_0_log.out" in params
    trials = [line for line in text.splitlines() if line.startswith("  convlens train ")]
    assert [line.split("# ")[1] for line in trials] == ["trial 00000: optim.lr=0.1", "trial 00001: optim.lr=0.05"]
    assert not mark.exists() and not (tmp_path / "runs").exists() and not (tmp_path / "logs").exists()


def container_profile(tmp_path: Path, **container) -> Path:
    data = yaml.safe_load(CONTAINER.read_text())
    data["container"] = {**data["container"], **container}
    return write_yaml(tmp_path / "container.yaml", data)


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A submit directory, a home and a data folder apart from each other; the spec names the data."""
    work, home, data = tmp_path / "work", tmp_path / "home", tmp_path / "data"
    for d in (work, home, data):
        d.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("PYTHONPATH", LIB)
    spec = tiny_spec(Path("runs"), "~/.cache/convlens")
    spec["data"]["path"] = str(data)
    path = write_yaml(work / "tiny.yaml", spec)
    # what the job needs bound, in the order written: outer folders only, sorted
    binds = sorted(["/shared/convlens/runs", "/shared/convlens/slurm_logs", str(data),
                    str(home / ".cache/convlens"), str(work)] + ([LIB] if not LIB.startswith(str(work)) else []))
    return path, binds


def test_apptainer_wraps_the_command(tmp_path, site, capsys):
    """slurm/example_container_cluster.yaml: `apptainer exec --nv --bind ... IMAGE python3` after srun,
    the job's paths bound at the same place, the profile's extra mounts last; the rest as without."""
    from convlens.launch.slurm import submit
    spec, binds = site
    text = submit(CONTAINER, "train", spec, ["run.use_gpu=true"], dry_run=True)
    assert text == capsys.readouterr().out
    logs = "/shared/convlens/slurm_logs"
    script = sections(text)
    assert script["command"] == ["export SUBMITIT_EXECUTOR=slurm", (
        f"{srun(logs)} apptainer exec --nv --bind {','.join(binds + ['/shared/datasets'])} "
        f"/shared/images/convlens.sif python3 {SUBMIT} {logs}/%j")]
    assert script["setup"] == [
        f"export PYTHONPATH={LIB}", f"export CONVLENS_SLURM_FOLDER={logs}/$SLURM_JOB_ID", "unset WANDB_SERVICE",
        'export RAY_AUTH_MODE="${RAY_AUTH_MODE:-token}"', "module load apptainer", "export WANDB_MODE=offline"]
    assert "#SBATCH --nodes=2" in script["Parameters"] and "#SBATCH --gpus-per-node=4" in script["Parameters"]
    # not made yet: the site's datasets, which a submission would refuse (the data cache, which the
    # job fills, a submission creates)
    assert "[convlens] not found here (a container binds existing paths only): /shared/datasets" in text.splitlines()


def test_apptainer_nv_follows_the_gpus(tmp_path, site):
    from convlens.launch.slurm import submit
    spec, _ = site
    profile = yaml.safe_load(container_profile(tmp_path, nv=None).read_text())
    cpu = write_yaml(tmp_path / "cpu.yaml", {**profile, "gpus_per_node": 0})
    command = sections(submit(cpu, "train", spec, dry_run=True))["command"][1]
    assert " apptainer exec --bind " in command and "--nv" not in command
    gpu = write_yaml(tmp_path / "gpu.yaml", profile)
    assert " apptainer exec --nv --bind " in sections(submit(gpu, "train", spec, dry_run=True))["command"][1]


def test_pyxis_flags_on_srun(tmp_path, site):
    """pyxis: the image, the mounts as SRC:DST and the submit directory as srun flags, python3 after."""
    from convlens.launch.slurm import submit
    spec, binds = site
    data = yaml.safe_load(CONTAINER.read_text())
    data["container"] = {"runtime": "pyxis", "image": "nvcr.io#nvidia/pytorch:24.05-py3",
                         "mounts": ["/shared/datasets:/datasets:ro"]}
    profile = write_yaml(tmp_path / "pyxis.yaml", data)
    logs = "/shared/convlens/slurm_logs"
    command = sections(submit(profile, "train", spec, dry_run=True))["command"]
    mounts = ",".join([f"{b}:{b}" for b in binds] + ["/shared/datasets:/datasets:ro"])
    flags = ["--container-image=nvcr.io#nvidia/pytorch:24.05-py3", f"--container-mounts={mounts}",
             f"--container-workdir={Path.cwd()}"]
    assert command == ["export SUBMITIT_EXECUTOR=slurm", f"{srun(logs, *flags)} python3 {SUBMIT} {logs}/%j"]
    assert "apptainer" not in command[1]
    data["container"]["nv"] = True
    with pytest.raises(ConfigError, match="container.nv is Apptainer's flag"):
        submit(write_yaml(tmp_path / "pyxis_nv.yaml", data), "train", spec, dry_run=True)


def test_mounts_follow_the_spec_files(tmp_path, monkeypatch):
    """A sweep's base spec is read on the node: the paths it names are bound too; outer folders only."""
    from convlens.launch.container import job_paths
    from convlens.specs.cluster import ClusterProfile
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PYTHONPATH", raising=False)
    base = write_yaml(tmp_path / "base.yaml", {"kind": "train", "data": {"path": "/data/fmnist",
                                                                         "cache_dir": "/data/fmnist/cache"}})
    sweep = {"kind": "sweep", "base": str(base), "root": "/shared/runs", "base_overrides": {"tracking.dir": "/"}}
    profile = ClusterProfile(log_dir="/shared/logs", runs_root="/shared/runs/mine",
                             container={"runtime": "apptainer", "image": "x.sif"})
    assert job_paths(profile, [sweep]) == ["/data/fmnist", "/shared/logs", "/shared/runs", str(tmp_path)]


def test_profile_python_and_container_python(tmp_path, site):
    """python: what the nodes run, by that path; inside a container, the image's interpreter."""
    from convlens.launch.slurm import submit
    spec, _ = site
    local = profile_from(tmp_path, REPO / "slurm/local.yaml", "site.yaml", python="/opt/site/py 3.11/bin/python",
                         log_dir=str(tmp_path / "logs"))
    command = sections(submit(local, "train", spec, dry_run=True))["command"][1]
    assert command.endswith(f" '/opt/site/py 3.11/bin/python' {SUBMIT} {tmp_path}/logs/%j")
    data = yaml.safe_load(CONTAINER.read_text())
    boxed = write_yaml(tmp_path / "boxed.yaml", {**data, "python": "/opt/conda/bin/python"})
    command = sections(submit(boxed, "train", spec, dry_run=True))["command"][1]
    assert f" /shared/images/convlens.sif /opt/conda/bin/python {SUBMIT} " in command


def fake_python(folder: Path) -> Path:
    exe = folder / "venv/bin/python"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    return exe


def test_node_local_interpreter_is_refused(tmp_path, monkeypatch, cache_dir):
    """The default interpreter is run by its path on every node: one under a node-local folder is
    refused at submission (before anything is written) and by a dry run, with what to set."""
    from convlens.launch.slurm import submit
    folder = Path(tempfile.mkdtemp(dir="/tmp", prefix="convlens-test-venv-"))
    try:
        monkeypatch.setattr(sys, "executable", str(fake_python(folder)))
        profile = profile_from(tmp_path, REPO / "slurm/local.yaml", log_dir=str(tmp_path / "logs"),
                               runs_root=str(tmp_path / "runs"), nodes_on_this_machine=False)
        spec = write_yaml(tmp_path / "tiny.yaml", tiny_spec(tmp_path / "runs", cache_dir))
        message = (f"the compute nodes would run this Python, {folder}/venv/bin/python, but /tmp is local "
                   f"to each node: set `python:` in the cluster profile to an interpreter every node has "
                   f"(a virtualenv on shared storage), or run the job in a `container:`")
        for dry_run in (True, False):
            with pytest.raises(ConfigError, match=re.escape(message)):
                submit(profile, "train", spec, dry_run=dry_run)
        assert not (tmp_path / "logs").exists() and not (tmp_path / "runs").exists()
        # the profile's python (or a container) is what a site sets instead
        with_python = profile_from(tmp_path, profile, "with_python.yaml", python="/shared/venv/bin/python")
        assert "/shared/venv/bin/python -u -m" in submit(with_python, "train", spec, dry_run=True)
        # the local test cluster's nodes are this machine: its /tmp is theirs
        here = profile_from(tmp_path, profile, "here.yaml", nodes_on_this_machine=True)
        assert f"{folder}/venv/bin/python -u -m" in submit(here, "train", spec, dry_run=True)
    finally:
        shutil.rmtree(folder)


def test_node_local_folders(monkeypatch):
    """/tmp, /var/tmp, /dev/shm, /run and the job's TMPDIR (a Slurm site's per-job scratch), never "/"."""
    from convlens.launch.container import node_local_dirs
    monkeypatch.setenv("TMPDIR", "/scratch/job42")
    assert node_local_dirs() == [Path(d).resolve() for d in ("/tmp", "/var/tmp", "/dev/shm", "/run")] + \
        [Path("/scratch/job42")]
    monkeypatch.setenv("TMPDIR", "/")
    assert Path("/") not in node_local_dirs()


def test_missing_bind_source_is_refused_before_writing(tmp_path, site, cache_dir):
    from convlens.launch.slurm import submit
    spec, _ = site
    data = yaml.safe_load(CONTAINER.read_text())
    data.update(log_dir=str(tmp_path / "logs"), runs_root=str(tmp_path / "runs"))
    data["container"]["mounts"] = [str(tmp_path / "datasets")]
    profile = write_yaml(tmp_path / "container.yaml", data)
    with pytest.raises(ConfigError, match=rf"container: {tmp_path}/datasets not found here; apptainer cannot "
                                          r"bind a missing path into the job: create it"):
        submit(profile, "train", spec)
    assert not (tmp_path / "logs").exists() and not (tmp_path / "runs").exists()
    assert not (tmp_path / "home/.cache/convlens").exists()  # refused before anything was made


def test_folders_the_job_fills_are_made_for_the_container():
    """A first run's data cache and download folder need not exist: submit makes them to bind them."""
    from convlens.launch.container import job_folders
    spec = {"data": {"cache_dir": "/x/cache", "path": "/x/data", "download": True}, "run": {"root": "/r"}}
    assert job_folders([spec, {"kind": "sweep"}]) == ["/x/cache", "/x/data"]
    assert job_folders([{"data": {**spec["data"], "download": False}}]) == ["/x/cache"]


def test_script_without_container_is_unchanged(tmp_path):
    """Profiles without python or container: the submitter's interpreter by path, as before, and
    the preview writes exactly what the real executor would (needs srun only for the latter)."""
    from convlens.launch.sbatch import batch_script, make_executor, sbatch_script
    from convlens.specs.cluster import load_profile
    for name in ("local.yaml", "local2.yaml"):
        profile = load_profile(REPO / "slurm" / name)
        script = sbatch_script(profile, "train-x")
        folder = str(profile.folder.parent)
        assert script.splitlines()[-1] == f"{srun(folder)} {shlex.quote(sys.executable)} {SUBMIT} {folder}/%j"
        assert "container" not in script and "apptainer" not in script
        if shutil.which("srun"):
            real = make_executor(profile, "convlens-train-x", profile.nodes > 1)
            assert batch_script(real) == script


def test_wait_and_dry_run_exclude_each_other(capsys):
    from convlens.cli import main
    with pytest.raises(SystemExit) as exit_:
        main(["submit", "--cluster", str(GPU), "--wait", "--dry-run", "train", "jobs/fmnist_resnet.yaml"])
    assert exit_.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_ray_and_node_address_inside_a_container(tmp_path, monkeypatch):
    """In an image, `ray` may not sit beside python3, and Slurm's scontrol is absent."""
    from convlens.raycluster import nodes
    exe = fake_python(tmp_path)
    monkeypatch.setattr(sys, "executable", str(exe))
    tools = tmp_path / "usr-local-bin"
    tools.mkdir()
    (tools / "ray").write_text("#!/bin/sh\n")
    (tools / "ray").chmod(0o755)
    monkeypatch.setenv("PATH", str(tools))
    assert nodes.ray_bin() == str(tools / "ray")
    (exe.parent / "ray").write_text("#!/bin/sh\n")
    assert nodes.ray_bin() == str(exe.parent / "ray")  # a virtualenv's own first
    assert nodes.node_address("localhost", shared=False) == "127.0.0.1"  # no scontrol on PATH


def test_wandb_group_named_at_submission_is_the_one_the_runs_use(tmp_path, cache_dir):
    """A training run without tracking.group goes to a group named after it; a sweep's trials to
    the sweep's group; the analysis names none (its runs join each analysed run's group)."""
    from convlens.launch.follow import wandb_group
    from convlens.specs.load import load_job
    train = write_yaml(tmp_path / "t.yaml", tiny_spec(tmp_path, cache_dir, "solo"))
    assert wandb_group(load_job(train, [], "train")) == "solo"
    assert wandb_group(load_job(train, ["tracking.group=mine"], "train")) == "mine"
    assert wandb_group(load_job(REPO / "sweeps/fmnist_small.yaml", [], "sweep")) == "fmnist_small"
    assert wandb_group(load_job(REPO / "jobs/analyze_demo.yaml", [], "analyze")) is None
