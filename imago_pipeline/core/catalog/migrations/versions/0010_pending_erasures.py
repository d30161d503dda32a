"""pending erasures: an erasure is recorded with the catalog deletion and finished by whoever comes next

`DELETE /images/{id}` deletes the catalog rows first (from then on nothing sees the image), then the files,
the lake rows and the Dagster partition. A row here, written in the catalog deletion's transaction and
removed with the audit row once every store is done, lets a retried DELETE or the daily retention job
finish an erasure that a crash or an outage cut short (the image's rows were gone, so a retry answered 404
and its lake rows stayed for good).

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-29
"""
from alembic import op
import sqlalchemy as sa


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('pending_erasures',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('tenant_id', sa.Integer(), nullable=False),
    sa.Column('image_id', sa.Integer(), nullable=False),
    sa.Column('image_uuid', sa.String(length=36), nullable=False),
    sa.Column('blob_key', sa.String(length=512), nullable=False),
    sa.Column('catalog_rows', sa.Integer(), nullable=False),
    sa.Column('requested_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('pending_erasures', schema=None) as batch_op:
        batch_op.create_index('ix_pending_erasures_image', ['tenant_id', 'image_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('pending_erasures', schema=None) as batch_op:
        batch_op.drop_index('ix_pending_erasures_image')
    op.drop_table('pending_erasures')
