"""The Dagster UI as the operator sees it under `imago serve`, in headless Chromium.

A fresh embedded home processes three sample images, then the same `dagster dev` command `imago serve`
runs (webserver, daemon, code server) serves it on a free loopback port. The page's own GraphQL answers
and the rendered graph are compared with the code location's definitions: every asset and every edge,
the SQL models included, so an asset or a dependency that does not reach the UI fails here. The first
visit is the operator's: no community dialog (the instance's `nux: enabled: false`), no telemetry, and
no request leaves the machine.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import dagster as dg
import httpx
import psutil
import pytest
import yaml
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from imago_pipeline.cli.serve import commands
from imago_pipeline.core.catalog import Catalog
from imago_pipeline.core.config import ImagoSettings
from imago_pipeline.core.ingest import register_image
from imago_pipeline.core.stores.blobs import build_blob_store
from imago_pipeline.dagster_instance import prepare_dagster_home
from imago_pipeline.in_process import process_images
from tests.browser import NODE_COLOURS, browser_page, screenshot
from tests.conftest import REPO, SAMPLES, SERVICES
from tests.http_server import free_port

pytestmark = [pytest.mark.slow, SERVICES, pytest.mark.timeout(300)]

SAMPLE_NAMES = ("Canon_40D.jpg", "Nikon_D70.jpg", "hopper_orientation_6.webp")
# The dependencies written in defs/enrichment, defs/training and defs/monitoring (the SQL models' come from
# the definitions and from dbt_like_sql/, below).
CORE_DEPS = {
    "uploads": set(),
    "exif": {"uploads"}, "thumbnail": {"uploads"}, "ocr": {"uploads"}, "embedding": {"uploads"},
    "classification": {"embedding"},
    "vision": {"exif", "thumbnail", "ocr", "embedding", "classification"},
    "image_summary": {"exif", "thumbnail", "ocr", "embedding", "classification", "vision"},
    "classifier_candidate": set(), "production_classifier": {"classifier_candidate"},
    "retention_purge": set(), "classifier_monitoring": {"retention_purge"}, "orphan_blob_sweep": set(),
    "unfinished_erasures": set(),
}
PER_IMAGE = ("exif", "thumbnail", "ocr", "embedding", "classification", "vision", "image_summary")
# Assets that write the lake tables a SQL model may read.
LAKE_WRITERS = {"exif", "thumbnail", "ocr", "embedding", "classification", "vision", "image_summary",
                "classifier_monitoring"}
SCHEDULES = {"retention_schedule", "nightly_reprocess_schedule"}
TOKEN_VARIABLE = "IMAGO_UI_TEST_TOKEN"  # marks every process the test starts, even one re-parented to init
LOCAL_HOSTS = {"127.0.0.1", "localhost"}


def test_lineage_partitions_and_automation_as_the_operator_sees_them(tmp_path, monkeypatch, capsys):
    started = time.perf_counter()
    settings, image_ids, run_id = _processed_home(tmp_path, monkeypatch)
    from imago_pipeline.definitions import build_definitions  # what `dagster dev -m imago_pipeline.definitions`
                                                              # loads (its `defs` builds it for the environment)
    defs = build_definitions()
    expected = _expected_graph(defs)
    token = uuid.uuid4().hex
    port = free_port()
    log_path = tmp_path / "dagster-dev.log"
    with log_path.open("w") as log:
        env = {**os.environ, "IMAGO_DATABASE_URL": settings.catalog_url, "IMAGO_WORKERS": "2", TOKEN_VARIABLE: token}
        dagster_dev = commands("127.0.0.1", api_port=0, dagster_port=port)["dagster"]  # what `imago serve` runs
        server = subprocess.Popen(dagster_dev, env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True,
                                  preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        try:
            base = f"http://127.0.0.1:{port}"
            location, repository = _wait_until_loaded(base, server, log_path)
            ready = time.perf_counter()
            _check_automation_through_graphql(base, location, repository, defs)
            _check_in_the_browser(base, location, expected, settings, image_ids, run_id)
        except BaseException:
            print("dagster dev output (tail):\n" + log_path.read_text()[-6000:])
            raise
        finally:
            survivors = _stop(server, token)
    assert not survivors, f"left running after Ctrl-C: {survivors}"
    with capsys.disabled():
        print(f"\nDagster UI test: {ready - started:.0f} s to a loaded UI, "
              f"{time.perf_counter() - started:.0f} s in all")


# --- the embedded home ------------------------------------------------------------------------------------

def _processed_home(tmp_path: Path, monkeypatch) -> tuple[ImagoSettings, list[int], str]:
    """A fresh embedded home (SQLite catalog and Dagster instance) whose sample images went through the
    process_images job, as `imago ingest` does it."""
    for name in [n for n in os.environ if n.startswith(("IMAGO_", "DAGSTER_"))]:
        monkeypatch.delenv(name)  # the server must see this home and nothing of the caller's
    monkeypatch.setenv("IMAGO_HOME", str(tmp_path / "imago"))
    settings = ImagoSettings(workers=2, batch_size=50)
    home = prepare_dagster_home(settings)
    _turn_off_first_visit_dialog(home / "dagster.yaml")
    catalog = Catalog.connect(settings.catalog_url)
    try:
        tenant = catalog.clients.get_or_create("ui")
        store = build_blob_store(settings)
        ids = [register_image(catalog, store, settings, tenant_id=tenant.id, filename=name,
                              data=(SAMPLES / name).read_bytes(), status="queued").image.id
               for name in SAMPLE_NAMES]
        with dg.DagsterInstance.from_config(str(home)) as instance:
            runs = process_images(ids, settings=settings, instance=instance)
        assert [run.success for run in runs] == [True], runs
        assert {i.status for i in catalog.work.images_by_id(ids).values()} == {"done"}
    finally:
        catalog.dispose()
    return settings, ids, runs[0].run_id


def _turn_off_first_visit_dialog(config: Path) -> None:
    """The "Join the Dagster community" dialog opens on the first visit to a loopback UI, whatever the
    telemetry setting; the instance's `nux: enabled: false` turns it off (GraphQL `shouldShowNux`).
    `imago` writes both into the embedded instance's dagster.yaml: check it did."""
    data = yaml.safe_load(config.read_text())
    assert data["telemetry"] == {"enabled": False} and data["nux"] == {"enabled": False}


