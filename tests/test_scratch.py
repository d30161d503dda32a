"""Scratch files do not outlive their process: a process killed with SIGKILL (mid-OCR, with a copy of the
user's image on disk) leaves its folder behind only until the next process makes its own; one that ends
normally deletes its own; a live process's folder is never touched; a forked child gets a folder of its own."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from imago_pipeline.core.stores import scratch
from tests.conftest import SAMPLES

REPO = Path(__file__).resolve().parents[1]


def _python(code: str, tmp: Path) -> subprocess.Popen:
    """`code` in a new interpreter whose temp folder is `tmp`, its stdout piped."""
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "TMPDIR": str(tmp)})


def _folders(tmp: Path) -> set[str]:
    return {p.name for p in scratch.root(str(tmp)).iterdir() if p.is_dir()}


def test_a_process_killed_mid_ocr_leaves_its_copy_of_the_image_only_until_the_next_process(tmp_path):
    # the OCR stage copies the page for Tesseract, then this process is killed where Tesseract would run
    killed = _python(f"""
        import os, signal
        from imago_pipeline.core.enrichment import ocr
        def die(*args, **kwargs):
            print(os.getpid(), flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        ocr._recognise = die
        ocr.ocr_image(open({str(SAMPLES / "eurotext.tif")!r}, "rb").read(), engine="tesseract")
    """, tmp_path)
    pid = int(killed.stdout.readline())
    assert killed.wait(60) == -signal.SIGKILL
    left = list(scratch.root(str(tmp_path)).rglob("page"))
    assert len(left) == 1 and left[0].read_bytes() == (SAMPLES / "eurotext.tif").read_bytes()
    assert _folders(tmp_path) == {left[0].parents[1].name} and left[0].parents[1].name.startswith(f"p{pid}-")

    # a process alive with its own scratch, then another process's first scratch file sweeps the dead one
    alive = _python("""
        from imago_pipeline.core.stores import scratch
        print(scratch.process_folder().name, flush=True)
        import time; time.sleep(600)
    """, tmp_path)
    try:
        alive_folder = alive.stdout.readline().strip()
        assert alive_folder and not left[0].exists()  # swept by the live process's first use
        later = _python("""
            from imago_pipeline.core.stores import scratch
            with scratch.scratch_dir("imago-ocr-") as folder:
                print(folder.parent.name, flush=True)
        """, tmp_path)
        later_folder = later.stdout.readline().strip()
        assert later.wait(60) == 0
        # the one that ended normally deleted its own; the live one's stays, whatever sweeps
        assert later_folder != alive_folder and _folders(tmp_path) == {alive_folder}
        assert scratch.sweep(scratch.root(str(tmp_path))) == 0
        assert _folders(tmp_path) == {alive_folder}
    finally:
        alive.kill()
        alive.wait(30)
    deadline = time.monotonic() + 10
    while scratch.sweep(scratch.root(str(tmp_path))) == 0 and time.monotonic() < deadline:
        time.sleep(0.1)  # the kernel drops the lock as the killed process's files close
    assert _folders(tmp_path) == set()
    assert list(scratch.root(str(tmp_path)).iterdir()) == []  # the locks too


def test_a_forked_child_gets_a_folder_of_its_own_and_the_parents_stays_while_the_parent_lives(tmp_path):
    parent = scratch.process_folder(str(tmp_path))
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child: its own folder, then it ends without any cleanup
        try:
            os.write(write, scratch.process_folder(str(tmp_path)).name.encode())
        finally:
            os._exit(0)
    os.close(write)
    name = os.read(read, 200).decode()
    os.close(read)
    os.waitpid(child, 0)
    assert name and name != parent.name and name.startswith(f"p{child}-")
    # the child is gone (its folder swept); the parent's lock was not held by the child's copy of it
    assert scratch.sweep(scratch.root(str(tmp_path))) == 1
    assert _folders(tmp_path) == {parent.name}


def _use_scratch(base: str, names) -> None:
    names.put(scratch.process_folder(base).name)


def test_a_pool_worker_that_ends_normally_deletes_its_own_folder(tmp_path):
    """Multiprocessing children (the run's pool workers, the run itself) run no `atexit` handlers."""
    context = multiprocessing.get_context("forkserver")
    names = context.Queue()
    worker = context.Process(target=_use_scratch, args=(str(tmp_path), names))
    worker.start()
    name = names.get(timeout=60)
    worker.join(60)
    assert worker.exitcode == 0 and name.startswith(f"p{worker.pid}-")
    assert _folders(tmp_path) == set() and list(scratch.root(str(tmp_path)).iterdir()) == []
