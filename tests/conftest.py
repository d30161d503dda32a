from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest

from imago_pipeline.core.catalog import Catalog
from imago_pipeline.core.config import ImagoSettings
from tests import postgres

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
SAMPLES = REPO / "samples"
# `make test` runs the suite on two pytest-xdist workers (`--dist loadgroup`). The tests that start whole
# services (`imago serve`, daemons, Celery workers) or watch process trees share this group: they run one
# after another on one worker while the other worker takes the rest of the suite.
SERVICES = pytest.mark.xdist_group("services")


def shared(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.fail(f"missing shared test data: {path}")
    return path


@pytest.fixture(scope="session")
def postgres_admin_url():
    url, cluster = postgres.server_url()
    yield url
    if cluster:
        cluster.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request, tmp_path):
    """Each catalog test runs on the embedded SQLite file and on a fresh Postgres database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'catalog.db'}"
        return
    admin = request.getfixturevalue("postgres_admin_url")
    name = f"imago_test_{uuid.uuid4().hex[:12]}"
    url = postgres.create_database(admin, name)
    yield url
    postgres.drop_database(admin, name)


@pytest.fixture
def settings(tmp_path, database_url) -> ImagoSettings:
    return ImagoSettings(home=tmp_path / "imago", database_url=database_url, workers=2, batch_size=50,
                         drop_dir=tmp_path / "drop")


@pytest.fixture
def catalog(settings):
    catalog = Catalog.connect(settings.catalog_url)
    yield catalog
    catalog.dispose()


@pytest.fixture
def dagster_instance(tmp_path, monkeypatch):
    """A real instance with the embedded default's storage (the dagster.yaml that `imago` writes)."""
    import dagster as dg

    from imago_pipeline.dagster_instance import prepare_dagster_home

    for name in ("DAGSTER_HOME", "DAGSTER_EVENT_BATCH_SIZE", "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"):
        monkeypatch.delenv(name, raising=False)
    home = prepare_dagster_home(ImagoSettings(home=tmp_path / "imago"))
    with dg.DagsterInstance.from_config(str(home)) as instance:
        yield instance


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3-compatible server (moto_server) on loopback for the whole session."""
    from tests.s3_server import moto_server

    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def s3_settings(settings, s3_endpoint) -> ImagoSettings:
    """`settings` with blobs in a fresh bucket of the S3 server."""
    from pydantic import SecretStr

    from imago_pipeline.core.stores.blobs import s3_client
    from tests.s3_server import CREDENTIALS

    bucket = f"imago-{uuid.uuid4().hex[:12]}"
    s3_client(endpoint_url=s3_endpoint, region="us-east-1", **CREDENTIALS).create_bucket(Bucket=bucket)
    return settings.model_copy(update={
        "blob_backend": "s3", "s3_bucket": bucket, "s3_prefix": "blobs/", "s3_endpoint_url": s3_endpoint,
        "s3_access_key_id": CREDENTIALS["access_key_id"],
        "s3_secret_access_key": SecretStr(CREDENTIALS["secret_access_key"])})


@pytest.fixture
def sample_folder(tmp_path) -> Path:
    """A copy of samples/ (images plus their licence files)."""
    target = tmp_path / "samples"
    shutil.copytree(SAMPLES, target)
    return target