# --- the definitions: what the UI must show ---------------------------------------------------------------

def _expected_graph(defs: dg.Definitions) -> dict[str, dict]:
    graph = defs.resolve_asset_graph()
    nodes = {key.to_user_string(): graph.get(key) for key in graph.get_all_asset_keys()}
    deps = {name: {p.to_user_string() for p in node.parent_keys} for name, node in nodes.items()}
    groups = {name: node.group_name for name, node in nodes.items()}
    assert {name: deps.get(name) for name in CORE_DEPS} == CORE_DEPS, "the definitions' core lineage changed"
    models = {name for name in nodes if name.startswith("analytics/")}
    model_files = {path.stem for path in (REPO / "dbt_like_sql" / "models").rglob("*.sql")}
    assert {name.split("/", 1)[1] for name in models} == model_files, "every SQL model is an asset"
    for model in models:
        assert groups[model] == "sql_models", model
        assert deps[model], f"{model} reads nothing"
        assert all(d.startswith("analytics/") or d in LAKE_WRITERS for d in deps[model]), (model, deps[model])
    return {"deps": deps, "groups": groups, "models": models}


# --- the server -------------------------------------------------------------------------------------------

def _graphql(base: str, query: str, variables: dict | None = None) -> dict:
    answer = httpx.post(f"{base}/graphql", json={"query": query, "variables": variables or {}}, timeout=30)
    answer.raise_for_status()
    body = answer.json()
    assert not body.get("errors"), body["errors"]
    return body["data"]


WORKSPACE = """{ workspaceOrError { __typename ... on Workspace { locationEntries { name loadStatus
  locationOrLoadError { __typename ... on RepositoryLocation { repositories { name } } ... on PythonError { message } }
} } } }"""
DAEMONS = "{ instance { daemonHealth { allDaemonStatuses { daemonType healthy required } } } }"


