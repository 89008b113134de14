"""the claim locks the user's row FOR NO KEY UPDATE (no deadlock with the idempotency key)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29

A claim with an ``Idempotency-Key`` first inserts the key's row, whose foreign key to ``users``
takes a KEY SHARE lock on the user's row; ``delula_instant_claim`` then locked that row
``FOR UPDATE``, which conflicts with KEY SHARE. Two claims by one user with different keys,
both past their key insert, each waited for the other: PostgreSQL's deadlock detector killed
one after a second, answered 500. The claim only changes the user's credits and cooldown, never
its key, so ``FOR NO KEY UPDATE`` is the lock it needs: it still serialises claims of one user
(it conflicts with itself) and lets foreign-key checks through.

Installs ``storage/sql/instant_claim_v2.sql``; the downgrade puts version 1 back.
"""
from pathlib import Path

from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

SQL = Path(__file__).resolve().parents[2] / "sql"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute((SQL / "instant_claim_v2.sql").read_text())


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute((SQL / "instant_claim_v1.sql").read_text())
