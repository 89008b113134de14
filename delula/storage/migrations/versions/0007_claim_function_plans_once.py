"""the claim function keeps its plans (plan_cache_mode = auto inside it)

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29

Delula's connections plan every prepared statement with its real parameters
(``plan_cache_mode = force_custom_plan``, see ``storage/db.py``): a dashboard query over a time
window must not get a generic plan blind to the window. PL/pgSQL runs its statements as cached
plans too, so the setting made ``delula_instant_claim`` plan its eight statements again on every
call. Its statements are key lookups and the pool index's head, whose generic plans are the
right ones; with the setting back to ``auto`` inside the function, pgbench calling it from 8
clients went from 2,387 and 2,236 to 3,947 and 3,894 calls/s on this machine.

Installs ``storage/sql/instant_claim_v3.sql`` (version 2 with ``SET plan_cache_mode = auto``);
the downgrade puts version 2 back.
"""
from pathlib import Path

from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

SQL = Path(__file__).resolve().parents[2] / "sql"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute((SQL / "instant_claim_v3.sql").read_text())


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute((SQL / "instant_claim_v2.sql").read_text())
