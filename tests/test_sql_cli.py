"""`imago sql`: queries over the lake views and the built models, as a table, CSV or JSON lines."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta

import pytest
from typer.testing import CliRunner

from imago_pipeline.cli import app
from imago_pipeline.core.analytics import build_all, load_project
from imago_pipeline.core.stores.lake import Lake
from imago_pipeline.core.stores.lake_tables import EXIF, VISION

T0 = datetime(2025, 3, 1, 12, tzinfo=UTC)


@pytest.fixture
def lake(tmp_path, monkeypatch):
    """A small lake written by the lake's own writer (Canon image 2 reprocessed), with the models built."""
    root = tmp_path / "lake"
    store = Lake(root)
    cameras = {1: ("Canon", "Canon EOS 40D"), 2: ("Canon", "Canon EOS 40D"), 3: ("Apple", "iPhone 6"), 4: (None, None)}
    rows = [{"image_id": i, "make": make, "model": model, "extracted_at": T0, "tenant_id": 1 + (i > 2),
             "date": "2025-03-01"} for i, (make, model) in cameras.items()]
    store.write_batch("exif", rows, batch_id="run1", schema=EXIF.schema)
    store.write_batch("exif", [{**rows[1], "extracted_at": T0 + timedelta(days=1)}], batch_id="run2",
                      schema=EXIF.schema)
    store.write_batch("vision", [{"image_id": 1, "tags": ["landscape", "canon"], "confidence": 0.5,
                                  "created_at": T0, "tenant_id": 1, "date": "2025-03-01"}],
                      batch_id="run1", schema=VISION.schema)
    build_all(load_project(min_group_size=1), root)
    monkeypatch.setenv("IMAGO_HOME", str(tmp_path / "imago"))
    monkeypatch.setenv("IMAGO_ANALYTICS_MIN_GROUP_SIZE", "1")  # a lake of four images
    monkeypatch.setenv("IMAGO_LAKE_DIR", str(root))
    return root


def _sql(*args: str):
    return CliRunner().invoke(app, ["sql", *args])


def test_a_query_prints_a_table(lake):
    result = _sql("SELECT make, model, images FROM camera_counts ORDER BY images DESC")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if "│" in line]
    assert "Canon EOS 40D" in lines[0] and lines[0].rstrip("│ ").endswith("2")  # image 2 counted once
    assert "iPhone 6" in lines[1]
    assert result.stderr.strip() == "2 rows"


def test_csv_output(lake):
    result = _sql("--csv", "SELECT image_id, make, tags FROM exif LEFT JOIN vision USING (image_id) ORDER BY 1")
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows[0] == ["image_id", "make", "tags"]
    assert rows[1] == ["1", "Canon", '["landscape", "canon"]'] and rows[4] == ["4", "", ""]
    assert len(rows) == 5  # one row per image, reprocessed or not


def test_json_lines_output(lake):
    result = _sql("--json", "SELECT image_id, extracted_at, date FROM exif WHERE image_id = 2")
    assert result.exit_code == 0, result.output
    record, = [json.loads(line) for line in result.stdout.splitlines()]
    assert record == {"image_id": 2, "extracted_at": (T0 + timedelta(days=1)).isoformat(), "date": "2025-03-01"}


@pytest.mark.parametrize(("query", "message"), [
    ("SELEC make FROM exif", "imago sql: Parser Error: syntax error at or near \"SELEC\""),
    ("SELECT * FROM nowhere", "imago sql: Catalog Error: Table with name nowhere does not exist!"),
    ("COPY exif TO 'out.csv'", "imago sql: only SELECT queries run here, not COPY"),
    ("SELECT 1; SELECT 2", "imago sql: expected one statement, got 2"),
    ("SELECT * FROM read_csv('/etc/passwd')", "imago sql: Permission Error: Cannot access file \"/etc/passwd\""),
])
def test_a_bad_query_is_one_line_and_exit_code_1(lake, query, message):
    result = _sql(query)
    assert result.exit_code == 1
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1
    assert "Traceback" not in result.output and result.stdout == ""


def test_tables_lists_every_view_with_its_columns(lake):
    result = _sql("--tables")
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    for view in ("exif", "thumbnail", "ocr", "embedding", "classification", "vision", "images", "inference_log",
                 "feedback", "camera_counts", "tenant_overview"):
        assert f"│ {view} " in text
    assert "make varchar" in text and "tags varchar[]" in text


def test_a_fresh_install_has_empty_views(tmp_path, monkeypatch):
    monkeypatch.setenv("IMAGO_HOME", str(tmp_path / "imago"))
    monkeypatch.delenv("IMAGO_LAKE_DIR", raising=False)
    result = _sql("--json", "SELECT count(*) AS n FROM exif")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"n": 0}


def test_usage_errors_exit_2(lake):
    assert _sql().exit_code == 2
    assert _sql("--csv", "--json", "SELECT 1").exit_code == 2


def test_build_materializes_every_model_as_a_dagster_run(lake, tmp_path, monkeypatch):
    import dagster as dg

    for name, value in {"DAGSTER_HOME": str(tmp_path / "dagster"), "DAGSTER_EVENT_BATCH_SIZE": "1000",
                        "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS": "1"}.items():
        monkeypatch.setenv(name, value)
    (lake / "models").rename(tmp_path / "old-models")  # nothing built yet
    result = _sql("--build", "--json", "SELECT * FROM camera_counts")
    assert result.exit_code == 0, result.output
    # no `images` table in this lake: daily_ingest is empty, which its row-count floor warns about
    assert "8 SQL models built" in result.stderr and "failed data tests: row_count_min_daily_ingest" in result.stderr
    assert [json.loads(line)["images"] for line in result.stdout.splitlines()] == [2, 1]
    with dg.DagsterInstance.from_config(str(tmp_path / "dagster")) as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey(["analytics", "camera_counts"]))
        assert event.asset_materialization.metadata["dagster/row_count"].value == 2
