"""The SQL models of `dbt_like_sql/` as Dagster assets, their data tests as asset checks.

One asset per model, keyed `analytics/<model>`, whose deps are its refs (other models) and the assets that
write the lake tables it reads, so the asset graph shows lake assets -> models -> models. Each data test
declared in `schema.yml` is an asset check on its model, run right after the build in the same step;
a test of severity `error` is blocking: when it fails, the models built on this one are not run.

Models refresh by declarative automation whenever a table they read changes (see `MODEL_AUTOMATION`),
evaluated by their own sensor so the image pipeline's conditions never wait behind them.
"""

from pathlib import Path

import dagster as dg

from imago_pipeline.core.analytics import (
    DataTestOutcome,
    Model,
    SqlProject,
    build_model,
    load_project,
    open_analytics,
    run_tests,
)
from imago_pipeline.core.config import ImagoSettings
from imago_pipeline.core.stores.lake_files import LakeFiles, lake_files_for
from imago_pipeline.defs.resources import LakeResource

GROUP = "sql_models"
KEY_PREFIX = "analytics"
# One model build at a time: DuckDB already uses every core, two at once would only share them.
POOL = "sql_models"
# The asset that writes each lake table (`images` is written by the image's summary step).
SOURCE_ASSETS = {
    "exif": "exif", "place": "exif", "thumbnail": "thumbnail", "ocr": "ocr", "classification": "classification",
    "vision": "vision",
    "images": "image_summary", "inference_log": "classifier_monitoring", "feedback": "classifier_monitoring",
}

# `eager()` without its "no dependency is missing" clause. A model reads every partition of a per-image
# asset, and some partitions are never materialized (an image erased before its run, one added to the
# partitions and not processed yet): with that clause a model would wait for them forever. What is left:
# rebuild once after any upstream update, not while an upstream or the model itself is being materialized,
# and not again until something new arrives. `eager()` never builds a model that is missing when the
# condition is first evaluated, so the second half builds each one once on deploy.
MODEL_AUTOMATION = (
    dg.AutomationCondition.eager().without(~dg.AutomationCondition.any_deps_missing())
    | (dg.AutomationCondition.missing() & dg.AutomationCondition.initial_evaluation()
       & ~dg.AutomationCondition.any_deps_in_progress())
).with_label("on upstream update, or missing on deploy")

# Also evaluates the monitoring snapshot's 15-minute condition and the lake compaction's 30-minute one:
# Dagster's default automation sensor, which would otherwise own them, starts stopped.
sql_models_automation = dg.AutomationConditionSensorDefinition(
    "sql_models_automation",
    target=(dg.AssetSelection.groups(GROUP)
            | dg.AssetSelection.assets("classifier_monitoring", "lake_compaction")),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=60,  # at most one rebuild a minute, however often batches land
    description="Rebuilds the SQL models whose lake tables changed, the monitoring snapshot every 15 minutes and "
                "compacts the lake every 30 minutes (declarative automation).",
)


def model_key(name: str) -> dg.AssetKey:
    return dg.AssetKey([KEY_PREFIX, name])


def build_sql_model_assets(settings: ImagoSettings, project_dir: Path | None = None) -> list[dg.AssetsDefinition]:
    """An asset per model of the project (with its checks), in dependency order."""
    project = load_project(project_dir, min_group_size=settings.analytics_min_group_size)
    files = lake_files_for(settings)  # names the files in the compiled SQL shown; connects to nothing
    return [_model_asset(project, model, files) for model in project.models.values()]


def _model_asset(project: SqlProject, model: Model, files: LakeFiles) -> dg.AssetsDefinition:
    key = model_key(model.name)
    deps = [model_key(ref) for ref in model.refs] + [
        dg.AssetKey(asset) for asset in dict.fromkeys(SOURCE_ASSETS[source] for source in model.sources)]
    checks = [dg.AssetCheckSpec(test.name, asset=key, description=test.description, blocking=test.blocking)
              for test in model.tests]
    try:
        shown_path = str(model.path.relative_to(project.root.parent))
    except ValueError:
        shown_path = str(model.path)

    @dg.asset(
        key=key, deps=deps, group_name=GROUP, kinds={"duckdb", "sql", "parquet"}, owners=["team:imago"],
        description=model.description or None, code_version=model.code_version, pool=POOL,
        automation_condition=MODEL_AUTOMATION, check_specs=checks,
        # a snapshot table is swapped in with two renames; a scan between them finds no files
        retry_policy=dg.RetryPolicy(max_retries=1, delay=5),
        metadata={"sql_file": dg.MetadataValue.path(shown_path),
                  "sql": dg.MetadataValue.md(f"```sql\n{model.sql.strip()}\n```"),
                  "compiled_sql": dg.MetadataValue.md(f"```sql\n{project.compile(model.name, files)}\n```")},
    )
    def _build(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
        files = lake.get().files
        con = open_analytics(files)
        try:
            built = build_model(con, project, model.name, files)
            outcomes = run_tests(con, project, model.name, files)
        finally:
            con.close()
        failed = [o.test.name for o in outcomes if not o.passed]
        if failed:
            context.log.warning(f"{model.name}: data tests failed: {', '.join(failed)}")
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": built.rows,
                "dagster/column_schema": dg.TableSchema(
                    columns=[dg.TableColumn(name, kind) for name, kind in built.columns]),
                "path": dg.MetadataValue.path(built.path),
                "duration_s": dg.MetadataValue.float(round(built.seconds, 3)),
            },
            check_results=[_check_result(outcome) for outcome in outcomes],
        )

    return _build


def _check_result(outcome: DataTestOutcome) -> dg.AssetCheckResult:
    test = outcome.test
    return dg.AssetCheckResult(
        check_name=test.name, passed=outcome.passed,
        severity=dg.AssetCheckSeverity.ERROR if test.blocking else dg.AssetCheckSeverity.WARN,
        description=outcome.error or test.description,
        metadata={"failing_rows": outcome.failing_rows,
                  "test_sql": dg.MetadataValue.md(f"```sql\n{test.failing_rows_sql('<model>')}\n```")},
    )
