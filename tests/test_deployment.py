"""Deployment files: the compose file validates, and dagster.yaml gives a working Postgres instance."""

from __future__ import annotations

import re
import shutil
import subprocess
import uuid

import dagster as dg
import pytest
import yaml
from sqlalchemy.engine import make_url

from tests import postgres
from tests.conftest import REPO


def test_docker_compose_config_validates():
    binary = shutil.which("docker-compose")
    assert binary, "docker-compose is installed by scripts/install-system-packages.sh"
    result = subprocess.run([binary, "config", "-q"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(subprocess.run([binary, "config"], cwd=REPO, capture_output=True, text=True).stdout)
    services = services["services"]
    assert set(services) == {"postgres", "minio", "buckets", "code", "webserver", "daemon", "api", "rabbitmq",
                             "worker"}
    for name in ("postgres", "minio", "code", "webserver", "daemon", "api", "rabbitmq"):
        assert services[name]["healthcheck"]["test"], name
    # the distributed executor: a broker and workers, started with `--profile distributed`, reaching the same
    # broker as the runs that submit to it
    assert services["worker"]["profiles"] == services["rabbitmq"]["profiles"] == ["distributed"]
    assert services["worker"]["command"] == ["imago", "worker"]
    assert services["worker"]["depends_on"]["rabbitmq"]["condition"] == "service_healthy"
    broker = services["daemon"]["environment"]["IMAGO_CELERY_BROKER_URL"]
    assert broker == services["worker"]["environment"]["IMAGO_CELERY_BROKER_URL"]
    assert broker.startswith("pyamqp://") and "@rabbitmq:5672" in broker
    for name in ("code", "daemon", "api"):  # blobs on MinIO, state on the shared volume and Postgres
        env = services[name]["environment"]
        assert env["IMAGO_BLOB_BACKEND"] == "s3" and env["IMAGO_S3_ENDPOINT_URL"] == "http://minio:9000"
        assert env["IMAGO_DATABASE_URL"].startswith("postgresql+psycopg2://")
    assert services["code"]["depends_on"]["buckets"]["condition"] == "service_completed_successfully"
    # the catalog and Dagster each have their own database (both keep an `alembic_version` table)
    env = services["code"]["environment"]
    assert env["IMAGO_DATABASE_URL"].rsplit("/", 1)[1] != env["DAGSTER_PG_DB"]
    assert any("docker-entrypoint-initdb.d" in v for v in services["postgres"]["volumes"])
    assert services["webserver"]["depends_on"]["code"]["condition"] == "service_healthy"
    # every variable the compose file reads has a line in .env.example
    used = set(re.findall(r"\$\{(\w+)", (REPO / "docker-compose.yml").read_text()))
    documented = {line.split("=", 1)[0] for line in (REPO / ".env.example").read_text().splitlines()
                  if "=" in line and not line.startswith("#")}
    assert used - {"IMAGO_RATE_LIMIT_STORAGE"} <= documented, used - documented
    # the image carries what the code location reads at run time
    dockerfile = (REPO / "Dockerfile").read_text()
    for folder in ("imago_pipeline", "imago_api", "training", "dbt_like_sql"):
        assert f"COPY {folder} ./{folder}" in dockerfile


@pytest.mark.postgres
def test_production_dagster_yaml_runs_on_postgres(tmp_path, postgres_admin_url, monkeypatch):
    name = f"imago_dagster_{uuid.uuid4().hex[:10]}"
    url = make_url(postgres.create_database(postgres_admin_url, name))
    try:
        shutil.copy(REPO / "dagster.yaml", tmp_path / "dagster.yaml")
        for key, value in {"DAGSTER_PG_HOST": url.host, "DAGSTER_PG_USER": url.username,
                           "DAGSTER_PG_PASSWORD": url.password or "", "DAGSTER_PG_DB": name}.items():
            monkeypatch.setenv(key, value)
        if url.port != 5432:
            text = (tmp_path / "dagster.yaml").read_text().replace("port: 5432", f"port: {url.port}")
            (tmp_path / "dagster.yaml").write_text(text)
        with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
            instance.add_dynamic_partitions("images", ["1", "2"])
            assert instance.get_dynamic_partitions("images") == ["1", "2"]
            assert instance.run_coordinator.__class__.__name__ == "QueuedRunCoordinator"
    finally:
        postgres.drop_database(postgres_admin_url, name)


def _yaml_blocks(markdown: str) -> list[dict]:
    return [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", markdown, flags=re.S)]


def test_the_kubernetes_run_launcher_in_the_docs_matches_dagster_k8s_schema():
    """The K8sRunLauncher configuration of docs/scaling.md is checked against dagster-k8s's own config schema
    (the launcher itself needs a cluster); a misspelt key in it would fail here."""
    from dagster._config import process_config
    from dagster_k8s.launcher import K8sRunLauncher

    launchers = [b["run_launcher"] for b in _yaml_blocks((REPO / "docs" / "scaling.md").read_text())
                 if isinstance(b, dict) and b.get("run_launcher", {}).get("class") == "K8sRunLauncher"]
    assert len(launchers) == 1
    launcher = launchers[0]
    assert (launcher["module"], launcher["class"]) == (K8sRunLauncher.__module__, K8sRunLauncher.__name__)
    checked = process_config(K8sRunLauncher.config_type(), launcher["config"])
    assert checked.success, [error.message for error in checked.errors]
    misspelt = {**launcher["config"], "job_namespaces": launcher["config"]["job_namespace"]}
    assert not process_config(K8sRunLauncher.config_type(), misspelt).success
