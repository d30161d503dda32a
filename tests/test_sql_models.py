"""SQL models over the lake: parsing and validation, building on a lake the real pipeline wrote (with a
reprocessed image), data tests as asset checks, the asset graph, and declarative automation."""

from __future__ import annotations

import shutil
from collections import Counter
from datetime import timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from imago_pipeline.core.analytics import ModelError, build_all, load_project, open_analytics, run_query
from imago_pipeline.core.analytics.project import default_project_dir
from imago_pipeline.core.catalog import Catalog
from imago_pipeline.core.catalog.models import utcnow
from imago_pipeline.core.config import ImagoSettings
from imago_pipeline.core.enrichment.exif import extract_exif
from imago_pipeline.core.enrichment.places import place_fields
from imago_pipeline.core.ingest import register_image
from imago_pipeline.core.stores.blobs import LocalBlobStore
from imago_pipeline.core.stores.lake import Lake
from imago_pipeline.core.stores.lake_tables import CLASSIFICATION, EXIF, IMAGES
from imago_pipeline.dagster_instance import prepare_dagster_home
from imago_pipeline.definitions import build_definitions
from imago_pipeline.defs.analytics.assets import MODEL_AUTOMATION, build_sql_model_assets, model_key
from imago_pipeline.defs.resources import LakeResource
from imago_pipeline.in_process import process_images
from tests.conftest import SAMPLES

IMAGE_SUFFIXES = (".jpg", ".png", ".webp", ".tif")


def _project(tmp_path: Path, models: dict[str, str], schema: str = "") -> Path:
    root = tmp_path / "project"
    (root / "models").mkdir(parents=True)
    for name, sql in models.items():
        (root / "models" / f"{name}.sql").write_text(sql)
    if schema:
        (root / "schema.yml").write_text(schema)
    return root


# --- parsing and validation ------------------------------------------------------------------------------

def test_refs_and_sources_come_from_the_parsed_tree_wherever_they_are(tmp_path):
    root = _project(tmp_path, {
        "base": "SELECT tenant_id, count(*) AS n FROM {{ source('lake', 'images') }} GROUP BY 1",
        "other": "SELECT 1 AS one FROM {{ source('lake', 'ocr') }}",
        "top": """
            WITH recent AS (SELECT * FROM {{ ref('base') }} WHERE n > 0)
            SELECT r.tenant_id, e.make
            FROM recent AS r
            JOIN (SELECT tenant_id, make FROM {{ source('lake', 'exif') }}) AS e USING (tenant_id)
            WHERE r.tenant_id IN (SELECT tenant_id FROM {{ source('lake', 'classification') }})
              AND EXISTS (SELECT 1 FROM {{ ref('other') }})
        """,
    })
    project = load_project(root)
    top = project.models["top"]
    assert top.refs == ("base", "other")
    assert set(top.sources) == {"exif", "classification"}
    assert list(project.models).index("top") > list(project.models).index("base")  # dependency order
    compiled = project.compile("top", tmp_path / "lake")
    assert "READ_PARQUET" in compiled and f"'{tmp_path / 'lake' / 'models' / 'base' / 'base.parquet'}'" in compiled
    assert "AS r" in compiled and "FROM exif" in compiled and "__imago" not in compiled


def test_a_ref_to_no_model_is_an_error_naming_the_file(tmp_path):
    root = _project(tmp_path, {"a": "SELECT * FROM {{ ref('nope') }}"})
    with pytest.raises(ModelError, match=r"a\.sql: ref\('nope'\) names no model"):
        load_project(root)


def test_a_ref_cycle_is_an_error(tmp_path):
    root = _project(tmp_path, {"a": "SELECT * FROM {{ ref('b') }}", "b": "SELECT * FROM {{ ref('c') }}",
                               "c": "WITH x AS (SELECT * FROM {{ ref('a') }}) SELECT * FROM x"})
    with pytest.raises(ModelError, match=r"ref cycle (a|b|c) -> .* -> \1"):
        load_project(root)


