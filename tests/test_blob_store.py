"""The local blob store: keys cannot leave its folder, and a write either lands whole or leaves nothing."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from imago_pipeline.core.stores.blobs import BlobNotFound, LocalBlobStore, original_key


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
