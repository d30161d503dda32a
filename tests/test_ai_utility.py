"""The AI utility endpoints over real HTTP both ways: the API in uvicorn fetching pages from a local server.

Test pages live on 127.0.0.1, so most tests turn `ai_fetch_allow_private` on; one proves loopback is refused by
default. The Gemini provider is the real google-genai client against the local Gemini protocol server.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from imago_api.ai import fetch
from imago_api.ai.addresses import refusal
from imago_api.ai.extract import NoText, extract_text
from imago_api.ai.fetch import FetchLimits, UrlNotAllowed, fetch_page
from imago_api.ai.providers import LocalTextProvider, RemoteTextProvider
from imago_api.main import create_app
from imago_pipeline.core.vision.base import VisionError
from imago_pipeline.core.vision.gemini import GeminiClient
from tests.gemini_server import GeminiProtocolServer, blocked_answer, json_answer
from tests.http_server import serve

TITLE = "How honeybees make honey"
PARAGRAPHS = [
    ["Honeybees make honey from the nectar of flowers.", "A forager may fly several kilometres on a single trip."],
    ["Back at the hive, workers pass the nectar along and fan it with their wings.",
     "They store it in wax cells until it thickens."],
    ["Stored honey keeps for years.", "Beekeepers take only what the colony can spare before winter."],
    ["The weather matters too.", "A cold spring means a smaller harvest."],
]
SENTENCES = [s for paragraph in PARAGRAPHS for s in paragraph]
# The sentence made of the page's most frequent words (honeybees, honey, nectar); the next best two follow.
TOP_SENTENCE = PARAGRAPHS[0][0]
TOP_THREE = [SENTENCES[0], SENTENCES[2], SENTENCES[4]]
SCRIPT_TEXT = "tracking pixel honey honey nectar honeybees"
ARTICLE = f"""<!doctype html><html><head><title>{TITLE} | Garden Notes</title>
<style>body {{ font-family: serif; }}</style>
<script>var beacon = "{SCRIPT_TEXT}"; document.title = "{SCRIPT_TEXT}";</script></head>
<body><header>Garden Notes</header><nav><a href="/">Home</a> <a href="/bees">Bees and honey</a></nav>
<article><h1>{TITLE}</h1>
{"".join(f"<p>{' '.join(p)}</p>" for p in PARAGRAPHS)}
<script>console.log("{SCRIPT_TEXT}. The honeybees make honey with nectar from honey flowers.")</script>
</article><aside>Related: honey recipes and honeybees nectar tips.</aside><footer>Copyright Garden Notes</footer>
</body></html>""".encode()
PLAIN = (b"Solar panels turn sunlight into electricity. Panels on a roof feed the house first. "
         b"Extra electricity from the panels goes to the grid. Clouds lower the output of solar panels.")

CAP = 50_000  # the byte cap the API runs with in these tests


def _redirect(location: str):
    def respond(handler):
        handler.send_response(302)
        handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()
    return respond


def _page(body: bytes, content_type: str = "text/html; charset=utf-8", status: int = 200):
    def respond(handler):
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
    return respond


def _endless(pause: float, chunk: bytes):
    """No Content-Length and no end: only the client's limits can stop it."""
    def respond(handler):
        handler.send_response(200)
        handler.send_header("Content-Type", "text/html")
        handler.end_headers()
        handler.wfile.write(b"<html><body><p>")
        deadline = time.time() + 30
        try:
            while time.time() < deadline:
                handler.wfile.write(chunk)
                handler.wfile.flush()
                time.sleep(pause)
        except OSError:  # the client hung up: what the test expects
            handler.server.hung_up.append(handler.path)
    return respond


def _slow(handler):
    time.sleep(3)
    _page(ARTICLE)(handler)


