"""Each use of Dagster beyond its public API (`imago_pipeline/dagster_internals.py`), exercised on a real
instance: when a Dagster upgrade breaks one, this file fails first and names it. And the instance settings
are one definition: the repository's dagster.yaml holds exactly what the embedded default holds."""

from __future__ import annotations

import dagster as dg
import yaml
from dagster._core.storage.tags import AUTO_RETRY_RUN_ID_TAG, WILL_RETRY_TAG
from dagster._core.utils import make_new_run_id

from imago_pipeline.dagster_instance import INSTANCE_SETTINGS
from imago_pipeline.dagster_internals import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    FastSqliteEventLogStorage,
    ImagoRunLauncher,
    erase_dagster_partition,
    forget_erased_partitions,
    partition_still_named,
)
from tests.conftest import REPO

parts = dg.DynamicPartitionsDefinition(name="things")


@dg.asset(partitions_def=parts, backfill_policy=dg.BackfillPolicy.single_run())
def thing(context):
    return dg.MaterializeResult(metadata={"keys": len(context.partition_keys)})


def _ranged(instance, keys: list[str]):
    job = dg.Definitions(assets=[thing]).resolve_implicit_global_asset_job_def()
    return job.execute_in_process(instance=instance, tags={ASSET_PARTITION_RANGE_START_TAG: keys[0],
                                                           ASSET_PARTITION_RANGE_END_TAG: keys[-1]})


def test_the_embedded_instance_uses_our_event_log_and_launcher_with_monitoring(dagster_instance):
    assert isinstance(dagster_instance.event_log_storage, FastSqliteEventLogStorage)
    assert isinstance(dagster_instance.run_launcher, ImagoRunLauncher)
    assert dagster_instance.run_launcher.supports_check_run_worker_health
    assert dagster_instance.run_monitoring_enabled and dagster_instance.run_retries_enabled


def test_a_ranged_run_materializes_every_partition_of_its_range_through_the_fast_event_log(dagster_instance):
    keys = [str(i) for i in range(1, 8)]
    dagster_instance.add_dynamic_partitions("things", keys)
    result = _ranged(dagster_instance, keys[1:5])
    assert result.success
    assert dagster_instance.get_materialized_partitions(dg.AssetKey("thing")) == set(keys[1:5])


def test_erasing_a_partition_deletes_its_events_and_the_partition_only(dagster_instance):
    dagster_instance.add_dynamic_partitions("things", ["1", "2"])
    assert _ranged(dagster_instance, ["1", "2"]).success
    deleted = erase_dagster_partition(dagster_instance, "things", "1")
    assert deleted >= 1
    assert dagster_instance.get_dynamic_partitions("things") == ["2"]
    assert dagster_instance.get_materialized_partitions(dg.AssetKey("thing")) == {"2"}
    records = dagster_instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("thing"), asset_partitions=["1"]), limit=10).records
    assert records == []


def test_the_repository_dagster_yaml_holds_the_shared_instance_settings():
    production = yaml.safe_load((REPO / "dagster.yaml").read_text())
    assert set(production.pop("storage")) == {"postgres"}
    assert production == INSTANCE_SETTINGS


def test_a_partition_a_waiting_run_ends_at_outlives_its_erasure_until_the_run_ends(dagster_instance):
    dagster_instance.add_dynamic_partitions("things", ["1", "2", "3", "4"])
    assert _ranged(dagster_instance, ["1", "2", "3"]).success  # events for 1..3
    waiting = dg.DagsterRun(job_name="__ASSET_JOB", run_id=make_new_run_id(), status=dg.DagsterRunStatus.NOT_STARTED,
                            tags={ASSET_PARTITION_RANGE_START_TAG: "1", ASSET_PARTITION_RANGE_END_TAG: "3"})
    dagster_instance.add_run(waiting)
    assert erase_dagster_partition(dagster_instance, "things", "1") >= 1  # its events go at once
    assert erase_dagster_partition(dagster_instance, "things", "2") >= 1  # inside the range: no end of it
    assert dagster_instance.get_dynamic_partitions("things") == ["1", "3", "4"]
    assert dagster_instance.get_materialized_partitions(dg.AssetKey("thing")) == {"3"}
    assert partition_still_named(dagster_instance, "1") and not partition_still_named(dagster_instance, "4")
    # the run fails, and Dagster will retry it: still named
    dagster_instance.add_run_tags(waiting.run_id, {WILL_RETRY_TAG: "true"})
    dagster_instance.report_run_failed(dagster_instance.get_run_by_id(waiting.run_id))
    assert partition_still_named(dagster_instance, "1")
    assert forget_erased_partitions(dagster_instance, "things", lambda ids: {3, 4} & set(ids)) == 0
    # retried, and the retry ended: nothing names it; the sweep erases it, and only it
    dagster_instance.add_run_tags(waiting.run_id, {AUTO_RETRY_RUN_ID_TAG: make_new_run_id()})
    assert not partition_still_named(dagster_instance, "1")
    assert forget_erased_partitions(dagster_instance, "things", lambda ids: {3, 4} & set(ids)) == 1
    assert dagster_instance.get_dynamic_partitions("things") == ["3", "4"]
