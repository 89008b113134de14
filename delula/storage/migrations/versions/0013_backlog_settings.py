"""backlog_settings: the backlog policy in force, kept in the database; recipes.backlog_policy

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-08

One row (id 1) holds the policy and the service level an operator applied; without it the
environment's DELULA_BACKLOG_POLICY and DELULA_SERVICE_LEVEL are in force. A recipe's own
backlog_policy (NULL: none) overrides the row for that recipe.
"""
import sqlalchemy as sa
from alembic import op

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('backlog_settings',
    sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('policy', sa.String(length=32), nullable=False),
    sa.Column('service_level', sa.Float(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_by', sa.String(length=64), nullable=True),
    sa.CheckConstraint('id = 1', name=op.f('ck_backlog_settings_single_row')),
    sa.CheckConstraint('service_level > 0 AND service_level < 1', name=op.f('ck_backlog_settings_service_level')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_backlog_settings'))
    )
    with op.batch_alter_table('recipes') as batch:
        batch.add_column(sa.Column('backlog_policy', sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('recipes') as batch:
        batch.drop_column('backlog_policy')
    op.drop_table('backlog_settings')
