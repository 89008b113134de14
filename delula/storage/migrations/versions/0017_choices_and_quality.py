"""claims with choices, batch claims, the quality gate

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07

- ``generations.status`` may be ``rejected``: a finished backlog job the quality gate refused
  (its ``error`` says why); it never enters the pool.
- ``claim_events.choices`` and ``claim_events.matched``: the choices an instant attempt asked for
  (misses included: they are unmet demand) and whether what it was handed had them all.

The downgrade cannot keep ``rejected``: those items become ``cancelled``, their error kept, so
that no earlier version hands them out.
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None

STATUSES = "status IN ('pending', 'processing', 'completed', 'failed', 'cancelled', 'expired'{})"


def upgrade() -> None:
    with op.batch_alter_table('generations') as batch:
        batch.drop_constraint(op.f('ck_generations_status'), type_='check')
        batch.create_check_constraint(op.f('ck_generations_status'), STATUSES.format(", 'rejected'"))
    with op.batch_alter_table('claim_events') as batch:
        batch.add_column(sa.Column('choices', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'),
                                   nullable=True))
        batch.add_column(sa.Column('matched', sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('claim_events') as batch:
        batch.drop_column('matched')
        batch.drop_column('choices')
    op.execute("UPDATE generations SET status = 'cancelled', "
               "error = coalesce(error, 'rejected by the quality gate') WHERE status = 'rejected'")
    with op.batch_alter_table('generations') as batch:
        batch.drop_constraint(op.f('ck_generations_status'), type_='check')
        batch.create_check_constraint(op.f('ck_generations_status'), STATUSES.format(""))
