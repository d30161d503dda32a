#!/bin/sh
# Run once by the postgres image on an empty data directory: a second database for Dagster's storage.
# The catalog and Dagster both keep their Alembic revision in a table named `alembic_version`, so they
# cannot share a database.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -c "CREATE DATABASE \"$DAGSTER_PG_DB\" OWNER \"$POSTGRES_USER\""
