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

The function's text is 0002's with that one lock changed, edited in place from the catalog so
the function stays defined in one migration.
"""
from alembic import op

from delula.storage.db import edit_function, undo_edits

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

SIGNATURE = "delula_instant_claim(integer, varchar, jsonb, timestamptz, double precision)"
EDITS = [("u.id = p_user_id FOR UPDATE;", "u.id = p_user_id FOR NO KEY UPDATE;")]


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        edit_function(op.get_bind(), SIGNATURE, EDITS)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        edit_function(op.get_bind(), SIGNATURE, undo_edits(EDITS))