def _wait_until_loaded(base: str, server: subprocess.Popen, log_path: Path) -> tuple[str, str]:
    """The code location loaded and the daemons (sensors, schedules, automation) heartbeating."""
    deadline = time.time() + 120
    while time.time() < deadline:
        assert server.poll() is None, f"dagster dev exited with {server.returncode}"
        try:
            entries = _graphql(base, WORKSPACE)["workspaceOrError"]["locationEntries"]
            loaded = [e for e in entries if e["loadStatus"] == "LOADED"]
            if loaded:
                daemons = _graphql(base, DAEMONS)["instance"]["daemonHealth"]["allDaemonStatuses"]
                healthy = {d["daemonType"] for d in daemons if d["healthy"]}
                if {"SENSOR", "SCHEDULER", "ASSET"} <= healthy:
                    break
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    else:
        raise AssertionError(f"the UI did not come up within 120 s:\n{log_path.read_text()[-3000:]}")
    assert len(entries) == 1, entries
    assert _graphql(base, "{ shouldShowNux }")["shouldShowNux"] is False  # the first-visit dialog stays closed
    location = entries[0]["locationOrLoadError"]
    assert location["__typename"] == "RepositoryLocation", location  # a load error names its cause here
    return entries[0]["name"], location["repositories"][0]["name"]


AUTOMATION = """query Automation($repository: RepositorySelector!, $sensor: SensorSelector!) {
  sensorOrError(sensorSelector: $sensor) { __typename
    ... on Sensor { targets { pipelineName } sensorState { status } } ... on PythonError { message } }
  schedulesOrError(repositorySelector: $repository) { __typename
    ... on Schedules { results { name pipelineName cronSchedule scheduleState { status } } }
    ... on PythonError { message } }
}"""


def _check_automation_through_graphql(base: str, location: str, repository: str, defs: dg.Definitions) -> None:
    selector = {"repositoryLocationName": location, "repositoryName": repository}
    data = _graphql(base, AUTOMATION, {"repository": selector, "sensor": {**selector, "sensorName": "upload_sensor"}})
    sensor = data["sensorOrError"]
    assert sensor["__typename"] == "Sensor", sensor
    assert [t["pipelineName"] for t in sensor["targets"]] == ["process_images"]
    assert sensor["sensorState"]["status"] == "RUNNING"
    shown = {s["name"]: s for s in data["schedulesOrError"]["results"]}
    defined = {s.name: s for s in defs.schedules}
    assert set(defined) >= SCHEDULES and set(shown) == set(defined)
    for name, schedule in defined.items():
        assert (shown[name]["pipelineName"], shown[name]["cronSchedule"]) == (schedule.job_name, schedule.cron_schedule)
    assert {shown[name]["scheduleState"]["status"] for name in SCHEDULES} == {"RUNNING"}


