"""Retraining from feedback: train a candidate, gate it against production, promote only if better.

`classifier_candidate` trains a new head (on embeddings, in seconds) on the base set plus every
feedback-labelled image, evaluates the candidate and the production head on the same fixed validation set,
registers the candidate and records which feedback rows it used (`training.retrain`). Its blocking asset
check `beats_production` is the gate: when it fails, Dagster does not run `production_classifier` in that
run, so a worse model is never promoted. After a promotion the classification code version changes and the
`reclassify_sensor` redoes stale classifications from the stored embeddings (the backbone does not run
again).
"""

import dagster as dg

from imago_pipeline.defs.resources import CatalogResource, ModelStoreResource, SettingsResource

GATE = "beats_production"


@dg.asset(group_name="training", kinds={"keras", "numpy"}, owners=["team:imago"],
          check_specs=[dg.AssetCheckSpec(GATE, asset="classifier_candidate", blocking=True,
                                         description="Candidate balanced accuracy on the fixed validation set "
                                                     "beats production by the configured margin")])
def classifier_candidate(context: dg.AssetExecutionContext, models: ModelStoreResource,
                         settings: SettingsResource) -> dg.MaterializeResult:
    """A new classification head trained on the base set plus labelled feedback, registered as a candidate."""
    from training.retrain import train_candidate

    gate = train_candidate(models.get(), settings.get())
    verdict = "promote" if gate.passed else "keep"
    context.log.info(f"candidate {gate.candidate.version} {gate.candidate_accuracy:.3f} vs production "
                     f"{gate.production.version} {gate.production_accuracy:.3f} ({gate.metric}): {verdict}")
    return dg.MaterializeResult(
        metadata={"candidate_version": gate.candidate.version, "metric": gate.metric, "gate_passed": gate.passed,
                  "candidate_accuracy": gate.candidate_accuracy,
                  "production_version": gate.production.version, "production_accuracy": gate.production_accuracy,
                  "feedback_images": gate.feedback_images, "training_images": gate.training_images,
                  "validation_images": gate.validation_images, "validation_fingerprint": gate.validation_fingerprint,
                  "train_seconds": gate.train_seconds, "total_seconds": gate.total_seconds},
        check_results=[dg.AssetCheckResult(
            check_name=GATE, passed=gate.passed, severity=dg.AssetCheckSeverity.ERROR,
            description=f"gain {gate.gain:+.4f} against a required margin of {gate.margin:+.4f}",
            metadata={"candidate_accuracy": gate.candidate_accuracy, "production_accuracy": gate.production_accuracy,
                      "margin": gate.margin, "candidate_version": gate.candidate.version})])


@dg.asset(deps=[classifier_candidate], group_name="training", kinds={"numpy"}, owners=["team:imago"])
def production_classifier(context: dg.AssetExecutionContext, models: ModelStoreResource) -> dg.MaterializeResult:
    """The production head. Runs only when the candidate passed the gate (a blocking check), and promotes it;
    older classifications then become stale and are redone by the `reclassify_sensor` from stored
    embeddings. It promotes the candidate trained in its own run, only if that candidate passed its gate,
    and only while production is still the model it was gated against: materialized alone (from the UI),
    or after another retraining promoted first, it fails and promotes nothing. (It promoted the instance's
    latest candidate: a refused one, or another run's.)"""
    from imago_pipeline.core.catalog.model_versions import StaleGate

    candidate = _candidate_of_run(context)
    if candidate is None:
        raise dg.Failure("no candidate was trained in this run: run the whole retrain_classifier job",
                         allow_retries=False)
    metadata = candidate.metadata
    version = metadata["candidate_version"].value
    if not metadata.get("gate_passed") or not metadata["gate_passed"].value:
        raise dg.Failure(f"candidate {version} did not pass its gate", allow_retries=False)
    gated_against = metadata["production_version"].value
    try:
        models.get().promote(version, replacing=gated_against)
    except StaleGate as exc:
        raise dg.Failure(str(exc), allow_retries=False) from exc
    return dg.MaterializeResult(metadata={"version": version, "replaced": gated_against})


def _candidate_of_run(context: dg.AssetExecutionContext) -> dg.AssetMaterialization | None:
    """The `classifier_candidate` materialized by this run, if any."""
    for record in context.instance.all_logs(context.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION):
        materialization = record.asset_materialization
        if materialization is not None and materialization.asset_key == dg.AssetKey("classifier_candidate"):
            return materialization
    return None


retrain_classifier_job = dg.define_asset_job(
    "retrain_classifier", selection=dg.AssetSelection.assets(classifier_candidate, production_classifier),
    description="Train a candidate on base data plus feedback; promote it only if it beats production.",
    # a refused candidate fails its step: Dagster's run retries would train (and refuse) it twice more; a
    # run that dies (its process killed) is still retried
    tags={"dagster/retry_on_asset_or_op_failure": "false"},
    # training in a spawned process of its own: TensorFlow is never imported into the forked run process
    executor_def=dg.multiprocess_executor)


@dg.sensor(job=retrain_classifier_job, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING)
def feedback_sensor(context: dg.SensorEvaluationContext, catalog: CatalogResource,
                    settings: SettingsResource) -> dg.RunRequest | dg.SkipReason:
    """Launch `retrain_classifier` once enough labelled feedback arrived since the last training."""
    config = settings.get()
    if not (config.training_data and config.validation_data):
        return dg.SkipReason("retraining needs IMAGO_TRAINING_DATA and IMAGO_VALIDATION_DATA")
    pending = catalog.get().feedback.for_training()
    if len(pending) < config.retrain_min_feedback:
        return dg.SkipReason(f"{len(pending)} of {config.retrain_min_feedback} labelled feedback items")
    last = pending[-1][0].id
    return dg.RunRequest(run_key=f"retrain-through-feedback-{last}", tags={"imago/feedback_items": str(len(pending))})
