"""demand_minutes: instant attempts per minute and recipe, hits and misses

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07

Demand is attempts, not successful claims; a forecast over weeks reads these rows, rolled up
from claim_events every minute, instead of one row per attempt.
"""
import sqlalchemy as sa
from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('demand_minutes',
    sa.Column('minute', sa.DateTime(timezone=True), nullable=False),
    sa.Column('recipe_id', sa.Integer(), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('hits', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('minute', 'recipe_id', name=op.f('pk_demand_minutes'))
    )


def downgrade() -> None:
    op.drop_table('demand_minutes')