@pytest.mark.parametrize(("name", "sql", "message"), [
    ("a", "SELECT * FROM {{ source('lake', 'secrets') }}", r"a\.sql: source\('lake', 'secrets'\) is not a lake table"),
    ("a", "SELECT * FROM {{ source('warehouse', 'exif') }}", r"a\.sql: unknown source 'warehouse'"),
    ("a", "SELECT * FROM exif", r"a\.sql: reads table 'exif' directly"),
    ("a", "SELECT * FROM read_parquet('/etc/x.parquet')", r"a\.sql: reads files directly"),
    ("a", "SELECT FROM WHERE {{ source('lake', 'exif') }}", r"a\.sql: SQL does not parse at line 1"),
    ("a", "DELETE FROM {{ source('lake', 'exif') }}", r"a\.sql: a model is exactly one SELECT"),
    ("Bad-Name", "SELECT 1 FROM {{ source('lake', 'exif') }}", r"Bad-Name\.sql: model name .* not a safe identifier"),
    ("exif", "SELECT 1 FROM {{ source('lake', 'exif') }}", r"exif\.sql: model name 'exif' is already a lake table"),
])
def test_invalid_models_are_clear_errors(tmp_path, name, sql, message):
    with pytest.raises(ModelError, match=message):
        load_project(_project(tmp_path, {name: sql}))


def test_schema_yml_is_validated(tmp_path):
    sql = {"m": "SELECT make FROM {{ source('lake', 'exif') }}"}
    with pytest.raises(ModelError, match=r"schema\.yml: model 'm', column 'make': unknown test 'positive'"):
        load_project(_project(tmp_path / "1", sql, "models:\n  - name: m\n    columns:\n"
                                                    "      - name: make\n        data_tests: [positive]\n"))
    with pytest.raises(ModelError, match=r"declares ghost but there is no such model file"):
        load_project(_project(tmp_path / "2", sql, "models:\n  - name: ghost\n"))
    with pytest.raises(ModelError, match=r"accepted_values needs a non-empty `values` list"):
        load_project(_project(tmp_path / "3", sql, "models:\n  - name: m\n    columns:\n      - name: make\n"
                                                    "        data_tests:\n          - accepted_values: {}\n"))


def test_the_shipped_project_loads_with_a_test_on_every_model():
    project = load_project(default_project_dir())
    assert {"daily_ingest", "tenant_overview", "camera_counts", "label_distribution", "feedback_agreement",
            "inference_latency", "ocr_languages", "places"} <= set(project.models)
    assert project.models["tenant_overview"].refs == ("daily_ingest",)
    assert all(model.tests and model.description for model in project.models.values())
    names = {test.name for model in project.models.values() for test in model.tests}
    assert {"not_null_camera_counts_make", "accepted_values_label_distribution_label",
            "unique_tenant_overview_tenant_id", "row_count_min_daily_ingest"} <= names


def test_a_model_that_outputs_image_ids_is_refused(tmp_path):
    root = _project(tmp_path, {"per_image": "SELECT image_id, make FROM {{ source('lake', 'exif') }}"})
    with pytest.raises(ModelError, match=r"per_image\.sql: outputs image_id; models hold aggregates only"):
        build_all(load_project(root), tmp_path / "lake")
    assert not list((tmp_path / "lake" / "models").rglob("*.parquet"))


def test_every_view_exists_on_a_fresh_install_and_models_build_empty(tmp_path):
    lake = tmp_path / "lake"  # not even the folder exists yet
    results = build_all(load_project(), lake)
    assert all(built.rows == 0 for built, _ in results)
    con = open_analytics(lake)
    assert run_query(con, "SELECT count(*) FROM exif").fetchone() == (0,)
    assert "make" in run_query(con, "SELECT * FROM exif").columns
    assert run_query(con, "SELECT count(*) FROM tenant_overview").fetchone() == (0,)


# --- a lake written by the real pipeline -----------------------------------------------------------------

