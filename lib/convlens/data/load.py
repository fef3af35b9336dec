"""Loading a configured dataset: fetched when missing, its path checked, read by its format's
loader, verified and cached on disk."""
from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import torch

from convlens.base.errors import ConfigError, DataError
from convlens.data import cifar, download, fashion_mnist, image_folder
from convlens.data.images import ImageData, subset
from convlens.storage.files import write_atomic

LOADERS = {"fashion_mnist": fashion_mnist.load, "cifar10": cifar.load, "image_folder": image_folder.load}
# The downloadable datasets: each module's ensure(path, mirror) and verify(path, skip).
SOURCES = {"fashion_mnist": fashion_mnist, "cifar10": cifar}


def fetches(cfg) -> bool:
    return cfg.download and cfg.dataset in SOURCES


def check_path(cfg) -> None:
    """A missing, unreadable or empty dataset folder fails in the driver, naming data.path (one
    that downloads may be missing or empty: the files are fetched into it)."""
    path = Path(os.path.expanduser(cfg.path))
    if not path.exists() and fetches(cfg):
        return
    if not path.exists():
        raise ConfigError(f"data.path = {cfg.path!r}: does not exist")
    if not path.is_dir():
        raise ConfigError(f"data.path = {cfg.path!r}: not a directory")
    if not os.access(path, os.R_OK | os.X_OK):
        raise ConfigError(f"data.path = {cfg.path!r}: not readable")
    if not fetches(cfg) and not any(path.iterdir()):
        raise ConfigError(f"data.path = {cfg.path!r}: is empty")


def fetch(cfg) -> list[str]:
    """Download what the configured dataset lacks into data.path; returns the files fetched."""
    if not fetches(cfg):
        return []
    path = Path(os.path.expanduser(cfg.path)).resolve()
    return SOURCES[cfg.dataset].ensure(path, download.mirror_url(cfg.mirror))


def fetch_and_verify(cfg) -> str:
    """`convlens fetch-data` for one dataset: download what data.path lacks, verify every file;
    returns the line saying what was done."""
    path = Path(os.path.expanduser(cfg.path)).resolve()
    if cfg.dataset not in SOURCES:
        return f"{cfg.dataset} in {path}: not a downloadable dataset, left as it is"
    if not cfg.download:
        return f"{cfg.dataset} in {path}: data.download is false, left as it is"
    fetched = fetch(cfg)
    SOURCES[cfg.dataset].verify(path, skip=fetched)
    return f"{cfg.dataset} in {path}: " + (f"downloaded {', '.join(fetched)}; verified" if fetched else "verified")


def fingerprint(path: Path, extra: dict) -> str:
    """Cache key from the files' names, sizes and mtimes plus loader options (the download lock
    and a download in progress do not count)."""
    h = hashlib.sha1(json.dumps(extra, sort_keys=True).encode())
    transient = (download.LOCK_NAME, download.TEMP_PREFIX)
    files = [path] if path.is_file() else sorted(
        p for p in path.rglob("*") if p.is_file() and not p.relative_to(path).parts[0].startswith(transient))
    for p in files:
        st = p.stat()
        h.update(f"{p}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def load_dataset(cfg, verbose: bool = False) -> ImageData:
    """Load the configured dataset (a DataConfig), from the cache when the files are unchanged."""
    path = Path(os.path.expanduser(cfg.path)).resolve()
    fetched = fetch(cfg)
    if not path.exists():
        raise DataError(f"data.path = {str(path)!r}: does not exist")
    opts = {"dataset": cfg.dataset, "image_size": cfg.image_size, "corrupt": cfg.corrupt_images, "v": 1}
    cache = Path(os.path.expanduser(cfg.cache_dir)) / f"{cfg.dataset}-{fingerprint(path, opts)}.pt"
    data = read_cache(cache)
    if data is None:
        if fetches(cfg):  # once per change of the files: a cache hit skips it
            SOURCES[cfg.dataset].verify(path, skip=fetched)
        if verbose:
            checked = "verified, " if fetches(cfg) else ""
            print(f"[convlens] reading {cfg.dataset} from {path} ({checked}cached at {cache})", flush=True)
        data = LOADERS[cfg.dataset](path, cfg)
        data.check(f"data.path = {str(path)!r}")
        write_cache(cache, data)
    train_x, train_y = subset(data.train_x, data.train_y, cfg.train_subset, seed=1)
    test_x, test_y = subset(data.test_x, data.test_y, cfg.test_subset, seed=2)
    return ImageData(train_x, train_y, test_x, test_y, data.classes)


def read_cache(path: Path) -> ImageData | None:
    if not path.is_file():
        return None
    try:
        d = torch.load(path, map_location="cpu", weights_only=True)
        return ImageData(d["train_x"], d["train_y"], d["test_x"], d["test_y"], list(d["classes"]))
    except Exception:
        return None  # a damaged cache is rebuilt from the source files


def write_cache(path: Path, data: ImageData) -> None:
    buf = io.BytesIO()
    torch.save({"train_x": data.train_x, "train_y": data.train_y, "test_x": data.test_x,
                "test_y": data.test_y, "classes": data.classes}, buf)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, buf.getvalue())
    except OSError as err:  # the cache is an optimisation; a read-only home must not stop a run
        print(f"[convlens] warning: could not write dataset cache {path}: {err}", flush=True)
