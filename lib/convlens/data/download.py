"""Fetching a dataset's published files into data.path, safely for many processes at once.

A dataset module declares its files as `Remote`s (name, published URLs, checksum) and calls
`fetch`. Under a lock on the folder (one process downloads, the others wait, then find the files
there) each missing file is downloaded with torchvision's helper under a temporary name in the
same folder, checked, and renamed into place; a download that fails its check is removed, so a
partial or corrupt file is never read. Checksums are of the content: a `.gz` file is checked
decompressed, since Debian re-compressed Fashion-MNIST's archives (other .gz bytes, same files).
"""
from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import shutil
import socket
import tempfile
import urllib.error
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from convlens.base.errors import DataError, DownloadError
from convlens.specs.train import DATA_ENV
from convlens.storage.files import fsync_dir

MIRROR_ENV = "CONVLENS_DATA_MIRROR"  # a site's mirror when data.mirror is unset
LOCK_NAME = ".convlens-download.lock"
TEMP_PREFIX = ".download-"  # temporary files and folders; any left while the lock is held are a killed run's
TIMEOUT_S = 60.0  # seconds without a byte before a dead network counts as offline
CHUNK = 1 << 20
# What a failed transfer raises (not a full disk, which is a plain OSError): URLError covers
# refused connections, unknown hosts and HTTP errors; the rest can happen mid-body.
NETWORK_ERRORS = (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException)


@dataclass(frozen=True)
class Remote:
    """One published file: its name in data.path (and under a mirror), where it is published
    (tried in order), and the checksum of its content, "sha256:<hex>" or "md5:<hex>"; with
    `gunzipped` the checksum is of the decompressed bytes of a .gz file."""
    name: str
    urls: tuple[str, ...]
    checksum: str
    gunzipped: bool = False

    def sources(self, mirror: str | None) -> tuple[str, ...]:
        """A mirror replaces the published locations: <mirror>/<name>."""
        return (f"{mirror.rstrip('/')}/{self.name}",) if mirror else self.urls


def mirror_url(configured: str | None) -> str | None:
    """data.mirror, else $CONVLENS_DATA_MIRROR, else None (the published locations)."""
    return configured or os.environ.get(MIRROR_ENV) or None


