"""The classification head (`cat`, `dog`, `other`) and its lifecycle, on real photos: trained on embeddings,
served in numpy exactly as Keras computes it, the shipped baseline's accuracy on photos it never saw, the
registry, the pipeline stage, feedback, prediction, metrics, and retraining behind the gate with
re-classification from stored embeddings."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import dagster as dg
import httpx
import numpy as np
import pytest

from imago_api.main import create_app
from imago_pipeline.core.catalog import Catalog
from imago_pipeline.core.catalog.models import ModelVersion
from imago_pipeline.core.embedding.head import LABELS, Head, HeadFormatError
from imago_pipeline.core.ingest import register_image
from imago_pipeline.core.stores.blobs import LocalBlobStore
from imago_pipeline.in_process import process_images
from tests.conftest import REPO, shared
from tests.http_server import serve
from training.data import LabelledImage, load_set
from training.registry import BASELINE, open_model_store
from training.train import TrainConfig, train

SMALL = TrainConfig(epochs=60, patience=15, seed=7)
SETS = REPO / "training" / "sets"


def _items(paths, label: str) -> list[LabelledImage]:
    return [LabelledImage(p.read_bytes(), LABELS.index(label), p.name) for p in paths]


def _pets(split: str, per_label: int, skip: int = 0) -> list[LabelledImage]:
    return [item for label in ("cat", "dog") for item in _items(
        sorted(shared("catsdogs", split, label).glob("*.jpg"))[skip:skip + per_label], label)]


def _other(side: str) -> list[LabelledImage]:
    """Non-pet images of the baseline's own split (training/sets), so validation stays unseen."""
    return [i for i in load_set(SETS / f"{side}.csv") if LABELS[i.label] == "other"][:40]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("embeddings")


@pytest.fixture(scope="module")
def sets():
    return {"train": _pets("train", 60) + _other("train"), "val": _pets("val", 25) + _other("validation"),
            "cats_only": _pets("train", 40)[:40]}


@pytest.fixture(scope="module")
def small_head(sets, cache, tmp_path_factory):
    return train(sets["train"], sets["val"], tmp_path_factory.mktemp("head"), SMALL, name="small", cache_dir=cache)


def test_a_head_trains_in_seconds_and_writes_its_card_and_curve(small_head, sets, cache):
    card = json.loads(small_head.card_path.read_text())
    assert card["labels"] == ["cat", "dog", "other"] and card["format"] == "imago-head-v1"
    assert card["evaluation_data"]["per_label"] == {"cat": 25, "dog": 25, "other": 40}
    confusion = card["metrics"]["confusion_matrix"]["rows_true_columns_predicted"]
    assert len(confusion) == 3 and sum(map(sum, confusion)) == 90
    assert {"precision", "recall", "support"} <= set(card["metrics"]["per_label"]["other"])
    assert card["metrics"]["pet_accuracy"] >= 0.9 and card["metrics"]["other_recall"] >= 0.9
    assert small_head.curve_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = train(sets["train"], sets["val"], small_head.head_path.parent / "again", SMALL, name="small",
                  cache_dir=cache)
    assert again.card["metrics"] == card["metrics"]  # fixed seeds, cached embeddings


def test_the_portable_head_computes_what_keras_computes(small_head, sets, cache):
    import keras

    from training.features import embeddings
    from training.head import prior_layer_class

    prior_layer_class()  # registers the custom layer for loading
    model = keras.models.load_model(small_head.keras_path, compile=False)
    x = embeddings(sets["val"], cache).astype(np.float32)
    served = Head.load(small_head.head_path)
    np.testing.assert_allclose(served.probabilities(x), model.predict(x, verbose=0), atol=2e-5)
    assert small_head.head_path.stat().st_size < 100_000  # the ImageNet layer is the backbone's, not copied


