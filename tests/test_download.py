"""Datasets that download themselves, from an HTTP server on 127.0.0.1 that this file starts and
stops: verified content, atomic files, one download among many processes, the offline error."""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import signal
import socket
import subprocess
import sys
import tarfile
import time
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from convlens.base.errors import ConfigError, DataError, DownloadError
from convlens.cli import main
from convlens.data import cifar, download, fashion_mnist
from convlens.data.load import fetch_and_verify, load_dataset
from convlens.specs import train as train_spec
from convlens.specs.base import validate
from convlens.specs.train import DataConfig
from conftest import FMNIST, mirror_server
from test_data import make_idx_dataset, write_cifar

LIB = str(Path(__file__).resolve().parents[1] / "lib")
NAMES = [r.name for r in fashion_mnist.REMOTES.values()]  # the four .gz archives
LABELS = "train-labels-idx1-ubyte.gz"  # the smallest file, for the refusal tests


@pytest.fixture
def server():
    with mirror_server() as files:
        yield files


@pytest.fixture(scope="module")
def debian() -> dict[str, bytes]:
    """Debian's Fashion-MNIST archives (re-compressed by Debian: other .gz bytes than published)."""
    return {name: (FMNIST / name).read_bytes() for name in NAMES}


def data_cfg(path: Path, mirror: str | None = None, **extra) -> DataConfig:
    return DataConfig(path=str(path), mirror=mirror, cache_dir=str(path.parent / "cache"), **extra)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(download.TEMP_PREFIX))


def test_published_locations_and_checksums_are_torchvisions():
    from torchvision.datasets import CIFAR10, FashionMNIST
    assert fashion_mnist.MIRRORS == tuple(FashionMNIST.mirrors)
    assert [r.name for r in fashion_mnist.REMOTES.values()] == [name for name, _ in FashionMNIST.resources]
    assert fashion_mnist.REMOTES[fashion_mnist.FILES["train_x"]].urls == (
        FashionMNIST.mirrors[0] + "train-images-idx3-ubyte.gz",)
    assert set(NAMES) == set(train_spec.FASHION_MNIST_ARCHIVES)  # what the default path looks for
    assert cifar.ARCHIVE.urls == (CIFAR10.url,) and cifar.ARCHIVE.name == CIFAR10.filename
    assert cifar.ARCHIVE.checksum == "md5:" + CIFAR10.tgz_md5 and cifar.FOLDER == CIFAR10.base_folder
    assert cifar.MD5 == {**dict(CIFAR10.train_list + CIFAR10.test_list), CIFAR10.meta["filename"]: CIFAR10.meta["md5"]}


def test_debian_and_regzipped_copies_verify(tmp_path, debian):
    """The checksum is of the content: Debian's archives and a re-gzipped copy (other .gz bytes)
    both pass; so does an uncompressed copy."""
    fashion_mnist.verify(FMNIST)
    copy = tmp_path / "regzipped"
    copy.mkdir()
    for name, body in debian.items():
        again = gzip.compress(gzip.decompress(body), compresslevel=1, mtime=0)
        assert hashlib.md5(again).digest() != hashlib.md5(body).digest()
        (copy / name).write_bytes(again)
    fashion_mnist.verify(copy)
    (copy / LABELS).unlink()
    (copy / LABELS.removesuffix(".gz")).write_bytes(gzip.decompress(debian[LABELS]))
    fashion_mnist.verify(copy)


def test_files_in_data_path_that_fail_verification_are_reported_not_removed(tmp_path):
    folder = make_idx_dataset(tmp_path / "fm")  # Fashion-MNIST's names, random content
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz: not Fashion-MNIST's file .*"
                                        r"remove it to download it again, or set data.download: false"):
        load_dataset(data_cfg(folder))
    assert sorted(p.name for p in folder.iterdir()) == sorted(NAMES)
    assert len(load_dataset(data_cfg(folder, download=False)).train_y) == 40  # read as it is