@pytest.fixture(scope="module")
def processed(tmp_path_factory):
    """The samples through the real pipeline, then one image reprocessed: its rows are in the lake twice."""
    home = tmp_path_factory.mktemp("imago")
    # each sample is its own camera: groups of one are shown here (the default leaves out groups under 5)
    settings = ImagoSettings(home=home, database_url=f"sqlite:///{home / 'catalog.db'}", workers=2, batch_size=50,
                             drop_dir=home / "drop", analytics_min_group_size=1)
    catalog = Catalog.connect(settings.catalog_url)
    tenant = catalog.clients.get_or_create("t")
    store = LocalBlobStore(settings.blob_root)
    ids = {path.name: register_image(catalog, store, settings, tenant_id=tenant.id, filename=path.name,
                                     data=path.read_bytes(), status="queued").image.id
           for path in sorted(SAMPLES.iterdir()) if path.suffix.lower() in IMAGE_SUFFIXES}
    with pytest.MonkeyPatch.context() as env:
        env.setenv("DAGSTER_HOME", str(home / "dagster"))
        env.setenv("DAGSTER_EVENT_BATCH_SIZE", "1000")
        env.setenv("DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS", "1")
        with dg.DagsterInstance.from_config(str(prepare_dagster_home(settings))) as instance:
            assert all(run.success for run in process_images(sorted(ids.values()), settings=settings,
                                                             instance=instance))
            again = process_images([ids["Canon_40D.jpg"]], settings=settings, instance=instance)
            assert again[0].success
    catalog.dispose()
    return settings, ids


@pytest.fixture
def lake_copy(processed, tmp_path) -> Path:
    settings, _ = processed
    shutil.copytree(settings.lake_root, tmp_path / "lake")
    return tmp_path / "lake"


def _model(lake: Path, name: str) -> list[tuple]:
    return duckdb.sql(f"SELECT * FROM read_parquet('{lake / 'models' / name / (name + '.parquet')}')").fetchall()


def test_models_on_the_samples_hold_their_real_figures(processed, lake_copy):
    _, ids = processed
    assert all(outcome.passed for _, outcomes in build_all(load_project(min_group_size=1), lake_copy)
               for outcome in outcomes)

    expected = Counter()
    for name in ids:
        record = extract_exif((SAMPLES / name).read_bytes(), max_pixels=89_000_000)
        if record.make:
            expected[(record.make, record.model)] += 1
    cameras = {(make, model): images for make, model, images, _, _ in _model(lake_copy, "camera_counts")}
    assert cameras == dict(expected) and cameras[("Canon", "Canon EOS 40D")] == 1  # reprocessed, counted once

    records = [extract_exif((SAMPLES / name).read_bytes(), max_pixels=89_000_000).to_dict() for name in ids]
    where = Counter((p["country_code"], p["city"]) for p in place_fields(records) if p["city"])
    places = {(country, city): images for country, city, _, images, _, _, _ in _model(lake_copy, "places")}
    assert places == dict(where) and places[("ES", "Moncloa-Aravaca")] == 1  # iphone_hdr_YES.jpg, in Madrid

    (tenant, _day, images, size, done, failed), = _model(lake_copy, "daily_ingest")
    assert (images, done, failed) == (len(ids), len(ids), 0)
    assert size == sum((SAMPLES / name).stat().st_size for name in ids)
    overview = _model(lake_copy, "tenant_overview")
    assert [row[:5] for row in overview] == [(tenant, images, size, done, failed)]

    labels = _model(lake_copy, "label_distribution")
    assert sum(row[2] for row in labels) == len(ids) and {row[1] for row in labels} <= {"cat", "dog", "other"}
    languages = {row[0]: row[1] for row in _model(lake_copy, "ocr_languages")}
    assert languages.get("en", 0) >= 1  # phototest.tif is English
    assert _model(lake_copy, "inference_latency") == [] and _model(lake_copy, "feedback_agreement") == []


def test_sources_keep_the_newest_row_per_image(processed, lake_copy):
    _, ids = processed
    canon = ids["Canon_40D.jpg"]
    raw = duckdb.sql(f"SELECT extracted_at FROM read_parquet('{lake_copy}/exif/*/*/part-*.parquet') "
                     f"WHERE image_id = {canon} ORDER BY 1").fetchall()
    assert len(raw) == 2  # processed, then reprocessed: two rows in two files
    con = open_analytics(lake_copy)
    assert run_query(con, f"SELECT extracted_at FROM exif WHERE image_id = {canon}").fetchall() == [raw[-1]]
    assert run_query(con, "SELECT count(*), count(DISTINCT image_id) FROM exif").fetchone() == (len(ids), len(ids))

    # a newer row with other values wins, in the view and in the model built on it
    row = dict(zip(EXIF.schema.names, run_query(con, f"SELECT {', '.join(EXIF.schema.names)} FROM exif "
                                                            f"WHERE image_id = {canon}").fetchone()))
    tenant_id, day = run_query(con, f"SELECT tenant_id, date FROM exif WHERE image_id = {canon}").fetchone()
    Lake(lake_copy).write_batch("exif", [{**row, "make": "Leica", "model": "M11", "tenant_id": tenant_id, "date": day,
                                          "extracted_at": row["extracted_at"] + timedelta(hours=1)}],
                                batch_id="later", schema=EXIF.schema)
    build_all(load_project(min_group_size=1), lake_copy)
    cameras = {(make, model): images for make, model, images, _, _ in _model(lake_copy, "camera_counts")}
    assert cameras[("Leica", "M11")] == 1 and ("Canon", "Canon EOS 40D") not in cameras