def test_a_head_file_cannot_run_code(tmp_path):
    import pickle

    evil = tmp_path / "evil.npz"
    np.savez(evil, format=np.array("imago-head-v1"), labels=np.array(LABELS),
             activations=np.array([object()], dtype=object))
    with pytest.raises(HeadFormatError):
        Head.load(evil)
    (tmp_path / "pickle.npz").write_bytes(pickle.dumps({"format": "imago-head-v1"}))
    with pytest.raises(HeadFormatError):
        Head.load(tmp_path / "pickle.npz")


def test_the_shipped_baseline_meets_its_targets_on_photos_it_never_saw(cache):
    """Real weights, real photos: ≥ 97% on cats and dogs and ≥ 95% of non-pet photos and documents `other`,
    on the validation set, none of which is in the training set; the card says what this measures."""
    from training.evaluate import metrics
    from training.features import embeddings

    train_set, validation = load_set(SETS / "train.csv"), load_set(SETS / "validation.csv")
    assert not {i.sha256 for i in train_set} & {i.sha256 for i in validation}  # no photo on both sides
    head = Head.load(BASELINE.model)
    result = metrics(np.array([i.label for i in validation]), head.probabilities(embeddings(validation, cache)))
    assert result["pet_accuracy"] >= 0.97 and result["other_recall"] >= 0.95, result
    card = json.loads(BASELINE.card.read_text())
    assert card["metrics"]["confusion_matrix"] == result["confusion_matrix"]
    assert card["evaluation_data"]["images"] == len(validation)


def test_registry_keeps_exactly_one_production_version(catalog, settings, small_head):
    registry = open_model_store(catalog, LocalBlobStore(settings.blob_root), settings.models_dir)
    first = registry.register(small_head.head_path, small_head.card, keras_path=small_head.keras_path,
                              status="production")
    second = registry.register(small_head.head_path, {**small_head.card}, status="candidate")
    assert registry.production().version == first.version and second.status == "candidate"
    registry.promote(second.version)
    statuses = {m.version: m.status for m in registry.versions()}
    assert statuses == {first.version: "retired", second.version: "production"}
    assert registry.store.get(f"models/{first.version}.keras") == small_head.keras_path.read_bytes()
    with pytest.raises(HeadFormatError):
        registry.register(small_head.card_path, small_head.card)  # not a head: refused
    # an unknown version is refused (it retired production and left none); a candidate gated against a
    # model that is no longer production is not promoted over the newer one (two retrainings at once)
    from imago_pipeline.core.catalog.model_versions import StaleGate

    with pytest.raises(KeyError):
        registry.promote("v9-typo")
    with pytest.raises(StaleGate, match=f"production is now {second.version}"):
        registry.promote(first.version, replacing=first.version)
    assert {m.version: m.status for m in registry.versions()} == statuses
    registry.promote(first.version, replacing=second.version)
    assert registry.production().version == first.version


def test_two_processes_bootstrapping_the_baseline_at_once_both_get_it(catalog, settings, monkeypatch):
    """Seen on two Celery workers: both found no production model, both counted the registry's versions
    before either inserted, so both named the baseline `v1-…`, and the second insert broke the unique name
    (its classification step failed). Here the second one is replayed at exactly that point."""
    blobs = LocalBlobStore(settings.blob_root)
    first = open_model_store(catalog, blobs, settings.models_dir).production()
    other_process = Catalog.connect(settings.catalog_url)
    try:
        monkeypatch.setattr(other_process.model_versions, "count", lambda: 0)  # read before the first insert
        monkeypatch.setattr(other_process.model_versions, "production", lambda: None)
        second = open_model_store(other_process, blobs, settings.models_dir).production()
    finally:
        other_process.dispose()
    assert second.version == first.version and second.status == "production"
    registry = open_model_store(catalog, blobs, settings.models_dir)
    assert [(m.version, m.status) for m in registry.versions()] == [(first.version, "production")]


