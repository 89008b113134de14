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

SQLite keeps the columns unused (one writer at a time; its claim is ``storage/pool.py``).
"""
from alembic import op
import sqlalchemy as sa

from delula.storage.db import edit_function, undo_edits
from delula.storage.models import UTCDateTime

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

POOL = "user_id = 'system_backlog' AND status = 'completed'"

SIGNATURE = "delula_instant_claim(integer, varchar, jsonb, timestamptz, double precision)"
# the claim function (0002, 0005, 0007) with the head: (as it was, as it becomes)
EDITS = [
    ("    v_active boolean;\n", """\
    v_active boolean;
    v_head timestamptz;
    v_arrivals bigint;
    v_oldest timestamptz;
"""),
    ("SELECT r.credit_cost, r.is_active INTO v_cost, v_active FROM recipes r WHERE r.id = p_recipe_id;", """\
SELECT r.credit_cost, r.is_active, coalesce(r.pool_head, '-infinity'), r.pool_arrivals
      INTO v_cost, v_active, v_head, v_arrivals FROM recipes r WHERE r.id = p_recipe_id;"""),
    # the scan for the oldest item, and the look for any item (race or no backlog), from the head
    ("AND p.status = 'completed'\n                            ORDER BY",
     "AND p.status = 'completed'\n                              AND p.created_at >= v_head\n                            ORDER BY"),
    ("AND p.status = 'completed')", "AND p.status = 'completed' AND p.created_at >= v_head)"),
    ("                UPDATE recipes r SET usage_count = r.usage_count + 1 WHERE r.id = p_recipe_id;", """\
                -- the new head: the oldest item left, uncommitted claims of others included. It
                -- misses what arrived since v_head was read, so it only stands if nothing did.
                SELECT min(p.created_at) INTO v_oldest FROM generations p
                 WHERE p.recipe_id = p_recipe_id AND p.user_id = 'system_backlog' AND p.status = 'completed'
                   AND p.created_at >= v_head;
                UPDATE recipes r
                   SET usage_count = r.usage_count + 1,
                       pool_head = CASE WHEN r.pool_arrivals = v_arrivals THEN coalesce(v_oldest, v_gen.created_at)
                                        ELSE r.pool_head END
                 WHERE r.id = p_recipe_id;"""),
]

ARRIVALS = f"""
CREATE FUNCTION delula_pool_arrived() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE recipes r
       SET pool_arrivals = r.pool_arrivals + 1,
           pool_head = CASE WHEN r.pool_head > NEW.created_at THEN NEW.created_at ELSE r.pool_head END
     WHERE r.id = NEW.recipe_id;
    RETURN NULL;
END
$$;

CREATE FUNCTION delula_pool_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE recipes r
       SET pool_arrivals = r.pool_arrivals + n.items,
           pool_head = CASE WHEN r.pool_head > n.oldest THEN n.oldest ELSE r.pool_head END
      FROM (SELECT recipe_id, count(*) AS items, min(created_at) AS oldest
              FROM inserted WHERE {POOL} GROUP BY recipe_id) n
     WHERE r.id = n.recipe_id;
    RETURN NULL;
END
$$;

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
        batch.add_column(sa.Column('pool_head', UTCDateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column('pool_arrivals', sa.BigInteger(), server_default='0', nullable=False))
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(ARRIVALS)
    edit_function(op.get_bind(), SIGNATURE, EDITS)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER generations_pool_inserted ON generations")
        op.execute("DROP TRIGGER generations_pool_arrived ON generations")
        op.execute("DROP FUNCTION delula_pool_inserted()")
        op.execute("DROP FUNCTION delula_pool_arrived()")
        edit_function(op.get_bind(), SIGNATURE, undo_edits(EDITS))
    with op.batch_alter_table('recipes') as batch:
        batch.drop_column('pool_arrivals')
        batch.drop_column('pool_head')