def _stop(server: subprocess.Popen, token: str) -> list[str]:
    """Ctrl-C to the process group, as `imago serve` does; what outlives a grace period is killed and named."""
    ours = _processes_with_token(token) | set(_descendants(server.pid))
    try:
        os.killpg(server.pid, signal.SIGINT)
    except ProcessLookupError:
        pass
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass
    _, alive = psutil.wait_procs(ours, timeout=10)
    alive = set(alive) | _processes_with_token(token)
    survivors = []
    for process in alive:
        try:
            survivors.append(" ".join(process.cmdline())[:200])
            process.kill()
        except psutil.NoSuchProcess:
            pass
    try:
        os.killpg(server.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    server.wait(timeout=10)
    return survivors


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _processes_with_token(token: str) -> set[psutil.Process]:
    found = set()
    for process in psutil.process_iter():
        try:
            if process.environ().get(TOKEN_VARIABLE) == token:
                found.add(process)
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            pass
    return found


# --- the browser ------------------------------------------------------------------------------------------

# Each rendered asset node (a foreignObject of the graph's SVG) with its label and box, and each edge's path.
RENDERED_GRAPH = """() => ({
  nodes: [...document.querySelectorAll('foreignObject')]
    .filter(f => f.querySelector('[class*="AssetNode_assetName"]'))
    .map(f => ({label: f.querySelector('[class*="AssetNode_assetName"]').textContent.trim(),
                x: +f.getAttribute('x'), y: +f.getAttribute('y'),
                w: +f.getAttribute('width'), h: +f.getAttribute('height')})),
  edges: [...document.querySelectorAll('svg path[marker-end]')].map(p => p.getAttribute('d')),
})"""


def _check_in_the_browser(base: str, location: str, expected: dict, settings: ImagoSettings, image_ids: list[int],
                          run_id: str) -> None:
    outside, errors = [], []
    with browser_page(viewport=(1440, 1300)) as page:
        page.on("request", lambda r: outside.append(r.url)
                if urlsplit(r.url).scheme in ("http", "https", "ws", "wss")
                and urlsplit(r.url).hostname not in LOCAL_HOSTS else None)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        _check_lineage(page, base, expected)
        initialization = json.loads(page.locator("#initialization-data").text_content())
        assert initialization["telemetryEnabled"] is False
        _check_automation_page(page, base, location)
        _check_partition(page, base, settings, image_ids, run_id)
        assert page.get_by_text("Join the Dagster community").count() == 0
    assert not outside, f"requests left the machine: {outside}"
    assert not errors, errors


def _check_lineage(page, base: str, expected: dict) -> None:
    with page.expect_response(lambda r: "op=LocationWorkspaceAssetsQuery" in r.url) as answer:
        page.goto(f"{base}/asset-groups")
    nodes = [node for repository in answer.value.json()["data"]["workspaceLocationEntryOrError"]
             ["locationOrLoadError"]["repositories"] for node in repository["assetNodes"]]
    shown = {"/".join(n["assetKey"]["path"]): n for n in nodes}
    assert len(shown) == len(nodes)
    assert set(shown) == set(expected["deps"]), set(shown) ^ set(expected["deps"])
    for name, deps in expected["deps"].items():
        assert {"/".join(d["path"]) for d in shown[name]["dependencyKeys"]} == deps, name
        assert shown[name]["groupName"] == expected["groups"][name], name
    for name in PER_IMAGE:
        dimensions = shown[name]["partitionDefinition"]["dimensionTypes"]
        assert [d["dynamicPartitionsDefinitionName"] for d in dimensions] == ["images"], name

    # the global graph opens with a box per group; expanded, it draws every asset and every edge
    groups = set(expected["groups"].values())
    page.locator("svg foreignObject").first.wait_for()
    group_boxes = '[class*="CollapsedGroupNode_collapsedGroupNodeBox"]'
    _settle(page, "([selector, n]) => document.querySelectorAll(selector).length === n", [group_boxes, len(groups)])
    assert page.locator(group_boxes).count() == len(groups)
    page.get_by_role("button", name="settings", exact=True).click()
    page.get_by_role("menuitem", name="Expand all groups").click()
    _settle(
        page, "n => document.querySelectorAll('foreignObject [class*=\"AssetNode_assetName\"]').length === n.nodes"
        " && document.querySelectorAll('svg path[marker-end]').length === n.edges",
        {"nodes": len(expected["deps"]), "edges": sum(map(len, expected["deps"].values()))})
    rendered = page.evaluate(RENDERED_GRAPH)
    labels = {node["label"]: _asset_named(node["label"], expected["deps"]) for node in rendered["nodes"]}
    assert sorted(labels.values()) == sorted(expected["deps"])
    edges = {_rendered_edge(path, rendered["nodes"], labels) for path in rendered["edges"]}
    assert edges == {(dep, name) for name, deps in expected["deps"].items() for dep in deps}

    # with the live data loaded, what the run materialized is drawn green
    page.keyboard.press("Escape")  # close the settings menu
    page.get_by_role("menuitem", name="Collapse all groups").wait_for(state="hidden")
    per_image = [label for label, name in labels.items() if name in PER_IMAGE]
    _settle(page, f"names => Object.values(({NODE_COLOURS})(names)).every(s => s.includes('background-green'))",
            per_image)
    colours = page.evaluate(NODE_COLOURS, per_image)
    assert all("background-green" in colour for colour in colours.values()), colours
    screenshot(page, "dagster-asset-graph.png")


def _settle(page, condition: str, arg) -> None:
    """Wait for the layout to reach what is expected; when it does not, the assertions after say how it differs."""
    try:
        page.wait_for_function(condition, arg=arg, timeout=20_000)
    except PlaywrightTimeoutError:
        pass


def _asset_named(label: str, names) -> str:
    """The asset a node label stands for: its key's last part, shortened with '…' at low zoom."""
    head, ellipsis, tail = label.partition("…")
    matches = [n for n in names if (n.rsplit("/", 1)[-1] == label if not ellipsis else
                                    n.rsplit("/", 1)[-1].startswith(head) and n.rsplit("/", 1)[-1].endswith(tail))]
    assert len(matches) == 1, (label, matches)
    return matches[0]


def _rendered_edge(path: str, nodes: list[dict], labels: dict[str, str]) -> tuple[str, str]:
    """An edge runs from the middle of its source's right side to just left of its target's middle."""
    numbers = [float(n) for n in re.findall(r"-?[\d.]+", path)]
    (x0, y0), (x1, y1) = numbers[:2], numbers[-2:]
    sources = [n for n in nodes if abs(n["x"] + n["w"] - x0) < 1 and abs(n["y"] + n["h"] / 2 - y0) < 1]
    targets = [n for n in nodes if 0 <= n["x"] - x1 < 12 and abs(n["y"] + n["h"] / 2 - y1) < 1]
    assert len(sources) == 1 and len(targets) == 1, (path, sources, targets)
    return labels[sources[0]["label"]], labels[targets[0]["label"]]


def _check_automation_page(page, base: str, location: str) -> None:
    page.goto(f"{base}/automation")
    for name in (*sorted(SCHEDULES), "upload_sensor"):
        row = page.locator('[class*="VirtualizedTable_row"]').filter(has=page.get_by_text(name, exact=True))
        # its switch is on (a styled switch: the checkbox itself is hidden)
        switched_on = row.locator("input[type=checkbox]:checked")
        try:
            try:
                switched_on.wait_for(state="attached", timeout=60_000)
            except PlaywrightTimeoutError:  # on a busy machine the page can stay on its first, failed load of
                page.reload()               # the switches' states (rows drawn, switches never): as a person would
                switched_on.wait_for(state="attached", timeout=60_000)
        except PlaywrightTimeoutError:  # say what the page showed instead
            rows = page.locator('[class*="VirtualizedTable_row"]')
            switches = "boxes => boxes.map(box => box.checked)"
            shown = [(r.inner_text().split("\n")[:3], r.locator("input[type=checkbox]").evaluate_all(switches))
                     for r in rows.all()]
            screenshot(page, "dagster-automation-failed.png")
            raise AssertionError(f"{name}: no row with its switch on; rows shown: {shown}") from None
    screenshot(page, "dagster-automation.png")
    page.goto(f"{base}/locations/{location}/sensors/upload_sensor")
    target = page.locator("tr", has=page.get_by_text("Target", exact=True))
    target.get_by_text("process_images", exact=True).wait_for()


def _check_partition(page, base: str, settings: ImagoSettings, image_ids: list[int], run_id: str) -> None:
    key = str(image_ids[0])
    with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("exif"), asset_partitions=[key]), limit=1).records
    metadata = records[0].asset_materialization.metadata
    page.goto(f"{base}/assets/exif?view=partitions&partition={key}")
    page.get_by_text("Metadata", exact=True).wait_for()
    page.get_by_text("Materialized", exact=True).wait_for()
    page.get_by_text(f"Materialized ({len(image_ids)})", exact=True).wait_for()
    page.get_by_role("link", name=run_id[:8]).wait_for()
    rows = page.locator("table tr").evaluate_all(
        "rows => rows.map(r => [...r.querySelectorAll('td')].slice(0, 2).map(td => td.innerText.trim()))")
    shown = {row[0]: row[1] for row in rows if len(row) == 2}
    assert set(metadata) <= set(shown), set(metadata) - set(shown)
    for name, value in metadata.items():
        if isinstance(value, dg.FloatMetadataValue):
            assert float(shown[name].replace(",", "")) == pytest.approx(value.value), name
        else:
            assert shown[name] == str(value.value), name
    assert shown["images"] == str(len(image_ids)) and shown["failed"] == "0"
    screenshot(page, "dagster-partition.png")
