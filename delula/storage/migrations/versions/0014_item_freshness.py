"""item freshness: the status 'expired' and the claim function's version 6

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-08

- ``generations.status`` may be ``expired``: a pool item older than ``DELULA_MAX_ITEM_AGE_H``
  (from its completion), marked by backlog maintenance, kept and never handed out.
- The claim function's version 6 (``storage/sql/instant_claim_v6.sql``) takes the age bound
  ``p_fresh_after`` and never hands out an item completed before it; its signature changes, so
  version 5 is dropped first (and put back on downgrade).

The downgrade cannot keep ``expired``: those items become ``cancelled`` (their error says why),
not ``completed``, so that version 5, which knows no age bound, does not hand them out.
"""
from pathlib import Path

from alembic import op

revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None

SQL = Path(__file__).resolve().parents[2] / "sql"
V5 = "delula_instant_claim(integer, varchar, varchar, jsonb, timestamptz, double precision, varchar)"
V6 = "delula_instant_claim(integer, varchar, varchar, jsonb, timestamptz, double precision, varchar, timestamptz)"
STATUSES = "status IN ('pending', 'processing', 'completed', 'failed', 'cancelled'{})"


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    with op.batch_alter_table('generations') as batch:
        batch.drop_constraint(op.f('ck_generations_status'), type_='check')
        batch.create_check_constraint(op.f('ck_generations_status'), STATUSES.format(", 'expired'"))
    if postgres:
        op.execute(f"DROP FUNCTION {V5}")
        op.execute((SQL / "instant_claim_v6.sql").read_text())


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        op.execute(f"DROP FUNCTION {V6}")
        op.execute((SQL / "instant_claim_v5.sql").read_text())
    op.execute("UPDATE generations SET status = 'cancelled', "
               "error = coalesce(error, 'expired: older than DELULA_MAX_ITEM_AGE_H') WHERE status = 'expired'")
    with op.batch_alter_table('generations') as batch:
        batch.drop_constraint(op.f('ck_generations_status'), type_='check')
        batch.create_check_constraint(op.f('ck_generations_status'), STATUSES.format(""))
