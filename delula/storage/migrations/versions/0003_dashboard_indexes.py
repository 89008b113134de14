"""indexes for the dashboard's bounded aggregates on millions of rows

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29

Measured with ``bench/dashboard.py`` (2,000,000 generations, 1,000,000 claim events):

- ``ix_generations_pending_age`` ``(created_at, id) WHERE status = 'pending'``: the queue's
  oldest pending job. Without it the planner walked ``ix_generations_created_at`` from the oldest
  row, filtering out two million non-pending rows (0.4 s per queue page).
- ``ix_generations_finished`` ``(completed_at, started_at) WHERE status = 'completed'``: the
  overview's completions, processing-time histogram and percentiles read only this index. It
  replaces ``ix_generations_completed_at`` (every reader of ``completed_at`` asks for completed
  generations), so a claim — an update of a completed row — writes no more index entries than
  before this migration.
- ``ix_generations_user_jobs`` ``(created_at)`` over users' own jobs (``metadata.source = 'user'``,
  not the system user): the overview's "normal generations" series without reading the heap.
- ``claim_events``: ``outcome`` joins the keys of both time indexes, so the claim series and
  outcome counts are index-only scans.
"""
from alembic import op
import sqlalchemy as sa

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

USER_JOBS_PG = "(metadata ->> 'source') = 'user' AND user_id <> 'system_backlog'"
USER_JOBS_SQLITE = "json_extract(metadata, '$.source') = 'user' AND user_id <> 'system_backlog'"


def upgrade() -> None:
    op.create_index('ix_generations_pending_age', 'generations', ['created_at', 'id'], unique=False,
                    postgresql_where=sa.text("status = 'pending'"), sqlite_where=sa.text("status = 'pending'"))
    op.create_index('ix_generations_finished', 'generations', ['completed_at', 'started_at'], unique=False,
                    postgresql_where=sa.text("status = 'completed'"), sqlite_where=sa.text("status = 'completed'"))
    op.create_index('ix_generations_user_jobs', 'generations', ['created_at'], unique=False,
                    postgresql_where=sa.text(USER_JOBS_PG), sqlite_where=sa.text(USER_JOBS_SQLITE))
    op.create_index('ix_claim_events_created_at_outcome', 'claim_events', ['created_at', 'outcome'], unique=False)
    op.create_index('ix_claim_events_recipe_id_created_at_outcome', 'claim_events',
                    ['recipe_id', 'created_at', 'outcome'], unique=False)
    op.drop_index('ix_generations_completed_at', table_name='generations')
    op.drop_index('ix_claim_events_created_at', table_name='claim_events')
    op.drop_index('ix_claim_events_recipe_id_created_at', table_name='claim_events')


def downgrade() -> None:
    op.create_index('ix_generations_completed_at', 'generations', ['completed_at'], unique=False)
    op.create_index('ix_claim_events_recipe_id_created_at', 'claim_events', ['recipe_id', 'created_at'], unique=False)
    op.create_index('ix_claim_events_created_at', 'claim_events', ['created_at'], unique=False)
    op.drop_index('ix_claim_events_recipe_id_created_at_outcome', table_name='claim_events')
    op.drop_index('ix_claim_events_created_at_outcome', table_name='claim_events')
    op.drop_index('ix_generations_user_jobs', table_name='generations')
    op.drop_index('ix_generations_finished', table_name='generations')
    op.drop_index('ix_generations_pending_age', table_name='generations')
