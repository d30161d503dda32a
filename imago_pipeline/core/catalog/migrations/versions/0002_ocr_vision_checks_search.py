"""OCR, vision, tags, per-image check results, stage code versions, full-text search

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""
from alembic import op
import sqlalchemy as sa

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('image_stages', schema=None) as batch_op:
        batch_op.add_column(sa.Column('code_version', sa.String(length=200), nullable=True))

    op.create_table('image_checks',
    sa.Column('image_id', sa.Integer(), nullable=False),
    sa.Column('check_name', sa.String(length=64), nullable=False),
    sa.Column('tenant_id', sa.Integer(), nullable=False),
    sa.Column('passed', sa.Boolean(), nullable=False),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['image_id'], ['images.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('image_id', 'check_name')
    )
    op.create_index('ix_image_checks_tenant_id', 'image_checks', ['tenant_id'])

    op.create_table('ocr',
    sa.Column('image_id', sa.Integer(), nullable=False),
    sa.Column('tenant_id', sa.Integer(), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('confidence', sa.Float(), nullable=True),
    sa.Column('language', sa.String(length=8), nullable=True),
    sa.Column('has_text', sa.Boolean(), nullable=False),
    sa.Column('words', sa.JSON(), nullable=False),
    sa.Column('rotation', sa.Integer(), nullable=False),
    sa.Column('mode', sa.String(length=8), nullable=False),
    sa.Column('engine', sa.String(length=128), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['image_id'], ['images.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('image_id')
    )
    op.create_index('ix_ocr_tenant_id', 'ocr', ['tenant_id'])

    op.create_table('vision',
    sa.Column('image_id', sa.Integer(), nullable=False),
    sa.Column('tenant_id', sa.Integer(), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('tags', sa.JSON(), nullable=False),
    sa.Column('confidence', sa.Float(), nullable=True),
    sa.Column('model_used', sa.String(length=128), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['image_id'], ['images.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('image_id')
    )
    op.create_index('ix_vision_tenant_id', 'vision', ['tenant_id'])

    op.create_table('image_tags',
    sa.Column('image_id', sa.Integer(), nullable=False),
    sa.Column('tag', sa.String(length=64), nullable=False),
    sa.Column('tenant_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['image_id'], ['images.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('image_id', 'tag')
    )
    op.create_index('ix_image_tags_tenant_tag', 'image_tags', ['tenant_id', 'tag'])

    # Full-text search over OCR text and vision descriptions: FTS5 on SQLite, tsvector + GIN on Postgres.
    if op.get_bind().dialect.name == 'sqlite':
        # rowid is the image id
        op.execute("CREATE VIRTUAL TABLE image_search USING fts5("
                   "tenant_id UNINDEXED, body, tokenize = 'unicode61 remove_diacritics 2')")
    else:
        op.execute("CREATE TABLE image_search ("
                   "image_id integer PRIMARY KEY REFERENCES images(id) ON DELETE CASCADE, "
                   "tenant_id integer NOT NULL REFERENCES tenants(id) ON DELETE CASCADE, "
                   "body text NOT NULL, "
                   "tsv tsvector GENERATED ALWAYS AS (to_tsvector('simple', body)) STORED)")
        op.execute("CREATE INDEX ix_image_search_tsv ON image_search USING gin (tsv)")
        op.execute("CREATE INDEX ix_image_search_tenant ON image_search (tenant_id)")


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS image_search")
    op.drop_table('image_tags')
    op.drop_table('vision')
    op.drop_table('ocr')
    op.drop_table('image_checks')
    with op.batch_alter_table('image_stages', schema=None) as batch_op:
        batch_op.drop_column('code_version')
