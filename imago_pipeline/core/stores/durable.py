"""Writes to a local file system that survive a crash (a power loss, a kernel panic), not only a killed process,
and a lock between the processes of one machine.

Write-then-rename makes a file appear whole to readers, but after a crash the disk holds only what was synced:
a file's bytes (`fsync` on the file) and its name (`fsync` on its folder, which POSIX keeps apart; ext4
otherwise commits a rename up to its `commit=` interval, five seconds by default, later). What points at a
file (a catalog row, the lake's manifest) is written after it, so the file must be durable first.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import itertools
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

# A folder's fsync refused by its file system (some FUSE, 9p and SMB mounts): nothing more can be asked of it.
# PostgreSQL and SQLite ignore these errors for folders too.
_FOLDER_SYNC_UNSUPPORTED = {errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP}
_warned: set[int] = set()
_temporary_names = itertools.count()


def temporary_name(target: Path) -> Path:
    """Beside `target`, unique among this machine's writers (pid, then a counter): `.tmp-<pid>-<n>`, the name
    the orphan sweep recognises as a write a crash cut short."""
    return target.with_name(f".tmp-{os.getpid()}-{next(_temporary_names)}")


def write_file(target: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write `data` as `target`, whole for readers and durable when this returns: written aside, synced,
    renamed, its folder synced. The folders are made when missing; a failure leaves no temporary behind
    (but one after the rename leaves the file complete under its name, though this raised)."""
    temporary = temporary_name(target)
    try:
        handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileNotFoundError:
        make_folders(target.parent)
        handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(handle, view):]
            os.fsync(handle)
        finally:
            os.close(handle)
        os.replace(temporary, target)
        sync_folder(target.parent)
    except BaseException:
        temporary.unlink(missing_ok=True)  # a full disk leaves no half-written file behind
        raise


def sync_file(path: Path) -> None:
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def sync_folder(folder: Path) -> None:
    """The names created, renamed or removed in `folder` made durable (a no-op, logged once, where the file
    system refuses to sync a folder)."""
    handle = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(handle)
    except OSError as exc:
        if exc.errno not in _FOLDER_SYNC_UNSUPPORTED:
            raise
        if exc.errno not in _warned:
            _warned.add(exc.errno)
            log.warning("the file system of %s cannot sync a folder (%s): a crash may lose recent file names",
                        folder, os.strerror(exc.errno))
    finally:
        os.close(handle)


def make_folders(folder: Path) -> None:
    """`mkdir -p`, each new folder synced into its parent (a folder is a name in its parent as well)."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for new in reversed(missing):
        new.mkdir(exist_ok=True)  # another writer may make it at the same moment
        sync_folder(new.parent)


def replace(written: Path, target: Path) -> None:
    """Rename a fully written file over `target`, durably: its bytes synced before the rename (a crash never
    leaves an empty file under the target's name), both folders after. A folder is renamed as it is: its
    files must have been synced by whoever wrote them."""
    if written.is_file():
        sync_file(written)
    os.replace(written, target)
    sync_folder(target.parent)
    if written.parent != target.parent:
        sync_folder(written.parent)


_AT_FDCWD, _RENAME_EXCHANGE = -100, 2
_libc = ctypes.CDLL(None, use_errno=True)


def exchange(a: Path, b: Path) -> bool:
    """Swap two names in one step (Linux `renameat2(RENAME_EXCHANGE)`): a reader sees one or the other, never
    neither. False where the system or file system cannot (the caller then renames twice)."""
    renameat2 = getattr(_libc, "renameat2", None)
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(a), None, str(b))


def remove(path: Path) -> None:
    """Delete a file so that a crash does not bring it back (an erased original, a lake file compacted away
    or rewritten without erased rows)."""
    path.unlink(missing_ok=True)
    if path.parent.is_dir():
        sync_folder(path.parent)


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Exclusive use of `path`'s name among this machine's processes (`flock`: released when its holder
    ends, even by SIGKILL)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