def test_download_through_data_mirror_lands_verified_files(tmp_path, server, debian):
    """data.mirror serves Debian's archives: each is fetched once into data.path, verified, and
    the dataset loads; a second load downloads nothing."""
    server.files = dict(debian)
    folder = tmp_path / "new" / "fashion-mnist"  # created by the download
    assert fetch_and_verify(data_cfg(folder, server.url)) == (
        f"fashion_mnist in {folder}: downloaded {', '.join(NAMES)}; verified")
    assert all((folder / name).read_bytes() == body for name, body in debian.items())
    assert server.gets == {name: 1 for name in NAMES} and leftovers(folder) == []
    data = load_dataset(data_cfg(folder, server.url, train_subset=100))
    assert data.train_x.shape == (100, 1, 28, 28) and len(data.test_y) == 10000
    assert server.gets == {name: 1 for name in NAMES}


def test_environment_chooses_the_folder_and_the_mirror(tmp_path, server, debian, monkeypatch):
    """Unset data.path: Debian's folder when it holds the files, else $CONVLENS_DATA/<dataset>;
    unset data.mirror: $CONVLENS_DATA_MIRROR."""
    assert DataConfig().path == str(FMNIST)
    monkeypatch.setenv("CONVLENS_DATA", str(tmp_path / "datasets"))
    monkeypatch.setenv("CONVLENS_DATA_MIRROR", server.url)
    assert DataConfig(dataset="cifar10").path == str(tmp_path / "datasets" / "cifar10")
    monkeypatch.setattr(train_spec, "DEBIAN_FASHION_MNIST", str(tmp_path / "no-debian-package"))
    cfg = DataConfig(cache_dir=str(tmp_path / "cache"))
    assert cfg.path == str(tmp_path / "datasets" / "fashion-mnist") and cfg.mirror is None
    server.files = dict(debian)
    assert "downloaded" in fetch_and_verify(cfg)
    assert server.gets == {name: 1 for name in NAMES}
    with pytest.raises(ConfigError, match="path = None: required for data.dataset = 'image_folder'"):
        validate(DataConfig, {"dataset": "image_folder"})


@pytest.mark.parametrize("damage", ["truncated", "corrupted"])
def test_a_damaged_download_is_refused_and_removed(tmp_path, server, debian, damage, capsys):
    folder = tmp_path / "fm"
    folder.mkdir()
    for name in NAMES:
        if name != LABELS:
            (folder / name).write_bytes(debian[name])
    server.files = dict(debian)
    if damage == "truncated":
        server.truncate = {LABELS}  # full Content-Length, half the body, then the connection closes
    else:
        labels = bytearray(gzip.decompress(debian[LABELS]))
        labels[100] ^= 1
        server.files[LABELS] = gzip.compress(bytes(labels))
    with pytest.raises(DownloadError, match=f"the download of Fashion-MNIST {LABELS} from {server.url}{LABELS} "
                                            f"was refused and removed"):
        load_dataset(data_cfg(folder, server.url))
    assert not (folder / LABELS).exists() and leftovers(folder) == []
    server.files, server.truncate = dict(debian), set()  # the next try gets the real file
    assert main(["fetch-data", str(spec_file(tmp_path, folder, server.url))]) == 0
    assert (folder / LABELS).read_bytes() == debian[LABELS] and server.gets == {LABELS: 2}


def spec_file(tmp_path: Path, folder: Path, mirror: str, dataset: str = "fashion_mnist") -> Path:
    spec = tmp_path / "job.yaml"
    spec.write_text(yaml.safe_dump({"kind": "train", "data": {"dataset": dataset, "path": str(folder),
                                                              "mirror": mirror}}))
    return spec


FETCH = """
import sys, time
from pathlib import Path
from convlens.data.load import fetch
from convlens.specs.train import DataConfig
go = Path(sys.argv[1])
print("ready", flush=True)
while not go.exists():
    time.sleep(0.01)
print("fetched:", fetch(DataConfig(path=sys.argv[2], mirror=sys.argv[3])), flush=True)
"""


