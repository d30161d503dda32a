"""clients: scopes and quota on the tenant (a key may narrow its client's scopes, never widen them); audit log

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21
"""
import json

from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('tenants', schema=None) as batch_op:
        batch_op.add_column(sa.Column('scopes', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('quota_bytes', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('updated_at', sa.DateTime(timezone=True), nullable=True))

    # A client's scopes are the union of what its keys could do before.
    connection = op.get_bind()
    scopes: dict[int, set[str]] = {}
    for tenant_id, key_scopes in connection.execute(sa.text("SELECT tenant_id, scopes FROM api_keys")):
        if isinstance(key_scopes, str):
            key_scopes = json.loads(key_scopes)
        scopes.setdefault(tenant_id, set()).update(key_scopes or [])
    for (tenant_id,) in connection.execute(sa.text("SELECT id FROM tenants")):
        value = sorted(scopes.get(tenant_id) or ["ai:use", "images:read", "images:write"])
        connection.execute(sa.text("UPDATE tenants SET scopes = :s WHERE id = :id"),
                           {"s": json.dumps(value), "id": tenant_id})
    with op.batch_alter_table('tenants', schema=None) as batch_op:
        batch_op.alter_column('scopes', existing_type=sa.JSON(), nullable=False)
    with op.batch_alter_table('api_keys', schema=None) as batch_op:  # NULL: the client's scopes
        batch_op.alter_column('scopes', existing_type=sa.JSON(), nullable=True)

    op.create_table('audit_log',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('tenant_id', sa.Integer(), nullable=True),
    sa.Column('detail', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.create_index('ix_audit_log_created', ['created_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_log_created')
    op.drop_table('audit_log')
    with op.batch_alter_table('tenants', schema=None) as batch_op:
        batch_op.drop_column('updated_at')
        batch_op.drop_column('quota_bytes')
        batch_op.drop_column('scopes')
