"""uuid, started_at and places: what the original service's clients read, and where photos were taken

Every image gets a `uuid` (existing rows are given one here), the id the original Imago service's clients
know images by; `started_at` records when the current attempt was taken into work. The `exif` table gains
the place derived offline from the GPS position (nearest city, region, country code, IANA time zone) and
the capture time in UTC; existing rows get them when their EXIF stage runs again (`imago reprocess
--stale`: the stage's code version changed).

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-28
"""
import uuid

from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def _sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"


def upgrade() -> None:
    with op.batch_alter_table('images', schema=None) as batch_op:
        batch_op.add_column(sa.Column('uuid', sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column('started_at', sa.DateTime(timezone=True), nullable=True))
    bind = op.get_bind()
    if _sqlite():
        ids = [row[0] for row in bind.execute(sa.text("SELECT id FROM images"))]
        if ids:
            bind.execute(sa.text("UPDATE images SET uuid = :uuid WHERE id = :id"),
                         [{"id": i, "uuid": str(uuid.uuid4())} for i in ids])
    else:
        bind.execute(sa.text("UPDATE images SET uuid = gen_random_uuid()::text"))
    # Rebuilt on SQLite to make the column NOT NULL, keeping AUTOINCREMENT (see 0006)
    rebuild = dict(recreate="always", table_kwargs={"sqlite_autoincrement": True}) if _sqlite() else {}
    with op.batch_alter_table('images', schema=None, **rebuild) as batch_op:
        batch_op.alter_column('uuid', existing_type=sa.String(length=36), nullable=False)
        batch_op.create_index('ix_images_uuid', ['uuid'], unique=True)
    with op.batch_alter_table('exif', schema=None) as batch_op:
        batch_op.add_column(sa.Column('city', sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column('admin1', sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column('country_code', sa.String(length=2), nullable=True))
        batch_op.add_column(sa.Column('timezone', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('datetime_utc', sa.String(length=40), nullable=True))
        batch_op.create_index('ix_exif_country_code', ['country_code'])


def downgrade() -> None:
    with op.batch_alter_table('exif', schema=None) as batch_op:
        batch_op.drop_index('ix_exif_country_code')
        for column in ('datetime_utc', 'timezone', 'country_code', 'admin1', 'city'):
            batch_op.drop_column(column)
    with op.batch_alter_table('images', schema=None) as batch_op:
        batch_op.drop_index('ix_images_uuid')
        batch_op.drop_column('started_at')
        batch_op.drop_column('uuid')