def test_four_processes_on_an_empty_cache_download_each_file_once(tmp_path, server, debian):
    """Four processes released together: one downloads under the lock (slowly: 0.05 s per MiB),
    the others wait, then find every file there; the server sends each file once."""
    server.files, server.delay = dict(debian), 0.05
    folder, go = tmp_path / "shared" / "fashion-mnist", tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", FETCH, str(go), str(folder), server.url], text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": LIB})
             for _ in range(4)]
    for p in procs:
        assert p.stdout.readline() == "ready\n"
    go.touch()
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err[-2000:] for _, err in outs]
    assert server.gets == {name: 1 for name in NAMES}
    stdout = [out for out, _ in outs]
    assert sum("downloading Fashion-MNIST" in out for out in stdout) == 1
    assert sum("waiting for another process's download of Fashion-MNIST" in out for out in stdout) >= 1
    assert sorted(out.splitlines()[-1] for out in stdout) == sorted(["fetched: []"] * 3 + [f"fetched: {NAMES}"])
    assert sorted(p.name for p in folder.iterdir()) == sorted([*NAMES, download.LOCK_NAME])
    assert all((folder / name).read_bytes() == body for name, body in debian.items())


HOLD = """
import sys, time
from pathlib import Path
from convlens.data.download import folder_lock
folder = Path(sys.argv[1])
with folder_lock(folder, "Fashion-MNIST"):
    (folder / ".download-killed-train-labels-idx1-ubyte.gz").write_bytes(b"half a file")
    print("held", flush=True)
    time.sleep(300)
"""


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path, server, debian):
    """A process holding the lock mid-download is SIGKILLed: the kernel drops its flock, the next
    process takes the lock, removes the killed one's partial file and downloads."""
    from filelock import FileLock
    folder = tmp_path / "fm"
    folder.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": LIB})
    assert holder.stdout.readline() == "held\n"
    with pytest.raises(TimeoutError):  # filelock's Timeout: held by the live process
        FileLock(folder / download.LOCK_NAME).acquire(timeout=0.2)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=30)
    assert (folder / download.LOCK_NAME).exists() and leftovers(folder)  # what the killed process left
    with FileLock(folder / download.LOCK_NAME).acquire(timeout=10):  # bounded: free once its holder died
        pass
    server.files = dict(debian)
    assert "downloaded" in fetch_and_verify(data_cfg(folder, server.url))
    assert leftovers(folder) == [] and server.gets == {name: 1 for name in NAMES}


def test_a_filesystem_without_locks_warns_once_and_still_downloads(tmp_path, server, debian, monkeypatch, capsys):
    import errno

    import filelock

    def refuse(self, *args, **kwargs):
        raise OSError(errno.ENOLCK, "No locks available")
    monkeypatch.setattr(filelock.FileLock, "acquire", refuse)
    server.files = dict(debian)
    assert "downloaded" in fetch_and_verify(data_cfg(tmp_path / "fm", server.url))
    out = capsys.readouterr().out
    assert out.count("warning: cannot lock") == 1 and "No locks available" in out
    assert server.gets == {name: 1 for name in NAMES}


