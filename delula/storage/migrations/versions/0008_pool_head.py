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

from delula.storage.models import UTCDateTime

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

POOL = "user_id = 'system_backlog' AND status = 'completed'"

# The claim function as 0007 left it, with the head; each fragment that differs is given as
# (with the head, before) so the downgrade restores 0007's text exactly.
_TEMPLATE = r"""
CREATE OR REPLACE FUNCTION delula_instant_claim(
    p_recipe_id integer, p_user_id varchar, p_patch jsonb, p_now timestamptz, p_cooldown_s double precision)
RETURNS TABLE (o_outcome text, o_generation jsonb, o_balance integer, o_cost integer, o_available integer,
               o_retry_after integer)
LANGUAGE plpgsql SET plan_cache_mode = auto AS $$
DECLARE
    v_cost integer;
    v_active boolean;
{declare_head}    v_user users%ROWTYPE;
    v_gen generations%ROWTYPE;
BEGIN
{read_recipe}
    IF NOT FOUND OR NOT v_active THEN
        o_outcome := 'recipe_not_found';
    ELSE
        o_cost := v_cost;
        SELECT * INTO v_user FROM users u WHERE u.id = p_user_id FOR NO KEY UPDATE;
        IF NOT FOUND THEN
            o_outcome := 'invalid';
        ELSIF p_cooldown_s > 0 AND v_user.instant_cooldown_until > p_now THEN
            o_outcome := 'rate_limited';
            o_retry_after := greatest(1, ceil(extract(epoch FROM v_user.instant_cooldown_until - p_now))::integer);
        ELSIF v_user.credits < v_cost AND v_user.role <> 'system' THEN
            o_outcome := 'insufficient_credits';
            o_available := v_user.credits;
        ELSE
            UPDATE generations g
               SET user_id = p_user_id, metadata = g.metadata || p_patch, updated_at = p_now
             WHERE g.id = (SELECT p.id FROM generations p
                            WHERE p.recipe_id = p_recipe_id AND p.user_id = 'system_backlog' AND p.status = 'completed'{from_head}
                            ORDER BY p.created_at, p.id LIMIT 1 FOR UPDATE SKIP LOCKED)
               AND g.user_id = 'system_backlog' AND g.status = 'completed'
            RETURNING g.* INTO v_gen;
            IF v_gen.id IS NULL THEN
                o_outcome := CASE WHEN EXISTS (SELECT 1 FROM generations p
                                               WHERE p.recipe_id = p_recipe_id AND p.user_id = 'system_backlog'
                                                 AND p.status = 'completed'{from_head})
                                  THEN 'race' ELSE 'no_backlog' END;
            ELSE
                UPDATE users u
                   SET credits = u.credits - v_cost,
                       instant_cooldown_until = CASE WHEN p_cooldown_s > 0
                                                     THEN p_now + make_interval(secs => p_cooldown_s)
                                                     ELSE u.instant_cooldown_until END
                 WHERE u.id = p_user_id
                RETURNING u.credits INTO o_balance;
                INSERT INTO credit_transactions (user_id, amount, balance_after, kind, generation_id, created_at)
                VALUES (p_user_id, -v_cost, o_balance, 'instant_claim', v_gen.id, p_now);
{count_the_use}
                o_outcome := 'claimed';
                o_generation := to_jsonb(v_gen);
            END IF;
        END IF;
    END IF;
    INSERT INTO claim_events (user_id, recipe_id, outcome, generation_id, latency_ms, created_at)
    VALUES (p_user_id, p_recipe_id,
            CASE WHEN o_outcome = 'recipe_not_found' THEN 'invalid' ELSE o_outcome END, v_gen.id,
            extract(epoch FROM clock_timestamp() - statement_timestamp()) * 1000.0, p_now);
    RETURN NEXT;
END
$$;
"""
_FRAGMENTS = dict(
    declare_head=("""\
    v_head timestamptz;
    v_arrivals bigint;
    v_oldest timestamptz;
""", ""),
    read_recipe=("""\
    SELECT r.credit_cost, r.is_active, coalesce(r.pool_head, '-infinity'), r.pool_arrivals
      INTO v_cost, v_active, v_head, v_arrivals FROM recipes r WHERE r.id = p_recipe_id;""", """\
    SELECT r.credit_cost, r.is_active INTO v_cost, v_active FROM recipes r WHERE r.id = p_recipe_id;"""),
    from_head=(" AND p.created_at >= v_head", ""),
    count_the_use=("""\
                -- the new head: the oldest item left, uncommitted claims of others included. It
                -- misses what arrived since v_head was read, so it only stands if nothing did.
                SELECT min(p.created_at) INTO v_oldest FROM generations p
                 WHERE p.recipe_id = p_recipe_id AND p.user_id = 'system_backlog' AND p.status = 'completed'
                   AND p.created_at >= v_head;
                UPDATE recipes r
                   SET usage_count = r.usage_count + 1,
                       pool_head = CASE WHEN r.pool_arrivals = v_arrivals THEN coalesce(v_oldest, v_gen.created_at)
                                        ELSE r.pool_head END
                 WHERE r.id = p_recipe_id;""", """\
                UPDATE recipes r SET usage_count = r.usage_count + 1 WHERE r.id = p_recipe_id;"""),
)
CLAIM_FUNCTION = _TEMPLATE.format(**{name: with_head for name, (with_head, _) in _FRAGMENTS.items()})
PREVIOUS_FUNCTION = _TEMPLATE.format(**{name: before for name, (_, before) in _FRAGMENTS.items()})

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
    op.execute(CLAIM_FUNCTION)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER generations_pool_inserted ON generations")
        op.execute("DROP TRIGGER generations_pool_arrived ON generations")
        op.execute("DROP FUNCTION delula_pool_inserted()")
        op.execute("DROP FUNCTION delula_pool_arrived()")
        op.execute(PREVIOUS_FUNCTION)
    with op.batch_alter_table('recipes') as batch:
        batch.drop_column('pool_arrivals')
        batch.drop_column('pool_head')
