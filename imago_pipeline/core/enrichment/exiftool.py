"""ExifTool, the reference reader of camera metadata, when it is installed (`libimage-exiftool-perl`).

It reads what Pillow does not: maker notes (the ISO of many Canon files), unusual layouts, dates in
non-standard tags, HEIF orientation and size from the container. One `exiftool -stay_open` process per
worker process (pyexiftool), started on first use and ended with that process (its stdin closes; Linux
also sends it SIGTERM when its parent dies). The bytes are handed over as a temporary file (in memory,
`/dev/shm`, where it exists; in the process's scratch folder, swept if the process is killed). Absent
ExifTool, or a file it rejects: `exif.py` reads with Pillow.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
from functools import lru_cache
from typing import Any

from imago_pipeline.core.stores.scratch import memory_or_disk, scratch_file

# Values as numbers (GPS in signed degrees, exposure in seconds, orientation 1-8), tags without group names
# (exiftool's own priority picks among groups), no file-system tags.
ARGS = ["-n", "-x", "System:all"]

_lock = threading.Lock()
_helper: Any = None
_helper_pid: int | None = None


@lru_cache(maxsize=1)
def exiftool_version() -> str | None:
    """ExifTool's version, or None when it is not installed (part of the EXIF stage's code version)."""
    binary = shutil.which("exiftool")
    if binary is None:
        return None
    try:
        return subprocess.run([binary, "-ver"], capture_output=True, text=True, timeout=30,  # noqa: S603
                              check=True).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def read_tags(data: bytes) -> dict[str, Any] | None:
    """ExifTool's tags for these bytes, or None when ExifTool is absent or rejects the file."""
    if exiftool_version() is None:
        return None
    with _lock, scratch_file("imago-exif-", base=memory_or_disk()) as scratch:
        scratch.write(data)
        scratch.flush()
        try:
            [tags] = _exiftool().execute_json(*ARGS, scratch.name)
        except Exception:  # a file ExifTool cannot read, or its process died: Pillow reads it instead
            _reset()
            return None
    if tags.get("Error"):
        return None
    return tags


def warm() -> None:
    """Start this process's ExifTool now (a pool worker does, in the background, while its run starts)."""
    if exiftool_version() is not None:
        with _lock, contextlib.suppress(Exception):  # reading will start it again, or fall back to Pillow
            helper = _exiftool()
            if not helper.running:
                helper.run()


def _exiftool():
    """This process's long-lived ExifTool (a process forked from one that had started it starts its own)."""
    global _helper, _helper_pid
    if _helper is None or _helper_pid != os.getpid():
        import exiftool

        _helper = exiftool.ExifToolHelper(common_args=[], check_execute=False)
        _helper_pid = os.getpid()
    return _helper


def _reset() -> None:
    global _helper
    helper, _helper = _helper, None
    if helper is not None and _helper_pid == os.getpid():
        with contextlib.suppress(Exception):  # it may already be gone: that is why it is reset
            helper.terminate()
