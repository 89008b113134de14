-- delula_instant_claim, version 6 (migration 0014): item freshness.
-- p_fresh_after is the pool's age bound (storage.models.fresh_after: p_now less
-- DELULA_MAX_ITEM_AGE_H): an item completed before it is never handed out, even before
-- maintenance marks it 'expired' (storage.models.fresh states the same rule; an item without a
-- completion time is aged from its creation). The scan keeps its range start on the pool index's
-- order, (recipe_id, created_at, id) from the recipe's pool_head; the bound is on the completion
-- time, which that order does not follow (a job may wait long before it completes), so it is a
-- filter on the rows the scan visits -- rows the claim reads anyway to lock one. Stale items are
-- no claim's and no race's: a pool of only stale items is 'no_backlog'. The head still counts them
-- (it is a lower bound of the pool, whatever the bound), so a larger bound after a restart hides
-- nothing; maintenance takes them out of the pool within a pass.
-- Otherwise as version 5: p_actor_id is who asked for the claim (the credited user, or staff
-- acting for them). Staff may act for another user only as the rule says
-- (storage.models.may_act_for): ops for anyone, product for test accounts; anyone else is
-- 'forbidden', before the recipe is even looked at. The ledger row and the claim event carry the
-- actor; a claim for another user is written to audit_events in the same transaction. The claimed
-- item becomes its new owner's: created_at is the claim time (metadata.generatedAt keeps when it
-- was made) and credits_charged what it cost. Credits are bigint.
CREATE OR REPLACE FUNCTION delula_instant_claim(
    p_recipe_id integer, p_user_id varchar, p_actor_id varchar, p_patch jsonb, p_now timestamptz,
    p_cooldown_s double precision, p_request_id varchar, p_fresh_after timestamptz)
RETURNS TABLE (o_outcome text, o_generation jsonb, o_balance bigint, o_cost integer, o_available bigint,
               o_retry_after integer)
LANGUAGE plpgsql
SET plan_cache_mode = auto
AS $$
DECLARE
    v_cost integer;
    v_active boolean;
    v_head timestamptz;
    v_arrivals bigint;
    v_oldest timestamptz;
    v_actor_role varchar;
    v_item bigint;
    v_made timestamptz;
    v_user users%ROWTYPE;
    v_gen generations%ROWTYPE;
BEGIN
    IF p_actor_id <> p_user_id THEN
        SELECT u.role INTO v_actor_role FROM users u WHERE u.id = p_actor_id;
    END IF;
    IF p_actor_id <> p_user_id AND v_actor_role IS DISTINCT FROM 'ops' AND v_actor_role IS DISTINCT FROM 'product' THEN
        o_outcome := 'forbidden';
    ELSE
        SELECT r.credit_cost, r.is_active, coalesce(r.pool_head, '-infinity'), r.pool_arrivals
          INTO v_cost, v_active, v_head, v_arrivals FROM recipes r WHERE r.id = p_recipe_id;
        IF NOT FOUND OR NOT v_active THEN
            o_outcome := 'recipe_not_found';
        ELSE
            o_cost := v_cost;
            SELECT * INTO v_user FROM users u WHERE u.id = p_user_id FOR NO KEY UPDATE;
            IF NOT FOUND THEN
                o_outcome := 'invalid';
            ELSIF v_actor_role = 'product' AND NOT v_user.is_test THEN
                o_outcome := 'forbidden';
            ELSIF p_cooldown_s > 0 AND v_user.instant_cooldown_until > p_now THEN
                o_outcome := 'rate_limited';
                o_retry_after := greatest(1, ceil(extract(epoch FROM v_user.instant_cooldown_until - p_now))::integer);
            ELSIF v_user.credits < v_cost AND v_user.role <> 'system' THEN
                o_outcome := 'insufficient_credits';
                o_available := v_user.credits;
            ELSE
                SELECT p.id, p.created_at INTO v_item, v_made FROM generations p
                 WHERE p.recipe_id = p_recipe_id AND p.user_id = 'system_backlog' AND p.status = 'completed'
                   AND p.created_at >= v_head AND coalesce(p.completed_at, p.created_at) >= p_fresh_after
                 ORDER BY p.created_at, p.id LIMIT 1 FOR UPDATE SKIP LOCKED;
                IF v_item IS NULL THEN
                    o_outcome := CASE WHEN EXISTS (SELECT 1 FROM generations p
                                                   WHERE p.recipe_id = p_recipe_id AND p.user_id = 'system_backlog'
                                                     AND p.status = 'completed' AND p.created_at >= v_head
                                                     AND coalesce(p.completed_at, p.created_at) >= p_fresh_after)
                                      THEN 'race' ELSE 'no_backlog' END;
                ELSE
                    UPDATE generations g
                       SET user_id = p_user_id, created_at = p_now, updated_at = p_now, credits_charged = v_cost,
                           metadata = g.metadata || p_patch || jsonb_build_object(
                               'generatedAt', to_char(v_made AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))
                     WHERE g.id = v_item
                    RETURNING g.* INTO v_gen;
                    UPDATE users u
                       SET credits = u.credits - v_cost,
                           instant_cooldown_until = CASE WHEN p_cooldown_s > 0
                                                         THEN p_now + make_interval(secs => p_cooldown_s)
                                                         ELSE u.instant_cooldown_until END
                     WHERE u.id = p_user_id
                    RETURNING u.credits INTO o_balance;
                    INSERT INTO credit_transactions (user_id, amount, balance_after, kind, generation_id, created_at,
                                                     actor_id)
                    VALUES (p_user_id, -v_cost, o_balance, 'instant_claim', v_gen.id, p_now, p_actor_id);
                    -- the new head: the oldest item left, uncommitted claims of others included. It
                    -- misses what arrived since v_head was read, so it only stands if nothing did.
                    SELECT min(p.created_at) INTO v_oldest FROM generations p
                     WHERE p.recipe_id = p_recipe_id AND p.user_id = 'system_backlog' AND p.status = 'completed'
                       AND p.created_at >= v_head;
                    UPDATE recipes r
                       SET usage_count = r.usage_count + 1,
                           pool_head = CASE WHEN r.pool_arrivals = v_arrivals THEN coalesce(v_oldest, v_made)
                                            ELSE r.pool_head END
                     WHERE r.id = p_recipe_id;
                    IF p_actor_id <> p_user_id THEN
                        INSERT INTO audit_events (at, actor_id, action, target_user_id, target_job_id,
                                                  target_recipe_id, details, request_id)
                        VALUES (p_now, p_actor_id, 'claim_for_user', p_user_id, v_gen.id, p_recipe_id,
                                jsonb_build_object('credits', v_cost), p_request_id);
                    END IF;
                    o_outcome := 'claimed';
                    o_generation := to_jsonb(v_gen);
                END IF;
            END IF;
        END IF;
    END IF;
    INSERT INTO claim_events (user_id, recipe_id, outcome, generation_id, latency_ms, created_at, actor_id)
    VALUES (p_user_id, p_recipe_id,
            CASE WHEN o_outcome = 'recipe_not_found' THEN 'invalid' ELSE o_outcome END, v_gen.id,
            extract(epoch FROM clock_timestamp() - statement_timestamp()) * 1000.0, p_now, p_actor_id);
    RETURN NEXT;
END
$$;
