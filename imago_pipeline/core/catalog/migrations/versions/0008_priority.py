"""priority: which images go first (interactive uploads by plan above bulk work)

An upload through the API gets its client's plan priority (free 10, pro 20, enterprise 30 by default);
drops, `imago ingest` and background reprocessing get 0 (bulk). The upload sensor takes higher
priorities first and puts each lane in runs of its own, tagged for the run queue.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28
"""
from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('images', schema=None) as batch_op:
        batch_op.add_column(sa.Column('priority', sa.Integer(), nullable=False, server_default='0'))


def downgrade() -> None:
    with op.batch_alter_table('images', schema=None) as batch_op:
        batch_op.drop_column('priority')
