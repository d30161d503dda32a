"""The whole path under `imago serve`: HTTP upload, upload-sensor tick in the real daemon, a run, GET.

Also what an operator relies on: an image uploaded alone is done within about 10 seconds, and Ctrl-C
stops every process that was started.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import httpx
import psutil
import pytest

from tests.conftest import REPO, SAMPLES, SERVICES, shared
from tests.http_server import free_port, wait_for_http
from tests.serve_harness import wait_until

pytestmark = [pytest.mark.slow, SERVICES, pytest.mark.timeout(900)]


def _subset(target, split: str, per_class: int):
    for label in ("cat", "dog"):
        (target / label).mkdir(parents=True)
        for path in sorted(shared("catsdogs", split, label).glob("*.jpg"))[:per_class]:
            shutil.copy(path, target / label / path.name)
    return target


def test_upload_is_processed_by_the_daemon_and_serve_stops_cleanly(tmp_path, capsys):
    # Retraining is tiny here; the margin of -1 promotes any candidate, to show the whole loop under serve
    # (the gate's real decisions are tested in test_classification.py).
    env = {**os.environ, "IMAGO_HOME": str(tmp_path / "imago"),
           "IMAGO_TRAINING_DATA": str(_subset(tmp_path / "train", "train", 20)),
           "IMAGO_VALIDATION_DATA": str(_subset(tmp_path / "val", "val", 10)),
           "IMAGO_RETRAIN_MIN_FEEDBACK": "4", "IMAGO_TRAIN_EPOCHS": "5", "IMAGO_PROMOTION_MARGIN": "-1"}
    env.pop("DAGSTER_HOME", None)
    env.pop("IMAGO_DATABASE_URL", None)
    imago = [sys.executable, "-m", "imago_pipeline"]
    key = subprocess.run([*imago, "admin", "create-client", "e2e", "--plan", "enterprise"], env=env, cwd=REPO,
                         capture_output=True,
                         text=True, check=True).stdout.strip()
    api_port, dagster_port = free_port(), free_port()
    # Output goes to a file: an unread pipe fills up and then blocks every process that logs (API included).
    log = (tmp_path / "serve.log").open("w")
    serve = subprocess.Popen([*imago, "serve", "--api-port", str(api_port), "--dagster-port", str(dagster_port)],
                             env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        api = f"http://127.0.0.1:{api_port}"
        wait_for_http(f"{api}/health", 60)
        wait_for_http(f"http://127.0.0.1:{dagster_port}/server_info", 120)
        # the first sensor tick after start-up is slower (code server warm-up): prime it with one image
        headers = {"X-API-Key": key}
        with httpx.Client(base_url=api, headers=headers, timeout=30) as client:
            latencies = []
            for name in ("Nikon_D70.jpg", "Canon_40D.jpg"):
                started = time.time()
                upload = client.post("/images", files={"file": (name, (SAMPLES / name).read_bytes())})
                assert upload.status_code == 201, upload.text
                image_id = upload.json()["id"]
                while client.get(f"/images/{image_id}").json()["status"] not in ("done", "failed"):
                    assert time.time() - started < 120, "image not processed within 2 minutes"
                    time.sleep(0.25)
                latencies.append(time.time() - started)
            exif = client.get(f"/images/{image_id}/exif").json()
            assert exif["make"] == "Canon" and exif["model"] == "Canon EOS 40D"

            # the feedback loop: pets uploaded, users correct them, the daemon retrains, promotes, reclassifies
            pets = [p for label in ("cat", "dog")
                    for p in sorted(shared("catsdogs", "val", label).glob("*.jpg"))[50:52]]
            ids = [client.post("/images", files={"file": (p.name, p.read_bytes())}).json()["id"] for p in pets]
            for pet_id in ids:
                wait_until(lambda pet_id=pet_id: client.get(f"/images/{pet_id}").json()["status"] == "done", 120,
                            "pets processed")
            first_model = client.get(f"/images/{ids[0]}").json()["classification"]["model_version"]
            for pet_id, path in zip(ids, pets):
                truth = path.parent.name  # the user says whether the prediction was right, and what it shows
                predicted = client.get(f"/images/{pet_id}").json()["classification"]["label"]
                answer = client.post(f"/images/{pet_id}/feedback", json={"correct": predicted == truth, "label": truth})
                assert answer.status_code == 201, answer.text
            started = time.time()
            new_model = wait_until(
                lambda: (v := client.get(f"/images/{ids[0]}").json()["classification"]["model_version"]) != first_model
                and v, 600, "the retrained model to reclassify the image")
            loop_seconds = time.time() - started
        with capsys.disabled():
            print(f"feedback to reclassified by {new_model}: {loop_seconds:.0f} s")
        with capsys.disabled():
            print(f"\nupload-to-done under imago serve: first {latencies[0]:.1f} s, then {latencies[1]:.1f} s")
        assert latencies[1] < 30  # about 10 s is the target; the benchmark reports the figure
    except BaseException:
        failed = True
        raise
    else:
        failed = False
    finally:
        children = psutil.Process(serve.pid).children(recursive=True)
        serve.send_signal(signal.SIGINT)
        try:
            serve.wait(timeout=60)
        finally:
            log.close()
            output = (tmp_path / "serve.log").read_text()
            if failed:
                print("imago serve output (tail):\n" + output[-6000:])
    assert serve.returncode == 0, output[-3000:]
    _gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"left running: {[p.cmdline() for p in alive]}"