# --- Dagster: assets, checks, lineage, automation --------------------------------------------------------

def test_models_are_assets_with_lineage_to_the_lake_assets_and_to_each_other(processed):
    settings, _ = processed
    graph = build_definitions(settings).resolve_asset_graph()
    camera = graph.get(model_key("camera_counts"))
    assert camera.parent_keys == {dg.AssetKey("exif")}
    assert camera.group_name == "sql_models" and camera.kinds == {"duckdb", "sql", "parquet"}
    assert camera.description and camera.metadata["sql_file"].value == "dbt_like_sql/models/camera_counts.sql"
    assert graph.get(model_key("daily_ingest")).parent_keys == {dg.AssetKey("image_summary")}
    assert graph.get(model_key("inference_latency")).parent_keys == {dg.AssetKey("classifier_monitoring")}
    assert graph.get(model_key("tenant_overview")).parent_keys == {model_key("daily_ingest")}
    assert model_key("daily_ingest") in graph.get(dg.AssetKey("image_summary")).child_keys
    checks = {key.name for key in graph.asset_check_keys if key.asset_key == model_key("camera_counts")}
    assert checks == {"not_null_camera_counts_make", "not_null_camera_counts_images"}


def test_data_tests_pass_as_asset_checks_on_good_data(processed, lake_copy):
    settings, _ = processed
    assets = build_sql_model_assets(settings)
    result = dg.materialize(assets, resources={"lake": LakeResource(root=str(lake_copy))},
                            instance=dg.DagsterInstance.ephemeral())
    assert result.success
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert len(evaluations) == sum(len(a.check_specs) for a in assets)
    assert all(e.passed for e in evaluations.values())
    assert evaluations["not_null_camera_counts_make"].metadata["failing_rows"].value == 0
    camera = result.asset_materializations_for_node("analytics__camera_counts")[0].metadata
    assert camera["dagster/row_count"].value >= 3 and "make" in {c.name for c in
                                                                camera["dagster/column_schema"].value.columns}