ROUTES = {
    "/article": _page(ARTICLE),
    "/plain": _page(PLAIN, "text/plain"),
    "/big": _page(b"<html><body><p>" + b"Bees. " * (CAP // 3) + b"</p></body></html>"),
    "/endless": _endless(0, b"Bees buzz. " * 800),
    "/trickle": _endless(0.1, b"Bees. "),
    "/slow": _slow,
    "/image": _page(b"\x89PNG\r\n\x1a\n" + b"\0" * 100, "image/png"),
    "/no-type": _page(b"hello", ""),
    "/script-only": _page(b"<html><head><script>var a = 1;</script></head><body><nav>Home</nav></body></html>"),
    "/to-metadata": _redirect("http://169.254.169.254/latest/meta-data/"),
    "/to-file": _redirect("file:///etc/passwd"),
    "/loop": _redirect("/loop"),
    "/chain/1": _redirect("/chain/2"),
    "/chain/2": _redirect("/chain/3"),
    "/chain/3": _redirect("/article"),
}


class PageServer:
    """Test pages on 127.0.0.1; keeps the path and Host header of every request it received."""

    def __init__(self):
        self.requests: list[tuple[str, str]] = []
        pages = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                pages.requests.append((self.path, self.headers.get("Host", "")))
                ROUTES.get(self.path, _page(b"<p>Not here.</p>", status=404))(self)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.hung_up = []
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def hung_up(self) -> list[str]:
        return self.httpd.hung_up


@pytest.fixture
def database_url(tmp_path):
    """The AI endpoints touch the catalog only to check the key: SQLite is enough."""
    return f"sqlite:///{tmp_path / 'catalog.db'}"


@pytest.fixture
def pages():
    server = PageServer()
    server.thread.start()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


@pytest.fixture
def api(settings):
    app = create_app(settings.model_copy(update={"ai_fetch_allow_private": True, "ai_fetch_max_bytes": CAP}))
    with serve(app) as base_url:
        catalog = app.state.catalog
        tenant = catalog.clients.get_or_create("alice")
        keys = {"ai": catalog.clients.issue_key(tenant.id, ["ai:use"]),
                "reader": catalog.clients.issue_key(tenant.id, ["images:read"])}
        with httpx.Client(base_url=base_url, timeout=30) as client:
            yield client, keys, app


def _use(app, **settings):
    app.state.settings = app.state.settings.model_copy(update=settings)


def _summarize(client, key, url, max_sentences=3):
    return client.post("/ai/summarize", headers={"X-API-Key": key}, json={"url": url, "max_sentences": max_sentences})


# --- /ai/summarize ------------------------------------------------------------------------------------------


def test_summary_quotes_the_top_sentences_of_the_article_in_page_order(api, pages):
    client, keys, _ = api
    response = _summarize(client, keys["ai"], f"{pages.url}/article", max_sentences=3)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["title"] == f"{TITLE} | Garden Notes" and body["provider"] == "local-heuristics-v1"
    assert body["url"] == f"{pages.url}/article" and body["truncated"] is False
    assert len(body["sentences"]) == 3 and body["summary"] == " ".join(body["sentences"])
    assert all(s in SENTENCES for s in body["sentences"])
    positions = [SENTENCES.index(s) for s in body["sentences"]]
    assert positions == sorted(positions)  # the page's order, not the score's
    assert body["sentences"] == TOP_THREE
    assert "tracking" not in response.text and "Copyright" not in response.text  # script and footer dropped
    page_text = "\n".join([TITLE] + [" ".join(p) for p in PARAGRAPHS])
    assert body["characters_read"] == len(page_text)  # the h1 and the paragraphs, nothing else

    top = _summarize(client, keys["ai"], f"{pages.url}/article", max_sentences=1).json()
    assert top["sentences"] == [TOP_SENTENCE]


def test_plain_text_is_summarised_and_long_text_is_cut(api, pages):
    client, keys, app = api
    body = _summarize(client, keys["ai"], f"{pages.url}/plain", max_sentences=2).json()
    assert body["title"] is None and len(body["sentences"]) == 2
    assert all(s in PLAIN.decode() for s in body["sentences"])
    _use(app, ai_text_max_chars=60)
    cut = _summarize(client, keys["ai"], f"{pages.url}/plain", max_sentences=2).json()
    assert cut["truncated"] is True and cut["characters_read"] <= 60
    assert cut["sentences"][0] == "Solar panels turn sunlight into electricity."


@pytest.mark.parametrize("url", ["http://127.0.0.1:{port}/article", "http://localhost:{port}/article",
                                 "http://[::1]:{port}/article", "http://2130706433:{port}/article"])
def test_loopback_is_refused_by_default(api, pages, url):
    client, keys, app = api
    _use(app, ai_fetch_allow_private=False)
    response = _summarize(client, keys["ai"], url.format(port=pages.port))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "url_not_allowed" and "loopback" in error["message"]
    assert pages.requests == []  # refused before any connection


LIMITS = [
    # path, settings, status, code, words of the message
    ("/big", {}, 422, "page_too_large", "byte limit"),  # declared Content-Length over the cap
    ("/endless", {}, 422, "page_too_large", "byte limit"),  # no length: stopped while streaming
    ("/slow", {"ai_fetch_timeout_s": 0.5}, 504, "fetch_timeout", "0.5 s"),
    ("/trickle", {"ai_fetch_timeout_s": 1.0}, 504, "fetch_timeout", "1 s"),  # the time limit is for the whole fetch
    ("/to-metadata", {}, 400, "url_not_allowed", "169.254.169.254 is a link-local address"),
    ("/to-file", {}, 400, "url_not_allowed", "only http and https"),
    ("/loop", {}, 502, "too_many_redirects", "more than 3"),
    ("/image", {}, 422, "unsupported_content", "image/png"),
    ("/no-type", {}, 422, "unsupported_content", "without a content type"),
    ("/missing", {}, 502, "fetch_failed", "HTTP 404"),
    ("/script-only", {}, 422, "no_text", "no readable text"),
]


@pytest.mark.parametrize("path,settings_update,status,code,message", LIMITS, ids=[limit[0] for limit in LIMITS])
def test_each_limit_gives_its_status_and_code(api, pages, path, settings_update, status, code, message):
    client, keys, app = api
    _use(app, **settings_update)
    started = time.monotonic()
    response = _summarize(client, keys["ai"], f"{pages.url}{path}")
    elapsed = time.monotonic() - started
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and message in error["message"]
    assert elapsed < app.state.settings.ai_fetch_timeout_s + 2
    if path == "/endless":
        deadline = time.time() + 5
        while not pages.hung_up and time.time() < deadline:
            time.sleep(0.05)
        assert pages.hung_up == ["/endless"]  # the client stopped reading and closed the connection
    if path == "/loop":
        assert len(pages.requests) == 4  # the first request and three redirects, no more


@pytest.mark.parametrize("url,message", [("ftp://example.com/file.txt", "not ftp"),
                                         ("/article", "without a scheme"), ("http:///nohost", "no host")])
def test_urls_that_are_not_web_pages_are_refused(api, url, message):
    client, keys, _ = api
    response = _summarize(client, keys["ai"], url)
    assert response.status_code == 400 and message in response.json()["error"]["message"]


def test_a_refused_connection_is_a_fetch_failure(api):
    client, keys, _ = api
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    response = _summarize(client, keys["ai"], f"http://127.0.0.1:{port}/")
    assert response.status_code == 502 and response.json()["error"]["code"] == "fetch_failed"
    assert "could not fetch" in response.json()["error"]["message"]


def test_three_redirects_are_followed_and_the_final_url_is_returned(api, pages):
    client, keys, _ = api
    body = _summarize(client, keys["ai"], f"{pages.url}/chain/1").json()
    assert body["url"] == f"{pages.url}/article" and body["sentences"]
    assert [path for path, _ in pages.requests] == ["/chain/1", "/chain/2", "/chain/3", "/article"]


def test_request_bounds_are_checked(api, pages):
    client, keys, _ = api
    for max_sentences in (0, 11):
        assert _summarize(client, keys["ai"], f"{pages.url}/article", max_sentences).status_code == 422
    assert pages.requests == []


def test_a_key_without_the_ai_scope_gets_403(api, pages):
    client, keys, _ = api
    headers = {"X-API-Key": keys["reader"]}
    for path, body in (("/ai/summarize", {"url": f"{pages.url}/article"}), ("/ai/draft-task", {"description": "x"})):
        response = client.post(path, headers=headers, json=body)
        assert response.status_code == 403 and response.json()["error"]["code"] == "missing_scope"
        assert client.post(path, json=body).status_code == 401
    assert pages.requests == []


# --- /ai/draft-task -----------------------------------------------------------------------------------------


def test_draft_task_endpoint_reads_priority_due_date_and_checklist(api):
    client, keys, _ = api
    description = ("URGENT: the invoice export is broken for French customers, please fix it by Friday.\n"
                   "- reproduce the export bug\n- fix the invoice encoding\n- email the French customers")
    response = client.post("/ai/draft-task", headers={"X-API-Key": keys["ai"]},
                           json={"description": description, "today": "2025-03-12"})  # a Wednesday
    assert response.status_code == 200, response.text
    task = response.json()
    assert task["priority"] == "high" and task["due_date"] == "2025-03-14"
    assert task["checklist"] == ["reproduce the export bug", "fix the invoice encoding", "email the French customers"]
    assert task["title"] == "The invoice export is broken for French customers, please fix it by Friday"
    assert {"invoice", "export", "french", "customers"} <= set(task["tags"])
    assert task["provider"] == "local-heuristics-v1" and task["description"].startswith("URGENT")
    blank = client.post("/ai/draft-task", headers={"X-API-Key": keys["ai"]}, json={"description": "   "})
    assert blank.status_code == 422


# --- the providers -----------------------------------------------------------------------------------------

WEDNESDAY = date(2025, 3, 12)


@pytest.mark.parametrize("text,today,due", [
    ("Fix the login page by Friday.", WEDNESDAY, date(2025, 3, 14)),
    ("Fix the login page by Friday.", date(2025, 3, 14), date(2025, 3, 21)),  # on a Friday: the next one
    ("Send the report tomorrow.", WEDNESDAY, date(2025, 3, 13)),
    ("Send the report today.", WEDNESDAY, WEDNESDAY),
    ("Renew the certificate in 10 days.", WEDNESDAY, date(2025, 3, 22)),
    ("Renew the certificate within two weeks.", WEDNESDAY, date(2025, 3, 26)),
    ("File the taxes before 2025-04-15, not Monday.", WEDNESDAY, date(2025, 4, 15)),  # the first date wins
    ("Préparer la réunion de vendredi.", WEDNESDAY, date(2025, 3, 14)),
    ("Clean the garage.", WEDNESDAY, None),
])
def test_local_draft_due_dates(text, today, due):
    assert LocalTextProvider().draft_task(text, today).due_date == due


@pytest.mark.parametrize("text,priority", [
    ("Fix the outage ASAP.", "high"), ("The database is down, this is critical.", "high"),
    ("Restart the server immediately.", "high"), ("Tidy the wiki when you can.", "low"),
    ("Someday we should rewrite the docs.", "low"), ("Low priority: rename the bucket.", "low"),
    ("This is not urgent: update the logo.", "low"), ("Update the logo.", "medium"),
    ("C'est urgent, appelle le client.", "high"),
])
def test_local_draft_priority(text, priority):
    assert LocalTextProvider().draft_task(text, WEDNESDAY).priority == priority


def test_local_draft_title_checklist_and_tags():
    provider = LocalTextProvider()
    numbered = provider.draft_task("Prepare the quarterly review\n1. collect the sales figures\n"
                                   "2) draft the slides\n3. book the meeting room", WEDNESDAY)
    assert numbered.title == "Prepare the quarterly review"
    assert numbered.checklist == ["collect the sales figures", "draft the slides", "book the meeting room"]
    prose = provider.draft_task("Please migrate the mail server. Back up the mailboxes first. "
                                "Then switch the DNS records to the new mail server.", WEDNESDAY)
    assert prose.title == "Migrate the mail server" and len(prose.checklist) == 3
    assert prose.tags[:2] == ["mail", "server"]  # the most frequent words first
    long = provider.draft_task("Write the annual letter to every shareholder and partner that has worked with us "
                               "since the founding of the company many years ago in Lyon", WEDNESDAY)
    assert len(long.title) <= 81 and long.title.endswith("…")
    assert long.title[:-1] in long.description and long.title[-2] != " "  # cut between words


def test_local_summary_keeps_page_order_and_the_requested_count():
    text = "\n".join([TITLE] + [" ".join(p) for p in PARAGRAPHS])  # the text extracted from ARTICLE
    for n in (1, 2, 4):
        summary = LocalTextProvider().summarize(text, n)
        positions = [SENTENCES.index(s) for s in summary.sentences]
        assert len(positions) == n and positions == sorted(positions)
    assert LocalTextProvider().summarize(text, 1).sentences == [TOP_SENTENCE]
    assert LocalTextProvider().summarize("Only one sentence here.", 5).sentences == ["Only one sentence here."]


def _gemini(server) -> RemoteTextProvider:
    return RemoteTextProvider(GeminiClient(api_key="test-key", model="gemini-2.5-flash", base_url=server.url,
                                           attempts=2, initial_delay=0.01, max_delay=0.05, timeout_s=10))


def _sent_text(request: dict) -> str:
    return " ".join(p.get("text", "") for p in request["body"]["contents"][0]["parts"])


def test_gemini_summary_is_validated_and_trimmed():
    answer = {"sentences": ["  Honeybees turn   nectar into honey. ", "They store it in wax cells.", "Extra."]}
    with GeminiProtocolServer([json_answer(answer)]) as server:
        summary = _gemini(server).summarize("Honeybees make honey from nectar.", 2)
    assert summary.sentences == ["Honeybees turn nectar into honey.", "They store it in wax cells."]
    request = server.requests[0]
    assert "at most 2 sentences" in _sent_text(request) and "Honeybees make honey" in _sent_text(request)
    config = request["body"]["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    schema = config.get("responseSchema") or config.get("responseJsonSchema")
    assert set(schema["properties"]) == {"sentences"}
    assert "in the language of the text" in _sent_text(request)


def test_a_summary_language_asked_for_reaches_a_hosted_provider():
    with GeminiProtocolServer([json_answer({"sentences": ["Les abeilles font du miel."]})]) as server:
        summary = _gemini(server).summarize("Honeybees make honey from nectar.", 1, "fr")
    assert summary.sentences == ["Les abeilles font du miel."]
    assert "ISO 639-1 code is fr" in _sent_text(server.requests[0])

    with GeminiProtocolServer([json_answer({"sentences": []})]) as server, \
            pytest.raises(VisionError, match="does not match the schema"):
        _gemini(server).summarize("Some text.", 2)


def test_gemini_task_draft_is_validated():
    answer = {"title": "Fix the export", "description": "Fix the export.", "priority": "high",
              "due_date": "2025-03-14", "tags": ["Export", "billing"], "checklist": ["reproduce", "fix"]}
    with GeminiProtocolServer([json_answer(answer)]) as server:
        draft = _gemini(server).draft_task("Fix the export by Friday, urgent.", WEDNESDAY)
    assert draft.due_date == date(2025, 3, 14) and draft.priority == "high" and draft.tags == ["export", "billing"]
    assert "Wednesday 2025-03-12" in _sent_text(server.requests[0])
    with GeminiProtocolServer([json_answer({**answer, "priority": "whenever"})]) as server, \
            pytest.raises(VisionError, match="does not match the schema"):
        _gemini(server).draft_task("Fix the export.", WEDNESDAY)


def test_api_with_gemini_summarises_through_the_provider_and_reports_its_failures(api, pages):
    client, keys, app = api
    with GeminiProtocolServer([json_answer({"sentences": ["Bees make honey from nectar."]}),
                               blocked_answer()]) as server:
        _use(app, vision_provider="gemini", gemini_api_key="k", gemini_base_url=server.url, vision_attempts=1)
        body = _summarize(client, keys["ai"], f"{pages.url}/article").json()
        assert body["provider"] == "gemini:gemini-2.5-flash" and body["sentences"] == ["Bees make honey from nectar."]
        assert SENTENCES[0] in _sent_text(server.requests[0]) and "tracking" not in _sent_text(server.requests[0])
        failed = _summarize(client, keys["ai"], f"{pages.url}/article")
        assert failed.status_code == 502 and failed.json()["error"]["code"] == "provider_failed"
    _use(app, gemini_api_key=None)
    missing = client.post("/ai/draft-task", headers={"X-API-Key": keys["ai"]}, json={"description": "Fix it."})
    assert missing.status_code == 503 and missing.json()["error"]["code"] == "provider_unavailable"


# --- fetching and extraction, without the API --------------------------------------------------------------


@pytest.mark.parametrize("address,default,with_private", [
    ("93.184.216.34", None, None), ("2606:4700::1111", None, None),
    ("127.0.0.1", "loopback", None), ("::1", "loopback", None), ("10.0.0.5", "private", None),
    ("192.168.1.1", "private", None), ("fd00::1", "private", None), ("::ffff:10.0.0.1", "private", None),
    ("169.254.169.254", "link-local", "link-local"), ("fe80::1%eth0", "link-local", "link-local"),
    ("224.0.0.1", "multicast", "multicast"), ("ff02::1", "multicast", "multicast"),
    ("0.0.0.0", "unspecified", "unspecified"), ("::", "unspecified", "unspecified"),  # noqa: S104  (an address the fetcher must refuse, never bound)
    ("240.0.0.1", "reserved", "reserved"),
])
def test_address_rules(address, default, with_private):
    for allow_private, expected in ((False, default), (True, with_private)):
        reason = refusal(address, allow_private=allow_private)
        assert (reason is None) if expected is None else (expected in reason)


def _fake_dns(monkeypatch, names: dict[str, list[list[str]]]) -> list[str]:
    """A resolver that knows `names`: each lookup of a name gets its next answer (the last one repeats).
    Returns the list of names looked up, in order."""
    real, lookups = socket.getaddrinfo, []

    def getaddrinfo(host, port, *args, **kwargs):
        if host not in names:
            return real(host, port, *args, **kwargs)
        answers = names[host]
        lookups.append(host)
        addresses = answers[min(lookups.count(host), len(answers)) - 1]
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
                for a in addresses]

    monkeypatch.setattr(fetch.socket, "getaddrinfo", getaddrinfo)
    return lookups


def test_every_address_of_a_name_is_checked(monkeypatch):
    _fake_dns(monkeypatch, {"mixed.test": [["93.184.216.34", "10.1.2.3"]]})
    with pytest.raises(UrlNotAllowed, match=r"mixed\.test resolves to 10\.1\.2\.3, which is a private address"):
        asyncio.run(fetch_page("http://mixed.test/", FetchLimits()))


def test_the_connection_goes_to_the_address_that_was_checked(monkeypatch, pages):
    """A rebinding resolver: a second lookup of `pinned.test` would get an unroutable address. The name is
    looked up once and the page arrives, so the connection used the address that was checked; the request
    still names the host."""
    lookups = _fake_dns(monkeypatch, {"pinned.test": [["127.0.0.1"], ["192.0.2.1"]]})
    page = asyncio.run(fetch_page(f"http://pinned.test:{pages.port}/article", FetchLimits(allow_private=True)))
    assert page.media_type == "text/html" and page.body == ARTICLE
    assert lookups == ["pinned.test"]
    assert pages.requests == [("/article", f"pinned.test:{pages.port}")]


def test_extraction_keeps_the_title_and_drops_page_furniture():
    text = extract_text(ARTICLE, "text/html", "utf-8", max_chars=10_000)
    assert text.title == f"{TITLE} | Garden Notes" and text.text.splitlines()[0] == TITLE
    assert text.text.splitlines()[1] == " ".join(PARAGRAPHS[0])
    for furniture in ("tracking", "Home", "Related", "Copyright", "font-family", "Garden Notes"):
        assert furniture not in text.text
    cut = extract_text(ARTICLE, "text/html", None, max_chars=30)
    assert cut.truncated and cut.text == TITLE  # cut on a word, never inside one
    with pytest.raises(NoText):
        extract_text(b"<html><body><script>x()</script></body></html>", "text/html", None, max_chars=100)