def test_fresh_install_uses_the_baseline_and_it_supersedes_an_old_cnn(catalog, settings):
    catalog.model_versions.add(ModelVersion(version="v1-0ldc4n01", status="candidate", data_fingerprint="x",
                                            metrics={"accuracy": 0.82}, card={"name": "cnn"},
                                            artifact_key="models/v1-0ldc4n01.keras"))
    catalog.model_versions.promote("v1-0ldc4n01")  # the whole-image CNN of earlier releases
    registry = open_model_store(catalog, LocalBlobStore(settings.blob_root), settings.models_dir)
    production = registry.production()
    assert production.servable and production.version != "v1-0ldc4n01"
    assert production.metrics["pet_accuracy"] >= 0.97
    assert {m.version: m.status for m in registry.versions()}["v1-0ldc4n01"] == "retired"


def _register(catalog, settings, paths, tenant="t"):
    tenant = catalog.clients.get_or_create(tenant)
    store = LocalBlobStore(settings.blob_root)
    ids = [register_image(catalog, store, settings, tenant_id=tenant.id, filename=p.name, data=p.read_bytes(),
                          status="queued").image.id for p in paths]
    return tenant, ids


def _photos(split: str, per_label: int, skip: int = 0) -> list[Path]:
    return [p for label in ("cat", "dog")
            for p in sorted(shared("catsdogs", split, label).glob("*.jpg"))[skip:skip + per_label]]


def test_feedback_on_validation_images_or_on_images_erased_meanwhile_is_not_trained_on(catalog, settings):
    """A validation photo given as feedback was trained on and then graded on (the gate's score rose with
    it); an image whose file went while retraining read its feedback crashed the whole retraining."""
    import hashlib

    from training.retrain import feedback_embeddings

    validation_photo, kept, erased = _photos("val", 1, skip=3)[0], *_photos("train", 1, skip=7)
    tenant, ids = _register(catalog, settings, [validation_photo, kept, erased])
    scoped = catalog.for_tenant(tenant.id)
    for image_id, path in zip(ids, (validation_photo, kept, erased), strict=True):
        scoped.add_feedback(image_id, correct=False, label=path.parent.name)
    store = LocalBlobStore(settings.blob_root)
    store.delete(scoped.get_image(ids[2]).blob_key)  # erased while the retraining reads: no stored embedding
    models = open_model_store(catalog, store, settings.models_dir)
    x, y, unused = feedback_embeddings(models, settings.max_pixels,
                                       held_out=frozenset({hashlib.sha256(validation_photo.read_bytes()).hexdigest()}))
    assert x.shape == (1, 1280) and [LABELS[i] for i in y] == [kept.parent.name] and len(unused) == 3


