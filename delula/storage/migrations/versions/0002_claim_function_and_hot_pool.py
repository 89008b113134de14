"""the instant claim as one PostgreSQL function; autovacuum and fillfactor for the hot pool

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28

PostgreSQL only (SQLite runs the same steps from ``storage/pool.py``):

- ``delula_instant_claim(recipe, user, patch, now, cooldown_s)`` (``storage/sql/instant_claim_v1.sql``)
  does the whole claim in one round trip: recipe check, the user's row lock, cooldown, credit check, the oldest pool row with
  ``FOR UPDATE SKIP LOCKED``, credit deduction (with the cooldown), ledger row, usage counter and
  the claim event. It returns the outcome and the claimed generation as JSON.
- ``generations``: claims leave dead pool-index entries at the head of the oldest-first scan. A
  vacuum after every 1,000 dead rows (not 20 % of a table of millions), unthrottled, keeps the head
  short; fillfactor 90 leaves room on each page for the new row versions of a claim.
- ``users``: every claim rewrites one user row; fillfactor 80 keeps those updates on the same page
  (credits and cooldown are not indexed, so they are HOT updates).
"""
from pathlib import Path

from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

SQL = Path(__file__).resolve().parents[2] / "sql"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute((SQL / "instant_claim_v1.sql").read_text())
    op.execute("""ALTER TABLE generations SET (
                      fillfactor = 90,
                      autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000,
                      autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_insert_threshold = 5000,
                      autovacuum_vacuum_cost_delay = 0,
                      autovacuum_analyze_scale_factor = 0, autovacuum_analyze_threshold = 5000)""")
    op.execute("ALTER TABLE users SET (fillfactor = 80, autovacuum_vacuum_scale_factor = 0.01, "
               "autovacuum_vacuum_threshold = 1000)")
    op.execute("ALTER TABLE claim_events SET (autovacuum_vacuum_insert_scale_factor = 0, "
               "autovacuum_vacuum_insert_threshold = 20000, autovacuum_analyze_scale_factor = 0.02)")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP FUNCTION IF EXISTS delula_instant_claim(integer, varchar, jsonb, timestamptz, double precision)")
    op.execute("""ALTER TABLE generations RESET (fillfactor, autovacuum_vacuum_scale_factor, autovacuum_vacuum_threshold,
                      autovacuum_vacuum_insert_scale_factor, autovacuum_vacuum_insert_threshold,
                      autovacuum_vacuum_cost_delay, autovacuum_analyze_scale_factor, autovacuum_analyze_threshold)""")
    op.execute("ALTER TABLE users RESET (fillfactor, autovacuum_vacuum_scale_factor, autovacuum_vacuum_threshold)")
    op.execute("ALTER TABLE claim_events RESET (autovacuum_vacuum_insert_scale_factor, "
               "autovacuum_vacuum_insert_threshold, autovacuum_analyze_scale_factor)")
