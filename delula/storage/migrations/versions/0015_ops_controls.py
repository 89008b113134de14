"""ops controls: pauses, database counters, the provider circuit breaker

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07

- ``pauses``: a row per paused thing (backlog generation of every recipe or of one, queue
  submissions), with who paused it and when; every process reads it each tick.
- ``counters`` and ``counter_marks``: monotonic counters for ``/metrics``, added to by every
  process in the transactions of what they count; ``counter_marks`` says how far the instant
  claims counter has added up ``claim_events``.
- ``provider_breaker``: the provider circuit breaker's shared state.
"""
import sqlalchemy as sa
from alembic import op

revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('pauses',
    sa.Column('scope', sa.String(length=16), nullable=False),
    sa.Column('recipe_id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('paused_by', sa.String(length=64), nullable=True),
    sa.Column('paused_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("scope IN ('backlog', 'queue')", name=op.f('ck_pauses_scope')),
    sa.CheckConstraint("scope = 'backlog' OR recipe_id = 0", name=op.f('ck_pauses_queue_whole')),
    sa.PrimaryKeyConstraint('scope', 'recipe_id', name=op.f('pk_pauses'))
    )
    op.create_table('counters',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('labels', sa.String(length=200), nullable=False),
    sa.Column('n', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('name', 'labels', name=op.f('pk_counters'))
    )
    op.create_table('counter_marks',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('until', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_counter_marks'))
    )
    op.create_table('provider_breaker',
    sa.Column('name', sa.String(length=32), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('failures', sa.Integer(), nullable=False),
    sa.Column('trips', sa.Integer(), nullable=False),
    sa.Column('opened_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('next_probe_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('probe_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("state IN ('closed', 'open', 'half_open')", name=op.f('ck_provider_breaker_state')),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_provider_breaker'))
    )


def downgrade() -> None:
    op.drop_table('provider_breaker')
    op.drop_table('counter_marks')
    op.drop_table('counters')
    op.drop_table('pauses')
