from alembic import context
from sqlalchemy import engine_from_config, pool

from imago_pipeline.core.catalog.models import Base

target_metadata = Base.metadata


def include_object(obj, name, type_, reflected, compare_to):
    """The full-text search table is created by hand (FTS5 / tsvector), not from the models."""
    return not (type_ == "table" and name.startswith("image_search"))


def run_migrations() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True,
                          include_object=include_object)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = engine_from_config(context.config.get_section(context.config.config_ini_section, {}),
                                prefix="sqlalchemy.", poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True,
                          include_object=include_object)
        with context.begin_transaction():
            context.run_migrations()


run_migrations()
