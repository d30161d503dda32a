"""The classifier: a tiny model trained in the suite, the registry, the asset, feedback, prediction and the
retraining gate, on real cats-and-dogs photos."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import dagster as dg
import httpx
import pytest

from imago_api.main import create_app
from imago_pipeline.core.ingest import register_image
from imago_pipeline.core.stores.blobs import LocalBlobStore
from imago_pipeline.in_process import process_images
from tests.conftest import shared
from tests.http_server import serve
from training.data import load_folder
from training.model import ModelConfig
from training.registry import BASELINE, open_model_store
from training.train import TrainConfig, train

TINY = TrainConfig(model=ModelConfig(image_size=32, widths=(8, 16)), epochs=3, batch_size=16, seed=7)


def _subset(target: Path, split: str, per_class: int, labels=("cat", "dog")) -> Path:
    for label in labels:
        (target / label).mkdir(parents=True, exist_ok=True)
        for path in sorted(shared("catsdogs", split, label).glob("*.jpg"))[:per_class]:
            shutil.copy(path, target / label / path.name)
    return target


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("catsdogs")
    return {"train": _subset(root / "train", "train", 150), "val": _subset(root / "val", "val", 40),
            "cats_only": _subset(root / "cats_only", "train", 30, labels=("cat",))}


@pytest.fixture(scope="module")
def tiny_model(folders, tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    return train(load_folder(folders["train"]), load_folder(folders["val"]), out, TINY, name="tiny", verbose=0)


def test_a_tiny_model_trains_and_writes_its_card_and_curve(tiny_model, folders):
    card = json.loads(tiny_model.card_path.read_text())
    assert card["parameters"] < 20_000 and card["config"]["epochs"] == 3
    assert set(card["metrics"]) >= {"accuracy", "precision", "recall", "roc_auc", "confusion_matrix"}
    assert sum(sum(row) for row in card["metrics"]["confusion_matrix"]) == 80
    assert len(card["training_data"]["fingerprint"]) == 64 and card["training_data"]["images"] == 300
    assert tiny_model.curve_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = train(load_folder(folders["train"]), load_folder(folders["val"]), tiny_model.model_path.parent / "again",
                  TINY, name="tiny", verbose=0)
    assert again.card["metrics"]["accuracy"] == card["metrics"]["accuracy"]  # fixed seeds


def test_registry_keeps_exactly_one_production_version(catalog, settings, tiny_model):
    registry = open_model_store(catalog, LocalBlobStore(settings.blob_root), settings.models_dir)
    first = registry.register(tiny_model.model_path, tiny_model.card, status="production")
    second = registry.register(tiny_model.model_path, {**tiny_model.card}, status="candidate")
    assert registry.production().version == first.version and second.status == "candidate"
    registry.promote(second.version)
    statuses = {m.version: m.status for m in registry.versions()}
    assert statuses == {first.version: "retired", second.version: "production"}
    assert registry.local_path(registry.production()).read_bytes() == tiny_model.model_path.read_bytes()


def test_fresh_install_uses_the_shipped_baseline(catalog, settings):
    registry = open_model_store(catalog, LocalBlobStore(settings.blob_root), settings.models_dir)
    production = registry.production()
    assert production.status == "production" and production.metrics["accuracy"] >= 0.80
    assert BASELINE.model.stat().st_size <= 10 * 1024 * 1024


def _register(catalog, settings, paths):
    tenant = catalog.clients.get_or_create("t")
    store = LocalBlobStore(settings.blob_root)
    ids = [register_image(catalog, store, settings, tenant_id=tenant.id, filename=p.name, data=p.read_bytes(),
                          status="queued").image.id for p in paths]
    return tenant, ids


def _photos(split: str, per_class: int, skip: int = 0) -> list[Path]:
    return [p for label in ("cat", "dog")
            for p in sorted(shared("catsdogs", split, label).glob("*.jpg"))[skip:skip + per_class]]


def test_classification_asset_feedback_prediction_and_metrics(catalog, settings, dagster_instance, tiny_model):
    registry = open_model_store(catalog, LocalBlobStore(settings.blob_root), settings.models_dir)
    model = registry.register(tiny_model.model_path, tiny_model.card, status="production")
    tenant, ids = _register(catalog, settings, _photos("val", 3, skip=100))

    assert process_images(ids, settings=settings, instance=dagster_instance)[0].success
    scoped = catalog.for_tenant(tenant.id)
    for image_id in ids:
        row = scoped.get_classification(image_id)
        assert row.label in ("cat", "dog") and 0.5 <= row.probability <= 1 and row.model_version == model.version
        assert row.label in scoped.get_vision(image_id).tags  # the local vision provider uses the label
        stage = {s.stage: s for s in scoped.get_stages(image_id)}["classification"]
        assert stage.code_version == f"classify-v1|model-{model.version.rsplit('-', 1)[-1]}"
    assert dagster_instance.get_materialized_partitions(dg.AssetKey("classification")) == {str(i) for i in ids}

    app = create_app(settings)
    key = catalog.clients.issue_key(tenant.id)
    reader = catalog.clients.issue_key(tenant.id, ["images:read"])
    with serve(app) as url, httpx.Client(base_url=url, headers={"X-API-Key": key}, timeout=60) as client:
        verdict = client.post(f"/images/{ids[0]}/feedback", json={"correct": False})
        assert verdict.status_code == 201, verdict.text
        body = verdict.json()
        assert body["model_version"] == model.version and body["label"] != body["predicted_label"]
        assert client.post(f"/images/{ids[1]}/feedback", json={"correct": True}).json()["label"] == \
            scoped.get_classification(ids[1]).label
        assert client.post(f"/images/{ids[2]}/feedback", json={"correct": "maybe"}).status_code == 422
        assert client.post("/images/999999/feedback", json={"correct": True}).status_code == 404

        photo = _photos("val", 1, skip=120)[0]
        predicted = client.post("/api/predict", files={"file": ("x.jpg", photo.read_bytes())})
        assert predicted.status_code == 200, predicted.text
        assert predicted.json()["model_version"] == model.version and predicted.json()["label"] in ("cat", "dog")
        refused = client.post("/api/predict", files={"file": ("x.jpg", b"not an image")})
        assert refused.status_code == 415
        denied = client.post("/api/predict", headers={"X-API-Key": reader}, files={"file": ("x", photo.read_bytes())})
        assert denied.status_code == 403 and "ai:use" in denied.json()["error"]["message"]
        metrics = client.get("/metrics").text
        assert "imago_inference_latency_seconds_bucket" in metrics
        assert f'imago_prediction_feedback_agreement_ratio{{model_version="{model.version}"}} 0.5' in metrics

    from sqlalchemy import select

    from imago_pipeline.core.catalog.models import InferenceLog

    with catalog.session() as session:
        logs = session.scalars(select(InferenceLog).order_by(InferenceLog.id)).all()
    assert [(log.success, log.model_version) for log in logs] == [(True, model.version), (False, model.version)]
    assert logs[1].error == "unsupported_type" and logs[0].latency_ms > 0
    assert {c.name for c in InferenceLog.__table__.columns} == {
        "id", "tenant_id", "success", "error", "latency_ms", "model_version", "label", "created_at"}  # no content

    import duckdb

    from imago_pipeline.defs.monitoring.assets import classifier_monitoring
    from imago_pipeline.defs.resources import build_resources

    result = dg.materialize([classifier_monitoring], resources=build_resources(settings), instance=dagster_instance)
    metadata = result.asset_materializations_for_node("classifier_monitoring")[0].metadata
    assert metadata["agreement_by_model"].value == {model.version: 0.5} and metadata["latency_p50_ms"].value > 0
    lake = settings.lake_root
    assert duckdb.sql(f"SELECT count(*), count(*) FILTER (WHERE success) FROM "
                      f"read_parquet('{lake}/inference_log/**/*.parquet', hive_partitioning=true)").fetchone() == (2, 1)
    agreement = duckdb.sql(f"SELECT avg(correct::int) FROM read_parquet('{lake}/feedback/**/*.parquet')")
    assert agreement.fetchone()[0] == 0.5


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_feedback_retrains_and_the_gate_promotes_better_and_refuses_worse(catalog, settings, dagster_instance,
                                                                          folders, tmp_path):
    from imago_pipeline.definitions import build_definitions
    from imago_pipeline.defs.reprocessing.sensors import reclassify_sensor
    from imago_pipeline.defs.resources import build_resources
    from imago_pipeline.defs.training.assets import feedback_sensor

    settings = settings.model_copy(update={
        "training_data": folders["train"], "validation_data": folders["val"], "retrain_min_feedback": 6,
        "promotion_margin": 0.02, "train_epochs": 10, "train_image_size": 64, "train_widths": "16,32",
        "train_augment": False, "train_batch_size": 16})  # measured: 0.625 on the 80 validation photos
    registry = open_model_store(catalog, LocalBlobStore(settings.blob_root), settings.models_dir)
    always_cat = train(load_folder(folders["cats_only"]), load_folder(folders["val"]), tmp_path / "cat",
                       replace(TINY, epochs=1), name="always_cat", verbose=0)
    worst = registry.register(always_cat.model_path, always_cat.card, status="production")
    tenant, ids = _register(catalog, settings, _photos("train", 4, skip=200))
    process_images(ids, settings=settings, instance=dagster_instance)
    scoped = catalog.for_tenant(tenant.id)
    resources = build_resources(settings)

    def sensor(fn):
        with dg.build_sensor_context(instance=dagster_instance, resources=resources,
                                     definitions=build_definitions(settings)) as context:
            return fn(context)

    # simulated users: the truth is the folder each photo came from
    truth = {i: ("cat" if n < 4 else "dog") for n, i in enumerate(ids)}
    for image_id in ids[:5]:
        scoped.add_feedback(image_id, correct=scoped.get_classification(image_id).label == truth[image_id],
                            label=truth[image_id])
    assert isinstance(sensor(feedback_sensor), dg.SkipReason)  # 5 of 6
    scoped.add_feedback(ids[5], correct=False, label=truth[ids[5]])
    request = sensor(feedback_sensor)
    assert isinstance(request, dg.RunRequest)

    job = build_definitions(settings).resolve_job_def("retrain_classifier")
    result = job.execute_in_process(instance=dagster_instance, tags=request.tags, raise_on_error=False)
    candidate = registry.production()
    assert candidate.version != worst.version, "a better candidate must be promoted"
    gate = dagster_instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [dg.AssetCheckKey(dg.AssetKey("classifier_candidate"), "beats_production")])
    assert next(iter(gate.values())).status.value == "SUCCEEDED" and result.success
    from sqlalchemy import select

    from imago_pipeline.core.catalog.models import Feedback

    with catalog.session() as session:
        used = {f.used_in_version for f in session.scalars(select(Feedback))}
    assert used == {candidate.version}  # which feedback trained which version
    stale = sensor(reclassify_sensor)  # classifications by the old model are redone
    assert isinstance(stale, dg.SensorResult) and stale.run_requests
    assert dg.AssetKey("classification") in stale.run_requests[0].asset_selection

    # a strong production model (the shipped baseline) must not be replaced by a tiny candidate
    baseline = registry.register(BASELINE.model, json.loads(BASELINE.card.read_text()),
                                 status="production")
    for image_id in ids:
        scoped.add_feedback(image_id, correct=True, label=truth[image_id])
    result = job.execute_in_process(instance=dagster_instance, raise_on_error=False)
    assert registry.production().version == baseline.version
    gate = dagster_instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [dg.AssetCheckKey(dg.AssetKey("classifier_candidate"), "beats_production")])
    assert next(iter(gate.values())).status.value == "FAILED"
    statuses = {m.version: m.status for m in registry.versions()}
    assert list(statuses.values()).count("production") == 1 and statuses[baseline.version] == "production"
