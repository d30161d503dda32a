"""Retraining from feedback: train a candidate, gate it against production, promote only if better.

`classifier_candidate` trains on the base data plus feedback-labelled images, evaluates the candidate and
the production model on the same fixed validation set, registers the candidate and records which feedback
rows it used. Its blocking asset check `beats_production` is the gate: when it fails, Dagster does not run
`production_classifier` in that run, so a worse model is never promoted. After a promotion the
classification code version changes and the `reclassify_sensor` redoes stale classifications.
"""

import tempfile
from pathlib import Path

import dagster as dg
import numpy as np

from imago_pipeline.defs.resources import BlobStoreResource, CatalogResource, TrainingResource

GATE = "beats_production"


@dg.asset(group_name="training", kinds={"tensorflow", "keras"}, owners=["team:imago"],
          check_specs=[dg.AssetCheckSpec(GATE, asset="classifier_candidate", blocking=True,
                                         description="Candidate accuracy on the fixed validation set beats "
                                                     "production by the configured margin")])
def classifier_candidate(context: dg.AssetExecutionContext, catalog: CatalogResource, blobs: BlobStoreResource,
                         training: TrainingResource) -> dg.MaterializeResult:
    """A new classifier trained on the base data plus labelled feedback, registered as a candidate."""
    from training.data import LabelledImage, fingerprint, load_folder
    from training.evaluate import metrics
    from training.model import CLASS_NAMES
    from training.registry import ModelRegistry, load_classifier
    from training.train import train

    cat = catalog.get()
    store = blobs.get()
    registry = ModelRegistry(cat, store, Path(training.model_cache_dir))
    base = load_folder(Path(training.training_data))
    validation = load_folder(Path(training.validation_data))
    feedback = cat.feedback_for_training()
    extra = [LabelledImage(store.get(image.blob_key), CLASS_NAMES.index(row.label), f"feedback/{row.id}")
             for row, image in feedback]
    with tempfile.TemporaryDirectory(prefix="imago-train-") as tmp:
        result = train(base + extra, validation, Path(tmp), training.train_config(), name="candidate", verbose=0)
        candidate = registry.register(result.model_path, result.card)
    cat.mark_feedback_used([row.id for row, _ in feedback], candidate.version)

    production = registry.production()
    labels = np.array([i.label for i in validation])
    classifier = load_classifier(registry, production)
    production_metrics = metrics(labels, np.array([p.dog_probability for p in classifier.predict(
        [i.data for i in validation])]))
    candidate_accuracy = result.card["metrics"]["accuracy"]
    gain = candidate_accuracy - production_metrics["accuracy"]
    passed = production.version != candidate.version and gain >= training.promotion_margin
    context.log.info(f"candidate {candidate.version} {candidate_accuracy:.3f} vs production "
                     f"{production.version} {production_metrics['accuracy']:.3f}: {'promote' if passed else 'keep'}")
    return dg.MaterializeResult(
        metadata={"candidate_version": candidate.version, "candidate_accuracy": candidate_accuracy,
                  "production_version": production.version, "production_accuracy": production_metrics["accuracy"],
                  "feedback_images": len(extra), "training_images": len(base) + len(extra),
                  "validation_images": len(validation), "validation_fingerprint": fingerprint(validation),
                  "train_seconds": result.card["train_seconds"]},
        check_results=[dg.AssetCheckResult(
            check_name=GATE, passed=passed, severity=dg.AssetCheckSeverity.ERROR,
            description=f"gain {gain:+.4f} against a required margin of {training.promotion_margin:+.4f}",
            metadata={"candidate_accuracy": candidate_accuracy, "production_accuracy": production_metrics["accuracy"],
                      "margin": training.promotion_margin, "candidate_version": candidate.version})])


@dg.asset(deps=[classifier_candidate], group_name="training", kinds={"keras"}, owners=["team:imago"])
def production_classifier(context: dg.AssetExecutionContext, catalog: CatalogResource, blobs: BlobStoreResource,
                          training: TrainingResource) -> dg.MaterializeResult:
    """The production model. Runs only when the candidate passed the gate (a blocking check), and promotes it;
    older classifications then become stale and are redone by the `reclassify_sensor`."""
    from training.registry import ModelRegistry

    event = context.instance.get_latest_materialization_event(dg.AssetKey("classifier_candidate"))
    version = event.asset_materialization.metadata["candidate_version"].value
    registry = ModelRegistry(catalog.get(), blobs.get(), Path(training.model_cache_dir))
    previous = registry.production().version
    registry.promote(version)
    return dg.MaterializeResult(metadata={"version": version, "replaced": previous})


retrain_classifier_job = dg.define_asset_job(
    "retrain_classifier", selection=dg.AssetSelection.assets(classifier_candidate, production_classifier),
    description="Train a candidate on base data plus feedback; promote it only if it beats production.")


@dg.sensor(job=retrain_classifier_job, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING)
def feedback_sensor(context: dg.SensorEvaluationContext, catalog: CatalogResource,
                    training: TrainingResource) -> dg.RunRequest | dg.SkipReason:
    """Launch `retrain_classifier` once enough labelled feedback arrived since the last training."""
    if not (training.training_data and training.validation_data):
        return dg.SkipReason("retraining needs IMAGO_TRAINING_DATA and IMAGO_VALIDATION_DATA")
    pending = catalog.get().feedback_for_training()
    if len(pending) < training.retrain_min_feedback:
        return dg.SkipReason(f"{len(pending)} of {training.retrain_min_feedback} labelled feedback items")
    last = pending[-1][0].id
    return dg.RunRequest(run_key=f"retrain-through-feedback-{last}", tags={"imago/feedback_items": str(len(pending))})
