"""Scratch files (a copy of an image for Tesseract or ExifTool, a training's outputs) that do not outlive
their process, even one killed with SIGKILL.

Why: `tempfile`'s cleanup runs only when a process ends normally. A run killed mid-OCR (`kill -9`, the OOM
killer) left a copy of a user's image in `/tmp` for good, out of reach of erasure and retention. Here each
process keeps its scratch in a folder of its own, `<base>/imago-scratch-<uid>/p<pid>-<random>/`, and holds
an `flock` on the folder's `.lock` file beside it for its whole life. The kernel drops that lock when the
process dies, however it dies; the next process to make its folder deletes every folder whose lock it can
take (`sweep`): a run's worker, the next run, or the API's next prediction. A process that ends normally
(a multiprocessing child included) deletes its own.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import multiprocessing.util
import os
import secrets
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

MEMORY = "/dev/shm"  # noqa: S108  (private files there never touch a disk)

_lock = threading.Lock()
_folders: dict[str, tuple[int, Path, int]] = {}  # base -> (pid, folder, the lock's descriptor)


def memory_or_disk() -> str:
    """`/dev/shm` where it exists and is writable (small files that never need a disk), else the temp folder."""
    return MEMORY if os.path.isdir(MEMORY) and os.access(MEMORY, os.W_OK) else tempfile.gettempdir()


def root(base: str | None = None) -> Path:
    """This user's scratch root under `base` (the temp folder by default), private to the user (0700)."""
    folder = Path(base or tempfile.gettempdir()) / f"imago-scratch-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    if folder.is_symlink() or folder.stat().st_uid != os.getuid():  # someone else's name in a shared /tmp
        raise PermissionError(f"{folder} is not this user's own folder")
    return folder


def process_folder(base: str | None = None) -> Path:
    """This process's scratch folder under `base`, made (and the dead processes' swept) on first use."""
    key = base or tempfile.gettempdir()
    with _lock:
        known = _folders.get(key)
        if known is not None and known[0] == os.getpid():
            return known[1]
        top = root(key)
        sweep(top)
        folder, handle = _claim(top)
        _folders[key] = (os.getpid(), folder, handle)
        # a multiprocessing child (a pool worker) runs no `atexit` handlers, but its own finalizers
        multiprocessing.util.Finalize(None, _remove_own, exitpriority=0)
        return folder


@contextlib.contextmanager
def scratch_dir(prefix: str, base: str | None = None) -> Iterator[Path]:
    """A temporary folder, deleted on leaving; after a SIGKILL, by the next process's sweep."""
    with tempfile.TemporaryDirectory(prefix=prefix, dir=process_folder(base)) as folder:
        yield Path(folder)


def scratch_file(prefix: str, base: str | None = None) -> IO[bytes]:
    """A `NamedTemporaryFile` (deleted when closed) in this process's scratch folder."""
    return tempfile.NamedTemporaryFile(prefix=prefix, dir=process_folder(base))


def sweep(top: Path) -> int:
    """Delete the scratch folders of processes that are gone (their lock free); the number deleted."""
    deleted = 0
    for lock_path in top.glob("p*.lock"):
        try:
            handle = os.open(lock_path, os.O_RDWR)
        except FileNotFoundError:  # swept by another process meanwhile
            continue
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # its process is alive
                continue
            shutil.rmtree(lock_path.with_suffix(""), ignore_errors=True)
            lock_path.unlink(missing_ok=True)
            deleted += 1
        finally:
            os.close(handle)
    return deleted


def _claim(top: Path) -> tuple[Path, int]:
    """A new folder and its lock, held. The lock file comes first and is checked after locking: a sweep
    that took it in between (it was not locked yet) has unlinked it, so this tries another name."""
    while True:
        name = f"p{os.getpid()}-{secrets.token_hex(4)}"
        lock_path = top / f"{name}.lock"
        handle = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            still_ours = os.stat(lock_path).st_ino == os.fstat(handle).st_ino
        except FileNotFoundError:
            still_ours = False
        if still_ours:
            folder = top / name
            folder.mkdir(mode=0o700)
            return folder, handle
        os.close(handle)


def _forget_after_fork() -> None:
    """A forked child makes its own folder. It closes its copies of the parent's lock descriptors: the lock
    stays with the parent (an `flock` lasts while any descriptor of it is open, so the child's copy would
    keep a dead parent's folder from the sweep). The module's lock is made anew: a thread of the parent
    may have held it at the fork."""
    global _lock
    _lock = threading.Lock()
    for _, _, handle in _folders.values():
        with contextlib.suppress(OSError):
            os.close(handle)
    _folders.clear()


def _remove_own() -> None:
    for pid, folder, handle in list(_folders.values()):
        if pid == os.getpid():
            shutil.rmtree(folder, ignore_errors=True)
            with contextlib.suppress(OSError):
                folder.with_suffix(".lock").unlink()
                os.close(handle)
    _folders.clear()


os.register_at_fork(after_in_child=_forget_after_fork)
atexit.register(_remove_own)
