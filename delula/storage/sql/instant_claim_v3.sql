-- delula_instant_claim, version 3 (migration 0007): plans are kept (plan_cache_mode = auto).
-- Sessions plan prepared statements with their real parameters (force_custom_plan, for the
-- dashboard's time windows), which made the function plan its statements again on every call.
CREATE OR REPLACE FUNCTION delula_instant_claim(
    p_recipe_id integer, p_user_id varchar, p_patch jsonb, p_now timestamptz, p_cooldown_s double precision)
RETURNS TABLE (o_outcome text, o_generation jsonb, o_balance integer, o_cost integer, o_available integer,
               o_retry_after integer)
LANGUAGE plpgsql
SET plan_cache_mode = auto
AS $$
DECLARE
    v_cost integer;
    v_active boolean;
    v_user users%ROWTYPE;
    v_gen generations%ROWTYPE;
BEGIN
    SELECT r.credit_cost, r.is_active INTO v_cost, v_active FROM recipes r WHERE r.id = p_recipe_id;
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
                            WHERE p.recipe_id = p_recipe_id AND p.user_id = 'system_backlog' AND p.status = 'completed'
                            ORDER BY p.created_at, p.id LIMIT 1 FOR UPDATE SKIP LOCKED)
               AND g.user_id = 'system_backlog' AND g.status = 'completed'
            RETURNING g.* INTO v_gen;
            IF v_gen.id IS NULL THEN
                o_outcome := CASE WHEN EXISTS (SELECT 1 FROM generations p
                                               WHERE p.recipe_id = p_recipe_id AND p.user_id = 'system_backlog'
                                                 AND p.status = 'completed')
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
                UPDATE recipes r SET usage_count = r.usage_count + 1 WHERE r.id = p_recipe_id;
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