def test_pipeline_classifies_cats_dogs_and_other_with_feedback_prediction_and_metrics(catalog, settings,
                                                                                     dagster_instance):
    page, landscape = shared("ocr", "tesseract-test", "phototest.tif"), REPO / "samples" / "Canon_40D.jpg"
    tenant, ids = _register(catalog, settings, [*_photos("val", 2, skip=100), page, landscape])
    assert process_images(ids, settings=settings, instance=dagster_instance)[0].success
    scoped = catalog.for_tenant(tenant.id)
    labels = [scoped.get_classification(i).label for i in ids]
    assert labels == ["cat", "cat", "dog", "dog", "other", "other"]
    model = open_model_store(catalog, LocalBlobStore(settings.blob_root), settings.models_dir).production()
    for image_id in ids:
        row = scoped.get_classification(image_id)
        assert row.model_version == model.version
        assert row.probability == pytest.approx(max(row.probabilities.values()), abs=1e-4)
        assert set(row.probabilities) == {"cat", "dog", "other"} and abs(sum(row.probabilities.values()) - 1) < 1e-3
        stages = {s.stage: s for s in scoped.get_stages(image_id)}
        assert stages["classification"].code_version == f"classify-v2|model-{model.version.rsplit('-', 1)[-1]}"
        assert stages["embedding"].status == "done" and stages["embedding"].code_version.startswith("embedding-v1|")
    assert scoped.get_vision(ids[0]).tags[0] == "cat" and "dog" not in scoped.get_vision(ids[0]).tags
    assert not {"cat", "dog"} & set(scoped.get_vision(ids[4]).tags)
    assert dagster_instance.get_materialized_partitions(dg.AssetKey("embedding")) == {str(i) for i in ids}

    app = create_app(settings)
    key = catalog.clients.issue_key(tenant.id)
    reader = catalog.clients.issue_key(tenant.id, ["images:read"])
    with serve(app) as url, httpx.Client(base_url=url, headers={"X-API-Key": key}, timeout=60) as client:
        detail = client.get(f"/images/{ids[4]}").json()
        assert detail["classification"]["label"] == "other" and len(detail["content"]) == 5
        missing = client.post(f"/images/{ids[4]}/feedback", json={"correct": False})
        assert missing.status_code == 422 and missing.json()["error"]["code"] == "label_required"
        verdict = client.post(f"/images/{ids[4]}/feedback", json={"correct": False, "label": "dog"})
        assert verdict.status_code == 201 and verdict.json()["predicted_label"] == "other"
        assert client.post(f"/images/{ids[5]}/feedback", json={"correct": True}).json()["label"] == "other"
        for image_id, contradiction in [(ids[5], {"correct": True, "label": "dog"}),  # predicted other
                                        (ids[4], {"correct": False, "label": "other"})]:
            refused = client.post(f"/images/{image_id}/feedback", json=contradiction)
            assert refused.status_code == 422 and refused.json()["error"]["code"] == "contradictory_feedback"
        assert client.post(f"/images/{ids[0]}/feedback", json={"correct": False, "label": "fox"}).status_code == 422
        assert client.post("/images/999999/feedback", json={"correct": True}).status_code == 404

        predicted = client.post("/api/predict", files={"file": ("x.tif", page.read_bytes())})
        assert predicted.status_code == 200, predicted.text
        body = predicted.json()
        assert body["label"] == "other" and body["model_version"] == model.version
        assert body["probabilities"]["other"] == pytest.approx(body["probability"], abs=1e-4)
        cat = client.post("/api/predict", files={"file": ("c.jpg", _photos("val", 1, skip=120)[0].read_bytes())})
        assert cat.json()["label"] == "cat"
        assert client.post("/api/predict", files={"file": ("x.jpg", b"not an image")}).status_code == 415
        denied = client.post("/api/predict", headers={"X-API-Key": reader}, files={"file": ("x", page.read_bytes())})
        assert denied.status_code == 403 and "ai:use" in denied.json()["error"]["message"]
        metrics = client.get("/metrics").text
        assert 'imago_classified_images{label="other"} 2.0' in metrics
        assert f'imago_predicted_labels_total{{label="cat",model_version="{model.version}"}} 1.0' in metrics
        assert f'imago_prediction_feedback_agreement_ratio{{model_version="{model.version}"}} 0.5' in metrics


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_feedback_retrains_the_head_gates_it_and_reclassifies_from_stored_embeddings(
        catalog, settings, dagster_instance, sets, cache, tmp_path):
    from imago_pipeline.definitions import build_definitions
    from imago_pipeline.defs.reprocessing.sensors import reclassify_sensor
    from imago_pipeline.defs.resources import build_resources
    from imago_pipeline.defs.training.assets import feedback_sensor
    from training.features import embeddings

    train_dir, val_dir = tmp_path / "train", tmp_path / "val"
    for folder, items in ((train_dir, sets["train"]), (val_dir, sets["val"])):
        for n, item in enumerate(items):
            (folder / LABELS[item.label]).mkdir(parents=True, exist_ok=True)
            (folder / LABELS[item.label] / f"{n}.img").with_suffix(".jpg").write_bytes(item.data)
    settings = settings.model_copy(update={
        "training_data": train_dir, "validation_data": val_dir, "retrain_min_feedback": 6,
        "promotion_margin": 0.02})
    registry = open_model_store(catalog, LocalBlobStore(settings.blob_root), settings.models_dir)
    always_cat = train(sets["cats_only"], sets["val"], tmp_path / "cat", replace(SMALL, epochs=2), name="cats",
                       cache_dir=cache)
    worst = registry.register(always_cat.head_path, always_cat.card, status="production")
    tenant, ids = _register(catalog, settings, _photos("train", 4, skip=200))
    assert process_images(ids, settings=settings, instance=dagster_instance)[0].success
    scoped = catalog.for_tenant(tenant.id)
    assert {scoped.get_classification(i).label for i in ids} == {"cat"}  # the weak model says cat to all
    embedded_by = {i: {s.stage: s.run_id for s in scoped.get_stages(i)}["embedding"] for i in ids}
    resources = build_resources(settings)

    def sensor(fn):
        with dg.build_sensor_context(instance=dagster_instance, resources=resources,
                                     definitions=build_definitions(settings)) as context:
            return fn(context)

    truth = {i: ("cat" if n < 4 else "dog") for n, i in enumerate(ids)}  # the folder each photo came from
    for image_id in ids[:5]:
        scoped.add_feedback(image_id, correct=truth[image_id] == "cat", label=truth[image_id])
    assert isinstance(sensor(feedback_sensor), dg.SkipReason)  # 5 of 6
    scoped.add_feedback(ids[5], correct=False, label=truth[ids[5]])
    request = sensor(feedback_sensor)
    assert isinstance(request, dg.RunRequest)

    job = build_definitions(settings).resolve_job_def("retrain_classifier")
    result = job.execute_in_process(instance=dagster_instance, tags=request.tags, raise_on_error=False)
    candidate = registry.production()
    assert candidate.version != worst.version and result.success, "a better candidate must be promoted"
    gate = dagster_instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [dg.AssetCheckKey(dg.AssetKey("classifier_candidate"), "beats_production")])
    assert next(iter(gate.values())).status.value == "SUCCEEDED"
    materialization = dagster_instance.get_latest_materialization_event(dg.AssetKey("classifier_candidate"))
    metadata = materialization.asset_materialization.metadata
    assert metadata["feedback_images"].value == 6 and metadata["metric"].value == "balanced_accuracy"
    from sqlalchemy import select

    from imago_pipeline.core.catalog.models import Feedback

    with catalog.session() as session:
        assert {f.used_in_version for f in session.scalars(select(Feedback))} == {candidate.version}

    stale = sensor(reclassify_sensor)  # classifications by the old head are redone from stored embeddings
    assert isinstance(stale, dg.SensorResult) and stale.run_requests
    selection = set(stale.run_requests[0].asset_selection)
    assert dg.AssetKey("classification") in selection and dg.AssetKey("embedding") not in selection
    assert all(r.tags["imago/lane"] == "bulk" and r.tags["dagster/priority"] == "0" for r in stale.run_requests)
    from imago_pipeline.in_process import reprocess_stale

    reprocess_stale(settings=settings, instance=dagster_instance)
    for image_id in ids:
        stages = {s.stage: s for s in scoped.get_stages(image_id)}
        assert stages["embedding"].run_id == embedded_by[image_id]  # the backbone did not run again
        assert scoped.get_classification(image_id).model_version == candidate.version
    assert [scoped.get_classification(i).label for i in ids] == [truth[i] for i in ids]

    # the shipped baseline must not be replaced by a candidate trained on less data
    baseline = registry.register(BASELINE.model, json.loads(BASELINE.card.read_text()), status="production")
    x_val = embeddings(sets["val"], cache)
    assert x_val.shape == (90, 1280)
    for image_id in ids:
        scoped.add_feedback(image_id, correct=True, label=truth[image_id])
    job.execute_in_process(instance=dagster_instance, raise_on_error=False)
    assert registry.production().version == baseline.version
    gate = dagster_instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [dg.AssetCheckKey(dg.AssetKey("classifier_candidate"), "beats_production")])
    assert next(iter(gate.values())).status.value == "FAILED"
    assert [m.status for m in registry.versions()].count("production") == 1
    # promoting by hand (the asset alone, from the UI) does not promote that refused candidate: it promoted
    # the instance's latest candidate, whatever its gate said
    defs = build_definitions(settings)
    alone = dg.materialize([defs.get_assets_def("production_classifier")], instance=dagster_instance,
                           resources=defs.resources, raise_on_error=False,
                           selection=[dg.AssetKey("production_classifier")])
    assert not alone.success and registry.production().version == baseline.version
