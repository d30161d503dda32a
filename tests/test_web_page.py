"""The web page in a real headless Chromium: upload real photos, watch them, read the results (a cat, or no
cat or dog), give feedback with the true label, see look-alikes and near-duplicates."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from imago_api.main import create_app
from imago_pipeline.core.config import ImagoSettings
from imago_pipeline.in_process import get_instance, process_images
from tests.browser import browser_page, screenshot
from tests.conftest import SAMPLES, shared
from tests.http_server import serve


@pytest.fixture
def site(tmp_path):
    settings = ImagoSettings(home=tmp_path / "imago", workers=2, batch_size=50, log_format="text")
    app = create_app(settings)
    catalog = app.state.catalog
    key = catalog.clients.issue_key(catalog.clients.create("web").id)
    with serve(app) as base_url:
        yield base_url, key, app, settings


def _process_pending(app, settings) -> None:
    """What the upload sensor does under `imago serve`, done here in-process (no daemon in this test), on a
    thread of its own: this thread runs Playwright's event loop, inside which a Dagster run cannot close its
    own loop (a "coroutine never awaited" warning per run)."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(process_images, app.state.catalog.work.ids_with_status("pending"), settings=settings,
                    instance=get_instance(settings)).result()


def _half_size_copy(path, _page) -> bytes:
    import io

    from PIL import Image

    image = Image.open(path)
    out = io.BytesIO()
    image.resize((image.width // 2, image.height // 2)).save(out, "JPEG", quality=70)
    return out.getvalue()


def _upload_through_the_page(page, path, name=None):
    data = path if isinstance(path, bytes) else path.read_bytes()
    page.set_input_files("#file", files=[{"name": name or path.name, "mimeType": "image/jpeg",
                                          "buffer": data}])
    page.click("#upload-button")
    page.wait_for_selector("#message:has-text('Uploaded as image')")
    return int(page.text_content("#message").split("image ")[1].rstrip("."))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_upload_watch_results_and_feedback_in_a_real_browser(site):
    base_url, key, app, settings = site
    cat = sorted(shared("catsdogs", "val", "cat").glob("*.jpg"))[0]
    dialogs = []
    with browser_page() as page:
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        errors = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        response = page.goto(base_url + "/")
        assert response.status == 200 and "default-src 'self'" in response.headers["content-security-policy"]
        page.fill("#api-key", key)
        page.dispatch_event("#api-key", "change")

        requests = []
        page.on("request", lambda request: requests.append(request.url.removeprefix(base_url)))
        image_id = _upload_through_the_page(page, cat, name='<img src=x onerror=alert(1)>.jpg')
        page.wait_for_selector("#image-status[data-status='pending']")
        assert page.is_hidden("#classification-box")
        # every status and stage list the page shows, as it changes (pushed by the event stream)
        page.evaluate("""() => { window.seen = [];
            new MutationObserver(() => window.seen.push([document.getElementById('image-status').dataset.status,
                                                          document.getElementById('stages').children.length]))
              .observe(document.getElementById('result'), {subtree: true, childList: true, attributes: true}); }""")
        deadline = time.time() + 10
        while f"/images/{image_id}/events" not in requests and time.time() < deadline:  # the page follows it
            page.wait_for_timeout(50)
        _process_pending(app, settings)

        page.wait_for_selector("#image-status[data-status='done']", timeout=30_000)
        seen = page.evaluate("window.seen")
        statuses = [status for status, _ in seen]
        assert "queued" in statuses and statuses.index("queued") < statuses.index("done")  # it watched it progress
        assert any(0 < stages < 7 for status, stages in seen if status != "done")  # stage by stage
        # pushed, not polled: one stream, the image read once before it and once when it is done
        assert requests.count(f"/images/{image_id}/events") == 1
        assert requests.count(f"/images/{image_id}") == 2, requests
        page.wait_for_selector("#thumbnail:not([hidden])")
        assert page.evaluate("document.getElementById('thumbnail').naturalWidth") > 0
        truth = httpx.get(f"{base_url}/images/{image_id}", headers={"X-API-Key": key}).json()
        assert truth["classification"]["label"] == "cat" and page.text_content("#label") == "Cat"
        assert page.text_content("#probability") == f"{round(truth['classification']['probability'] * 100)}%"
        assert page.text_content("#description") == truth["ai"]["description"]
        assert page.locator("#tags li").all_text_contents() == truth["ai"]["tags"]
        assert page.text_content("#ocr-text") in (truth["ocr"]["text"], "(no text found)")
        # the hostile file name is shown as text, never run
        assert page.text_content("#image-name").startswith("<img src=x onerror=alert(1)>.jpg")
        stages = page.locator("#stages li").all_text_contents()
        assert {s.split(":")[0] for s in stages} >= {"exif", "thumbnail", "ocr", "embedding", "vision",
                                                      "classification"}
        screenshot(page, "web-page-result.png")

        page.click("#thumbs-up")
        page.wait_for_selector("#feedback-message:has-text('Thanks')")
        feedback = app.state.catalog.feedback.for_training()
        assert [(f.image_id, f.correct, f.label) for f, _ in feedback] == [
            (image_id, True, truth["classification"]["label"])]

        # a camera photo: the EXIF table, and a page of text: the OCR box
        canon = _upload_through_the_page(page, SAMPLES / "Canon_40D.jpg")
        _process_pending(app, settings)
        page.wait_for_selector("#image-status[data-status='done']", timeout=30_000)
        page.wait_for_selector("#exif-box:not([hidden])")
        exif = dict(zip(page.locator("#exif td:first-child").all_text_contents(),
                        page.locator("#exif td:last-child").all_text_contents()))
        assert exif["make"] == "Canon" and exif["model"] == "Canon EOS 40D" and canon != image_id
        assert page.is_hidden("#place")  # no GPS in this one
        # an iguana: neither a cat nor a dog; "wrong" asks what it is
        assert page.text_content("#label") == "No cat or dog"
        assert page.is_hidden("#true-label")
        page.click("#thumbs-down")
        assert page.is_hidden("#true-label button[data-label='other']")  # the prediction is not an answer
        assert page.is_visible("#true-label button[data-label='cat']")
        page.click("#true-label button[data-label='dog']")
        page.wait_for_selector("#feedback-message:has-text('Thanks')")
        assert [(f.image_id, f.correct, f.label, f.predicted_label)
                for f, _ in app.state.catalog.feedback.for_training()][-1] == (canon, False, "dog", "other")
        # the first photo is among the look-alikes, with its thumbnail
        page.wait_for_selector("#similar-box:not([hidden])")
        assert page.locator(f"#similar li[data-image-id='{image_id}']").count() == 1

        page.set_input_files("#file", str(SAMPLES / "phototest.tif"))
        page.click("#upload-button")
        page.wait_for_selector("#message:has-text('Uploaded as image')")
        _process_pending(app, settings)
        page.wait_for_selector("#image-status[data-status='done']", timeout=30_000)
        page.wait_for_selector("#ocr-box:not([hidden])")
        assert "quick brown dog" in page.text_content("#ocr-text")
        screenshot(page, "web-page-ocr.png")

        assert page.text_content("#label") == "No cat or dog"

        # a smaller, re-encoded copy of the cat photo: a near-duplicate
        copy = _upload_through_the_page(page, _half_size_copy(cat, page), name="cat-copy.jpg")
        _process_pending(app, settings)
        page.wait_for_selector("#image-status[data-status='done']", timeout=30_000)
        page.click("#find-duplicates")
        page.wait_for_selector("#duplicates-box:not([hidden])")
        assert page.text_content("#duplicates-summary") == "1 group"
        linked = page.locator("#duplicates li li").all_text_contents()
        assert linked == [f"#{image_id} <img src=x onerror=alert(1)>.jpg", f"#{copy} cat-copy.jpg"]
        screenshot(page, "web-page-duplicates.png")

        page.click("#refresh-recent")
        page.wait_for_selector("#recent-list li >> nth=3")
        assert "4 images" in page.text_content("#usage")

        # a phone photo with GPS: where it was taken (looked up offline), linked to the map, at local time
        _upload_through_the_page(page, SAMPLES / "iphone_hdr_YES.jpg")
        _process_pending(app, settings)
        page.wait_for_selector("#image-status[data-status='done']", timeout=30_000)
        page.wait_for_selector("#place:not([hidden])")
        assert page.text_content("#place-name") == "Moncloa-Aravaca, Madrid, Spain"
        assert page.get_attribute("#place-name", "href").startswith("https://www.openstreetmap.org/?mlat=40.446972")
        assert page.text_content("#place-time") == "on 2015-04-10 20:12:23+02:00 (Europe/Madrid)"
        screenshot(page, "web-page-place.png")

        # a refused upload says why
        page.set_input_files("#file", files=[{"name": "notes.jpg", "mimeType": "image/jpeg", "buffer": b"hello"}])
        page.click("#upload-button")
        page.wait_for_selector("#message.error")
        assert "Upload refused" in page.text_content("#message")
    assert dialogs == [] and errors == []
