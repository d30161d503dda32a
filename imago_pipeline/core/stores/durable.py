"""Writes to a local file system that survive a crash (a power loss, a kernel panic), not only a killed process,
and a lock between the processes of one machine.

Write-then-rename makes a file appear whole to readers, but after a crash the disk holds only what was synced:
a file's bytes (`fsync` on the file) and its name (`fsync` on its folder, which POSIX keeps apart; ext4
otherwise commits a rename up to its `commit=` interval, five seconds by default, later). What points at a
file (a catalog row, the lake's manifest) is written after it, so the file must be durable first.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def sync_file(path: Path) -> None:
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def sync_folder(folder: Path) -> None:
    """The names created, renamed or removed in `folder` made durable."""
    handle = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(handle)
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
    """Rename a fully written file (or folder of synced files) over `target`, durably: its bytes synced
    before the rename (a crash never leaves an empty file under the target's name), the rename after."""
    if written.is_file():
        sync_file(written)
    os.replace(written, target)
    sync_folder(target.parent)


def remove(path: Path) -> None:
    """Delete a file so that a crash does not bring it back (a lake file compacted away or rewritten
    without erased rows)."""
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
