"""sign_in_failures: the sign-in throttle in the database, per username and per client address

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01

Counted by one upsert per attempt, before the password is checked, so parallel attempts cannot
pass the check before their failures are counted, and every process of the deployment shares it.
"""
import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('sign_in_failures',
    sa.Column('scope', sa.String(length=16), nullable=False),
    sa.Column('key', sa.String(length=128), nullable=False),
    sa.Column('failures', sa.Integer(), nullable=False),
    sa.Column('window_start', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('scope', 'key', name=op.f('pk_sign_in_failures'))
    )


def downgrade() -> None:
    op.drop_table('sign_in_failures')