def test_a_data_test_fails_on_bad_data_in_the_model_input(processed, lake_copy):
    settings, ids = processed
    con = open_analytics(lake_copy)
    nikon = ids["Nikon_D70.jpg"]
    tenant_id, day = run_query(con, f"SELECT tenant_id, date FROM classification WHERE image_id = {nikon}").fetchone()
    Lake(lake_copy).write_batch("classification", [
        {"image_id": nikon, "label": "horse", "probability": 0.9, "model_version": "v9-bad",
         "created_at": utcnow(), "run_id": "bad", "tenant_id": tenant_id, "date": day}],
        batch_id="bad", schema=CLASSIFICATION.schema)
    label_distribution = [a for a in build_sql_model_assets(settings) if a.key == model_key("label_distribution")]
    result = dg.materialize(label_distribution, resources={"lake": LakeResource(root=str(lake_copy))},
                            instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    evaluation = {e.check_name: e for e in result.get_asset_check_evaluations()}[
        "accepted_values_label_distribution_label"]
    assert not evaluation.passed and evaluation.metadata["failing_rows"].value == 1
    assert evaluation.severity == dg.AssetCheckSeverity.ERROR


def test_models_of_image_content_leave_out_groups_too_small_to_be_anonymous(processed, lake_copy):
    """With the default k = 5, no camera, label or language group of fewer than five images is in a model,
    so no aggregate describes one image (nor keeps one that was erased); the counts that describe no
    content (images per tenant and day) are whole."""
    _, ids = processed
    build_all(load_project(), lake_copy)
    assert _model(lake_copy, "camera_counts") == []  # every sample camera is alone
    assert _model(lake_copy, "places") == []  # one photo in Madrid
    labels = _model(lake_copy, "label_distribution")
    assert all(row[2] >= 5 for row in labels)
    assert _model(lake_copy, "ocr_languages") == []  # one English page
    assert _model(lake_copy, "daily_ingest")[0][2] == len(ids)
    five = load_project(min_group_size=5)
    assert five.models["camera_counts"].code_version != load_project(min_group_size=1).models[
        "camera_counts"].code_version  # changing k makes the models stale
    assert five.models["daily_ingest"].code_version == load_project(min_group_size=1).models[
        "daily_ingest"].code_version


def test_a_failing_blocking_test_stops_the_models_built_on_it(tmp_path):
    lake = tmp_path / "lake"
    Lake(lake).write_batch("images", [{"image_id": i, "status": "done", "tenant_id": 1, "date": "2025-01-01"}
                                      for i in (1, 2)], batch_id="r1", schema=IMAGES.schema)
    root = _project(tmp_path, {
        "per_tenant": "SELECT tenant_id FROM {{ source('lake', 'images') }}",  # one row per image: not unique
        "summary": "SELECT count(*) AS tenants FROM {{ ref('per_tenant') }}",
    }, "models:\n  - name: per_tenant\n    columns:\n      - name: tenant_id\n        data_tests: [unique]\n")
    settings = ImagoSettings(home=tmp_path / "imago", lake_dir=lake)
    result = dg.materialize(build_sql_model_assets(settings, root), resources={"lake": LakeResource(root=str(lake))},
                            instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    check, = result.get_asset_check_evaluations()
    assert not check.passed and check.metadata["failing_rows"].value == 2
    assert result.asset_materializations_for_node("analytics__per_tenant")
    assert not result.asset_materializations_for_node("analytics__summary")


def test_models_refresh_after_an_upstream_update_even_with_partitions_never_materialized(tmp_path):
    settings = ImagoSettings(home=tmp_path / "imago")
    defs = build_definitions(settings)
    instance = dg.DagsterInstance.ephemeral()
    models = dg.AssetSelection.groups("sql_models")
    camera, daily = model_key("camera_counts"), model_key("daily_ingest")

    first = dg.evaluate_automation_conditions(defs=defs, instance=instance, asset_selection=models)
    assert first.get_num_requested(camera) == 1  # never built: built once
    for key in models.resolve(defs.resolve_asset_graph()):
        instance.report_runless_asset_event(dg.AssetMaterialization(key))
    quiet = dg.evaluate_automation_conditions(defs=defs, instance=instance, asset_selection=models,
                                              cursor=first.cursor)
    assert quiet.total_requested == 0

    # thousands of images in production; here two, of which one is never materialized (erased, say)
    instance.add_dynamic_partitions("images", ["1", "2"])
    instance.report_runless_asset_event(dg.AssetMaterialization("exif", partition="1"))
    updated = dg.evaluate_automation_conditions(defs=defs, instance=instance, asset_selection=models,
                                                cursor=quiet.cursor)
    assert updated.get_num_requested(camera) == 1
    assert updated.get_num_requested(daily) == 0  # image_summary did not change

    again = dg.evaluate_automation_conditions(defs=defs, instance=instance, asset_selection=models,
                                              cursor=updated.cursor)
    assert again.get_num_requested(camera) == 0  # nothing new since


def test_plain_eager_would_wait_forever_for_the_missing_partition():
    partitions = dg.DynamicPartitionsDefinition(name="images")

    @dg.asset(partitions_def=partitions)
    def exif(): ...

    @dg.asset(deps=[exif], automation_condition=dg.AutomationCondition.eager())
    def with_eager(): ...

    @dg.asset(deps=[exif], automation_condition=MODEL_AUTOMATION)
    def with_ours(): ...

    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("images", ["1", "2"])
    for key in ("with_eager", "with_ours"):
        instance.report_runless_asset_event(dg.AssetMaterialization(key))
    first = dg.evaluate_automation_conditions(defs=[exif, with_eager, with_ours], instance=instance)
    instance.report_runless_asset_event(dg.AssetMaterialization("exif", partition="1"))
    result = dg.evaluate_automation_conditions(defs=[exif, with_eager, with_ours], instance=instance,
                                               cursor=first.cursor)
    assert result.get_num_requested(dg.AssetKey("with_ours")) == 1
    assert result.get_num_requested(dg.AssetKey("with_eager")) == 0
