"""The local blob store: keys cannot leave its folder, and a write either lands whole or leaves nothing."""

from __future__ import annotations

import errno
import logging
import os
import stat
import subprocess
import sys
import textwrap

import pytest

from imago_pipeline.core.stores import durable
from imago_pipeline.core.stores.blobs import BlobNotFound, LocalBlobStore, StorageUnavailable, original_key


def test_keys_round_trip_and_cannot_escape_the_folder(tmp_path):
    store = LocalBlobStore(tmp_path / "blobs")
    key = original_key(7, "ab" * 32, "u1")
    store.put(key, b"bytes")
    assert store.exists(key) and store.get(key) == b"bytes"
    assert (tmp_path / "blobs" / key).read_bytes() == b"bytes"
    store.put(key, b"again")  # a rewrite replaces the file whole
    assert store.get(key) == b"again"
    assert sorted(p.name for p in (tmp_path / "blobs" / key).parent.iterdir()) == ["ab" * 32 + "-u1"]  # no temporaries
    for bad in ("../outside", "tenants/1/../../../outside", "/etc/passwd", "tenants/1/../../.."):
        with pytest.raises(ValueError):
            store.put(bad, b"x")
    assert not (tmp_path / "outside").exists()
    # A key that is not one the product makes is resolved, and allowed while it stays inside.
    store.put("tenants/1/./odd name.jpg", b"odd")
    assert store.get("tenants/1/odd name.jpg") == b"odd"
    with pytest.raises(BlobNotFound):
        store.get(original_key(7, "cd" * 32, "u1"))


def test_a_failed_write_leaves_no_file_behind(tmp_path):
    """A real failure mid-write (the file-size limit, as a full disk would): StorageUnavailable, and
    neither the blob nor a temporary file is left."""
    script = textwrap.dedent(f"""
        import resource, signal
        from imago_pipeline.core.stores.blobs import LocalBlobStore, StorageUnavailable
        store = LocalBlobStore({str(tmp_path / "blobs")!r})
        store.put("tenants/1/small", b"fits")
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
        try:
            store.put("tenants/1/large", b"x" * 100_000)
        except StorageUnavailable as error:
            print("refused:", error)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("refused: writing a file"), done.stdout
    assert sorted(p.name for p in (tmp_path / "blobs" / "tenants" / "1").iterdir()) == ["small"]


def test_a_file_system_that_cannot_sync_folders_still_stores(tmp_path, monkeypatch, caplog):
    """Some file systems (FUSE, 9p, SMB mounts) refuse `fsync` on a folder with EINVAL: writes go on, with
    one warning, instead of every upload answering 503. Other errors of a folder's sync still fail the write."""

    real_fsync = os.fsync
    refusal = {"errno": errno.EINVAL}

    def fsync(fd):
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(refusal["errno"], os.strerror(refusal["errno"]))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(durable, "_warned", set())
    store = LocalBlobStore(tmp_path / "blobs")
    with caplog.at_level(logging.WARNING, logger="imago_pipeline.core.stores.durable"):
        for n in range(3):
            store.put(original_key(1, "ab" * 32, f"u{n}"), b"bytes")
    assert [store.get(original_key(1, "ab" * 32, f"u{n}")) for n in range(3)] == [b"bytes"] * 3
    assert len([r for r in caplog.records if "cannot sync a folder" in r.getMessage()]) == 1
    refusal["errno"] = errno.EIO  # a failing disk is not a missing feature
    with pytest.raises(StorageUnavailable):
        store.put(original_key(1, "ab" * 32, "u9"), b"bytes")
