"""the claim function's version 7: choices and batches

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07

The claim function's version 7 (``storage/sql/instant_claim_v7.sql``) takes the choices of a
claim (a subset of the recipe's form data, exact or preferred) and a batch size (up to 10 items,
all or nothing on request), and returns the items handed out as a list. Its signature and its
result change, so version 6 is dropped first (and put back on downgrade).
"""
from pathlib import Path

from alembic import op

revision = '0018'
down_revision = '0017'
branch_labels = None
depends_on = None

SQL = Path(__file__).resolve().parents[2] / "sql"
V6 = "delula_instant_claim(integer, varchar, varchar, jsonb, timestamptz, double precision, varchar, timestamptz)"
V7 = ("delula_instant_claim(integer, varchar, varchar, jsonb, timestamptz, double precision, varchar, timestamptz, "
      "jsonb, boolean, integer, boolean)")


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP FUNCTION {V6}")
        op.execute((SQL / "instant_claim_v7.sql").read_text())


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP FUNCTION {V7}")
        op.execute((SQL / "instant_claim_v6.sql").read_text())
