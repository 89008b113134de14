"""the claim starts its scan at the pool's head: no decay on a hot recipe

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29

Every claim moves its row out of the partial pool index's predicate and leaves a dead entry at
the head of the oldest-first scan; until a vacuum removes them, every later claim of the recipe
steps over all of them. Autovacuum cannot keep up on a hot recipe: the server looks at each
database once a minute (``autovacuum_naptime``), so after 45 s on one recipe reaching the first
live entry took 576 index pages and 2.5 ms, and the claim rate fell to 0.66-0.71 of its start.

``recipes.pool_head`` is a lower bound of the ``created_at`` of the recipe's claimable items; the
claim scans ``created_at >= pool_head`` and starts past the dead entries. The bound is kept safe
(never above an item a claim could take), so the order stays strictly oldest-first:

- a claim raises it, in the row update it already does for ``usage_count``, to the oldest item
  still in the pool as its own statement sees it. Items other claims hold but have not committed
  still count there, so a claim that rolls back leaves its item above the head.
- an item entering the pool (a backlog job completing, out of order too, or rows inserted ready)
  lowers the head if needed and bumps ``recipes.pool_arrivals``, by trigger, in its own
  transaction. A claim during which an item arrived (the counter changed since it read the
  head: its view of the pool may miss the item) leaves the head as it is; the next claim raises it.
- ``NULL`` means unknown: the claim scans the whole pool and sets it.

Installs ``storage/sql/instant_claim_v4.sql`` and the trigger functions ``pool_arrived_v1.sql`` and
``pool_inserted_v1.sql``; the downgrade puts the claim's version 3 back. SQLite keeps the columns
unused (one writer at a time; its claim is ``storage/pool.py``).
"""
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

SQL = Path(__file__).resolve().parents[2] / "sql"

TRIGGERS = """
CREATE TRIGGER generations_pool_arrived AFTER UPDATE ON generations FOR EACH ROW
    WHEN (NEW.user_id = 'system_backlog' AND NEW.status = 'completed'
          AND NOT (OLD.user_id = 'system_backlog' AND OLD.status = 'completed'
                   AND OLD.recipe_id = NEW.recipe_id AND OLD.created_at <= NEW.created_at))
    EXECUTE FUNCTION delula_pool_arrived();

CREATE TRIGGER generations_pool_inserted AFTER INSERT ON generations
    REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT
    EXECUTE FUNCTION delula_pool_inserted();
"""


def upgrade() -> None:
    with op.batch_alter_table('recipes') as batch:
        batch.add_column(sa.Column('pool_head', sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column('pool_arrivals', sa.BigInteger(), server_default='0', nullable=False))
    if op.get_bind().dialect.name != "postgresql":
        return
    for name in ("pool_arrived_v1.sql", "pool_inserted_v1.sql"):
        op.execute((SQL / name).read_text())
    op.execute(TRIGGERS)
    op.execute((SQL / "instant_claim_v4.sql").read_text())


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER generations_pool_inserted ON generations")
        op.execute("DROP TRIGGER generations_pool_arrived ON generations")
        op.execute("DROP FUNCTION delula_pool_inserted()")
        op.execute("DROP FUNCTION delula_pool_arrived()")
        op.execute((SQL / "instant_claim_v3.sql").read_text())
    with op.batch_alter_table('recipes') as batch:
        batch.drop_column('pool_arrivals')
        batch.drop_column('pool_head')