def test_offline_error_names_the_files_their_urls_and_the_folder(tmp_path, capsys):
    """Nothing listens at the mirror: exit 1, one line with every missing file, its URL, the
    folder to put it in, and fetch-data."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"  # closed when the block ends
    folder = tmp_path / "fm"
    assert main(["fetch-data", str(spec_file(tmp_path, folder, dead))]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("convlens: error: cannot download Fashion-MNIST (")
    assert "Connection refused" in err and f" in {folder}, or run `convlens fetch-data SPEC` where there" in err
    for name in NAMES:
        assert f"{name} ({dead}/{name})" in err
    assert sorted(p.name for p in folder.iterdir()) == [download.LOCK_NAME]


def test_a_silent_server_counts_as_offline_after_the_timeout(tmp_path, monkeypatch):
    """A connection that never answers (a dead network) fails after download.TIMEOUT_S, not never."""
    monkeypatch.setattr(download, "TIMEOUT_S", 0.5)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # connections queue in the kernel; nothing ever replies
        start = time.monotonic()
        with pytest.raises(DownloadError, match=r"cannot download Fashion-MNIST \(.*: timed out\)"):
            fetch_and_verify(data_cfg(tmp_path / "fm", f"http://127.0.0.1:{silent.getsockname()[1]}"))
    assert time.monotonic() - start < 10 and leftovers(tmp_path / "fm") == []


def cifar_archive(tmp_path: Path) -> bytes:
    """A small CIFAR-10 archive in the real format: cifar-10-batches-py/ of pickled batches, tar.gz."""
    root = write_cifar(tmp_path / "made")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(root / cifar.FOLDER, arcname=cifar.FOLDER)
    return buf.getvalue()


def test_cifar_archive_is_verified_unpacked_atomically_and_a_wrong_one_refused(tmp_path, server, monkeypatch):
    archive = cifar_archive(tmp_path)
    server.files = {cifar.ARCHIVE.name: archive}
    folder = tmp_path / "cifar10"
    cfg = data_cfg(folder, server.url, dataset="cifar10")
    with pytest.raises(DownloadError, match="cifar-10-python.tar.gz from .* was refused and removed"):
        load_dataset(cfg)  # not the published archive's md5
    assert sorted(p.name for p in folder.iterdir()) == [download.LOCK_NAME]
    monkeypatch.setattr(cifar, "ARCHIVE", replace(cifar.ARCHIVE, checksum="md5:" + hashlib.md5(archive).hexdigest()))
    batches = tmp_path / "made" / cifar.FOLDER
    monkeypatch.setattr(cifar, "MD5", {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in batches.iterdir()})
    data = load_dataset(cfg)
    assert data.train_x.shape == (100, 3, 32, 32) and data.classes[0] == "airplane"
    assert sorted(p.name for p in folder.iterdir()) == sorted([download.LOCK_NAME, cifar.ARCHIVE.name, cifar.FOLDER])
    assert pickle.loads((folder / cifar.FOLDER / "batches.meta").read_bytes())[b"label_names"][0] == b"airplane"
    assert fetch_and_verify(cfg) == f"cifar10 in {folder}: verified"  # every batch against its md5
    (folder / cifar.FOLDER / "test_batch").write_bytes(b"damaged")
    with pytest.raises(DataError, match=f"test_batch: not CIFAR-10's file .* remove {folder / cifar.FOLDER} to"):
        fetch_and_verify(cfg)
    assert server.gets == {cifar.ARCHIVE.name: 2}


def test_fetch_data_command_end_to_end(tmp_path, server, debian):
    """`convlens fetch-data SPEC overrides` as a user runs it on a login node: one line per
    dataset, exit 0; run again, it only verifies."""
    server.files = dict(debian)
    folder = tmp_path / "login" / "fashion-mnist"
    spec = spec_file(tmp_path, tmp_path / "elsewhere", "http://127.0.0.1:1")
    cmd = [sys.executable, "-m", "convlens.cli", "fetch-data", str(spec), f"data.path={folder}",
           f"data.mirror={server.url}"]
    env = {**os.environ, "PYTHONPATH": LIB}
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines()[-1] == (f"[convlens] fashion_mnist in {folder}: downloaded "
                                             f"{', '.join(NAMES)}; verified")
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert again.returncode == 0 and again.stdout == f"[convlens] fashion_mnist in {folder}: verified\n"
    assert server.gets == {name: 1 for name in NAMES}


def test_fetch_data_reads_every_dataset_a_spec_trains_on(tmp_path, capsys):
    """The demo's networks and sweep share one folder: one line; a probe spec trains nothing: exit 2."""
    jobs = Path(__file__).resolve().parents[1] / "jobs"
    assert main(["fetch-data", str(jobs / "demo.yaml")]) == 0
    assert capsys.readouterr().out == f"[convlens] fashion_mnist in {FMNIST}: verified\n"
    assert main(["fetch-data", str(jobs / "probe.yaml")]) == 2
    assert "a probe spec trains nothing" in capsys.readouterr().err
