"""Set-up as the people convlens is for: a user without root, Debian's packages absent, data from a
mirror; and CI's promise that nothing that needs root or a local Slurm was skipped.

The user test (about 3 min, most of it pip) makes a user with useradd (so it needs root), gives it a
fresh clone of this repository and runs, as that user, `make setup` and a one-epoch `convlens
train` on a machine that looks as if none of the Debian packages were installed: in a private mount
namespace the dpkg database lacks them and /usr/share/datasets is empty, so nothing can be read
from Debian's Fashion-MNIST. The data comes from a local HTTP server on 127.0.0.1 serving Debian's
archives as a site's mirror would.
"""
from __future__ import annotations

import os
import pwd
import re
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from conftest import IN_CI, lacking, mirror_server, require
from convlens.data.fashion_mnist import REMOTES

REPO = Path(__file__).resolve().parents[1]
USER = "convlens-user"
PARTS = ("fashion-mnist", "slurm", "browser", "namespaces")  # the Makefile's SYSTEM_PARTS
HIDDEN_DEBS = ("dataset-fashion-mnist", "slurmctld", "slurmd", "slurm-client", "munge", "chromium", "iproute2",
               "util-linux")
DEBIAN_DATA = "/usr/share/datasets"
FMNIST_FILES = [r.name for r in REMOTES.values()]  # the four .gz archives


@pytest.mark.skipif(not IN_CI, reason="checks CI's machine (CI=true)")
def test_ci_has_everything_the_tests_need():
    """Under CI every test runs: root, the local Slurm cluster's daemons, the namespaces' tools, chromium.
    (conftest turns any 'needs ...' skip under CI into a failure as well.)"""
    assert os.geteuid() == 0, "CI runs as root"
    assert [lacking(p) for p in ("root", "slurm", "namespaces", "chromium")] == [None] * 4


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    """A fresh user without root, its home, and a clone of this repository in it."""
    require("root")
    home = Path("/home") / USER
    remove_user()
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", USER], check=True)
    clone = home / "convlens"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    subprocess.run(["chown", "-R", f"{USER}:{USER}", str(clone)], check=True)
    yield home
    remove_user()


def remove_user() -> None:
    try:
        pwd.getpwnam(USER)
    except KeyError:
        return
    subprocess.run(["pkill", "-KILL", "-u", USER], check=False)  # a Ray left behind by a failed run
    time.sleep(0.5)
    subprocess.run(["userdel", "--remove", USER], check=False, capture_output=True)


def dpkg_status_without(debs, out: Path) -> Path:
    """Debian's package database with `debs` left out, as a machine without them has it."""
    stanzas = Path("/var/lib/dpkg/status").read_text().split("\n\n")
    out.write_text("\n\n".join(s for s in stanzas if not re.match(rf"Package: ({'|'.join(debs)})\n", s)))
    return out


def as_user(home: Path, script: str, status: Path, env: dict, timeout: int) -> subprocess.CompletedProcess:
    """`script` run by bash as USER in its clone, in a mount namespace without Debian's packages."""
    env = {"HOME": str(home), "USER": USER, "LOGNAME": USER, "PATH": "/usr/local/bin:/usr/bin:/bin",
           "LANG": "C.UTF-8", **{k: v for k, v in os.environ.items() if k.startswith("PIP_")}, **env}
    inner = (f"mount -t tmpfs none {DEBIAN_DATA} && mount --bind {status} /var/lib/dpkg/status && "
             f"exec runuser -u {USER} -- env -i {' '.join(f'{k}={v}' for k, v in env.items())} "
             f"bash -c 'cd ~/convlens && {script}'")
    start = time.time()
    proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "-c", inner],
                          capture_output=True, text=True, timeout=timeout)
    print(f"\n$ {script}  ({time.time() - start:.0f} s, {len(proc.stdout.splitlines())} lines)\n{proc.stdout}"
          f"{proc.stderr}")
    return proc


@pytest.mark.slow
def test_user_without_root_sets_up_and_trains_on_mirrored_data(user, tmp_path):
    home = user
    status = dpkg_status_without(HIDDEN_DEBS, tmp_path / "dpkg-status")
    status.chmod(0o644)
    with mirror_server() as mirror:
        # Debian's archives, served as a site's mirror would
        mirror.files = {name: (Path(DEBIAN_DATA) / "fashion-mnist" / name).read_bytes() for name in FMNIST_FILES}
        url, sent = mirror.url, mirror.gets
        setup = as_user(home, "make setup", status, {"CONVLENS_DATA": f"{home}/datasets",
                                                     "CONVLENS_DATA_MIRROR": url}, timeout=600)
        assert setup.returncode == 0, setup.stderr[-3000:]
        skipped = [line for line in setup.stdout.splitlines() if line.startswith("setup: skipping ")]
        assert [line.split()[2] for line in skipped] == list(PARTS), setup.stdout
        assert "the Slurm tests will be skipped" in skipped[1]
        assert "apt-get" not in setup.stdout + setup.stderr and "Permission denied" not in setup.stderr
        assert sorted(p.name for p in (home / "datasets/fashion-mnist").glob("*.gz")) == sorted(FMNIST_FILES)
        assert dict(sent) == {name: 1 for name in FMNIST_FILES}

        data = home / "fmnist"  # a second folder: this time the train job downloads into it
        train = as_user(home, f".venv/bin/convlens train jobs/fmnist_resnet.yaml run.epochs=1 run.workers=1 "
                              f"run.root={home}/runs data.path={data} data.mirror={url} data.train_subset=2048 "
                              f"data.test_subset=512 'model.layers=[1,1]' model.width=8 tracking.mode=disabled",
                        status, {}, timeout=300)
        assert train.returncode == 0, train.stderr[-3000:]
        assert dict(sent) == {name: 2 for name in FMNIST_FILES}
    for name in FMNIST_FILES:
        assert (data / name).stat().st_uid == pwd.getpwnam(USER).pw_uid
    assert f"reading fashion_mnist from {data} (verified, " in train.stdout
    run_dir = home / "runs/fmnist_resnet"
    spec = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert spec["data"]["path"] == str(data)
    assert [m["epoch"] for m in map(yaml.safe_load, (run_dir / "metrics.jsonl").read_text().splitlines())] == [1]
    assert DEBIAN_DATA not in train.stdout + train.stderr
