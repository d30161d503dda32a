"""claims: which run (or process) has taken an image; ids never reused on SQLite (AUTOINCREMENT)

An image is taken from `pending`/`requeued` into a run in one transaction: `claim` names the run's claim
token (or the in-process owner), `claimed_at` when. Work is found by status, never by "ids after the last
one seen", and a reconciliation finds claims whose run or process is gone.

SQLite reuses the largest rowid after it is deleted unless the table is declared AUTOINCREMENT: an erased
newest image's id went to the next upload. The images and tenants tables are rebuilt with it (Postgres
sequences never reuse values). The rebuild runs with foreign keys off (`catalog.db.migrate`), so dropping
the old table cascades nowhere.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28
"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def _sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"


def upgrade() -> None:
    rebuild = dict(recreate="always", table_kwargs={"sqlite_autoincrement": True}) if _sqlite() else {}
    with op.batch_alter_table('images', schema=None, **rebuild) as batch_op:
        batch_op.add_column(sa.Column('claim', sa.String(length=120), nullable=True))
        batch_op.add_column(sa.Column('claimed_at', sa.DateTime(timezone=True), nullable=True))
    if _sqlite():
        with op.batch_alter_table('tenants', schema=None, **rebuild):
            pass


def downgrade() -> None:
    with op.batch_alter_table('images', schema=None) as batch_op:
        batch_op.drop_column('claimed_at')
        batch_op.drop_column('claim')
