"""an idempotency key keeps the claim's outcome

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01

A repeated ``Idempotency-Key`` gives back the first claim's result. Only the HTTP status and body
were kept, so the outcome was worked back out of them (a 400 was "insufficient credits" when its
message said so). The outcome is now stored beside them. Keys already stored (they live 24 hours)
get theirs here, from what they answered.
"""
import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

BACKFILL = """
UPDATE idempotency_keys SET outcome = CASE
    WHEN status_code = 200 THEN 'claimed'
    WHEN status_code = 409 THEN 'race'
    WHEN status_code = 429 THEN 'rate_limited'
    WHEN status_code = 404 AND response LIKE '%fallbackToModal%' THEN 'no_backlog'
    WHEN status_code = 404 THEN 'recipe_not_found'
    WHEN response LIKE '%"required"%' THEN 'insufficient_credits'
    ELSE 'invalid' END
WHERE status_code <> 0
"""


def upgrade() -> None:
    with op.batch_alter_table('idempotency_keys') as batch:
        batch.add_column(sa.Column('outcome', sa.String(length=32), nullable=True))
    cast = "CAST(response AS text)" if op.get_bind().dialect.name == "postgresql" else "response"
    op.execute(BACKFILL.replace("response LIKE", f"{cast} LIKE"))


def downgrade() -> None:
    with op.batch_alter_table('idempotency_keys') as batch:
        batch.drop_column('outcome')
