"""the claim function, version 9: the misses' insert only when there are misses, a narrower result

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-08

Version 8 ran the INSERT of the misses' claim events on every call, over no rows when the claim
got every item it asked for, and gave back to_jsonb of the whole claimed row. Version 9
(``storage/sql/instant_claim_v9.sql``) inserts misses only when there are some and gives back the
columns of ``storage.pool.Item``. No table changes; the downgrade puts version 8 back.
"""
from pathlib import Path

from alembic import op

revision = '0021'
down_revision = '0020'
branch_labels = None
depends_on = None

SQL = Path(__file__).resolve().parents[2] / "sql"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute((SQL / "instant_claim_v9.sql").read_text())


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute((SQL / "instant_claim_v8.sql").read_text())
