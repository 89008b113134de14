"""roll-up of claim events and generations for the overview's long ranges

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29

A week on the overview aggregated a million claim events and half a million completions at
every cold build (~0.4 s on ``bench/dashboard.py``'s data, a day ~0.1 s). ``stat_counts`` keeps
their counts per quarter hour (per hour for completions by processing time), recipe and key; the
scheduler fills it for closed hours (``overview.roll_up``) and the overview's day and week read
it for everything but the last hour or two.
"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('stat_counts',
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('recipe_id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('metric', sa.String(length=16), nullable=False),
    sa.Column('key', sa.String(length=32), nullable=False),
    sa.Column('n', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('at', 'recipe_id', 'metric', 'key', name=op.f('pk_stat_counts'))
    )


def downgrade() -> None:
    op.drop_table('stat_counts')