def digest(file: Path, algorithm: str, gunzip: bool = False) -> str:
    """"<algorithm>:<hex>" of the file's bytes, or of its decompressed bytes with gunzip."""
    h = hashlib.new(algorithm, usedforsecurity=False)
    with (gzip.open if gunzip else open)(file, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return f"{algorithm}:{h.hexdigest()}"


def mismatch(file: Path, checksum: str, gunzipped: bool = False) -> str | None:
    """Why the file's content does not have this checksum, or None when it does. A .gz file is
    read decompressed when the checksum is of the content (an uncompressed copy is read as is)."""
    try:
        got = digest(file, checksum.partition(":")[0], gunzipped and file.name.endswith(".gz"))
    except (OSError, EOFError, zlib.error) as err:  # a truncated or damaged gzip stream
        return f"unreadable: {err}"
    return None if got == checksum else f"content {got[:19]}... where {checksum[:19]}... is expected"


def check(file: Path, checksum: str, title: str, gunzipped: bool = False, remove: Path | None = None) -> None:
    """A file already in data.path must be the dataset's; a user's file is reported, never removed
    (`remove`: what to delete for a fresh download, default the file)."""
    why = "missing" if not file.is_file() else mismatch(file, checksum, gunzipped)
    if why:
        raise DataError(f"{file}: not {title}'s file ({why}); remove {remove or 'it'} to download it again, "
                        f"or set data.download: false to read it unverified")


def fetch(folder: Path, title: str, missing: Callable[[], list[Remote]], mirror: str | None,
          place: Callable[[Path, Remote], None] | None = None) -> list[str]:
    """Download the remotes `missing()` names into folder, each verified; returns their names.

    `missing` is asked again once the lock is held, since another process may have fetched them
    meanwhile. A remote's file already in the folder (put there by hand) is verified instead of
    downloaded. `place(file, remote)` puts a verified file where the loader reads it (default: the
    download renamed to remote.name).
    """
    if not missing():
        return []
    writable_folder(folder, title)
    place = place or (lambda file, remote: os.replace(file, folder / remote.name))
    with folder_lock(folder, title) as locked:
        todo = missing()
        if locked:
            remove_leftovers(folder)
        for i, remote in enumerate(todo):
            given = folder / remote.name
            if given.is_file():
                check(given, remote.checksum, title, remote.gunzipped)
                place(given, remote)
                continue
            file = download(folder, remote, title, mirror, todo[i:])
            try:
                place(file, remote)
            finally:
                file.unlink(missing_ok=True)
        fsync_dir(folder)
    return [r.name for r in todo]


def download(folder: Path, remote: Remote, title: str, mirror: str | None, pending: list[Remote]) -> Path:
    """The remote downloaded, verified and fsynced under a temporary name in folder. A download
    that fails its check is removed; no network raises the offline error naming `pending`."""
    # torchvision's own helper; its download_url would GET every file twice (the redirect probe
    # is a GET), and would retry https as http.
    from torchvision.datasets.utils import _urlretrieve
    fd, name = tempfile.mkstemp(dir=folder, prefix=TEMP_PREFIX, suffix="-" + remote.name)  # keeps .tar.gz
    os.close(fd)
    file = Path(name)
    try:
        failures = []
        for url in remote.sources(mirror):
            print(f"[convlens] downloading {title} {remote.name} from {url} into {folder}", flush=True)
            try:
                with socket_timeout(TIMEOUT_S):
                    _urlretrieve(url, file)
            except NETWORK_ERRORS as err:
                failures.append(f"{url}: {err.reason if type(err) is urllib.error.URLError else err}")
                continue
            except OSError as err:
                raise DownloadError(f"cannot write {title} {remote.name} into {folder}: {err}") from None
            why = mismatch(file, remote.checksum, remote.gunzipped)
            if why:
                raise DownloadError(f"the download of {title} {remote.name} from {url} was refused and removed "
                                    f"({why}: truncated or corrupt); run again to retry")
            with open(file, "rb") as f:
                os.fsync(f.fileno())
            return file
        raise offline(folder, title, pending, mirror, failures)
    except BaseException:
        file.unlink(missing_ok=True)
        raise


def offline(folder: Path, title: str, pending: list[Remote], mirror: str | None, failures: list[str]):
    """One line: why, which files from where, and the folder they belong in."""
    files = ", ".join(f"{r.name} ({r.sources(mirror)[0]})" for r in pending)
    return DownloadError(f"cannot download {title} ({failures[0]}): put {files} in {folder}, or run "
                         f"`convlens fetch-data SPEC` where there is internet")


def writable_folder(folder: Path, title: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"data.path = {str(folder)!r}: cannot create it to download {title} ({err}); "
                        f"set data.path or ${DATA_ENV} to a writable folder") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise DataError(f"data.path = {str(folder)!r}: not writable, so {title} cannot be downloaded into it; "
                        f"set data.path or ${DATA_ENV} to a writable folder, or put the files there")


@contextmanager
def folder_lock(folder: Path, title: str) -> Iterator[bool]:
    """Hold an exclusive flock on folder's lock file; yields whether it is held. The kernel drops
    an flock when its process dies, so a killed download never blocks the next one. Where the
    filesystem refuses locks: one warning, and each process downloads on its own (still atomic)."""
    from filelock import FileLock, Timeout
    # No soft-lock fallback: its lock file would outlive a killed holder and block forever.
    lock = FileLock(folder / LOCK_NAME, fallback_to_soft=False)
    try:
        try:
            lock.acquire(blocking=False)
        except Timeout:
            print(f"[convlens] waiting for another process's download of {title} into {folder}", flush=True)
            lock.acquire()
    except (OSError, NotImplementedError) as err:
        print(f"[convlens] warning: cannot lock {folder / LOCK_NAME} ({err}); downloading without the lock, "
              f"each file still verified and renamed into place", flush=True)
        yield False
        return
    try:
        yield True
    finally:
        lock.release()


def remove_leftovers(folder: Path) -> None:
    """Temporary files of a killed download (only called while holding the lock)."""
    for left in folder.glob(TEMP_PREFIX + "*"):
        if left.is_dir():
            shutil.rmtree(left, ignore_errors=True)
        else:
            left.unlink(missing_ok=True)


@contextmanager
def socket_timeout(seconds: float) -> Iterator[None]:
    """torchvision's helper opens its connection without a timeout; the default one bounds it."""
    before = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(before)
