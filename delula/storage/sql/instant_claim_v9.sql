-- delula_instant_claim, version 9 (migration 0021): less work for the server in every claim.
-- - The misses' INSERT into claim_events runs only when there are misses. Version 8 ran it on
--   every call, over generate_series(1, 0) for a claim that got every item it asked for: about
--   30 us of the server's CPU a claim (python bench/claims.py --amplification, one connection).
-- - o_generations carries the columns the API's generation object shows (storage.pool.Item), not
--   to_jsonb of the whole row.
-- Otherwise as version 8 (below, its notes).
--
-- Version 8 (migration 0020): claims on one recipe do not wait for each other.
-- Version 7 ended every claim with an update of the recipe's row (usage_count and pool_head), so
-- the claims of one hot recipe queued on that row's lock, each until the one before it committed.
-- Now nothing a claim does waits on a row another claim of the recipe holds:
-- - usage goes to one of the recipe's rows in recipe_usage (storage.models.RecipeUsage): the row of
--   the server process running the claim (1 + its pid mod 64), which another claim holds only if
--   its process shares the slot. A recipe's usage is the sum of its rows: at most 65 (slot 0 is
--   where storage.catalog.bump_usage_count adds the usage of users' own generations).
-- - the head moves only when the recipe's row is free (FOR NO KEY UPDATE SKIP LOCKED) and no item
--   arrived since the claim read it; a claim that finds the row held leaves the head where it is.
--   The head stays a lower bound (it may only lag), so the scan stays oldest first and starts past
--   the dead entries as often as claims take turns to move it.
-- Otherwise as version 7 (below, its notes):
-- p_choices (NULL: none) is a subset of the recipe's form data: only an item whose form_data has
-- every given value matches (jsonb @>, as forms.matches says in Python). Without p_prefer a claim
-- with choices takes only matching items; with p_prefer it takes the oldest matching items, then
-- the oldest others. p_count (1-10) asks for up to that many items in this one transaction; with
-- p_all it is all or nothing: fewer than p_count items is 'no_backlog' (or 'race' when enough
-- exist but other claims hold them) and nothing is charged. The credits needed are checked
-- before the pool (p_count items' worth with p_all, else one) and again for what was taken: a
-- user who cannot pay for every item taken gets 'insufficient_credits' (o_required says how
-- much) and nothing. Each item is charged with its own ledger row, whose balance_after is the
-- running balance in the items' order; the cooldown is set once. o_generations is the items
-- handed out, oldest first, as to_jsonb rows; o_matched whether every one of them has the
-- choices (NULL without choices). Every item asked for is one attempt: one claim event per item
-- handed out, and one per item the pool could not give (a miss), carrying the choices; a refusal
-- before the pool is one event.
-- The scan keeps version 6's shape: the pool index's order from the recipe's pool_head, the age
-- bound and the choices as filters on the rows it visits, FOR UPDATE SKIP LOCKED. Lock order is
-- unchanged: the credited user's row, then pool rows in the index's order.
-- Otherwise as version 6: staff may act for another user only as storage.models.may_act_for
-- says; a claim for another user is audited (one row per item); the claimed item becomes its new
-- owner's (created_at the claim time, metadata.generatedAt when it was made, credits_charged the
-- cost).
CREATE OR REPLACE FUNCTION delula_instant_claim(
    p_recipe_id integer, p_user_id varchar, p_actor_id varchar, p_patch jsonb, p_now timestamptz,
    p_cooldown_s double precision, p_request_id varchar, p_fresh_after timestamptz,
    p_choices jsonb, p_prefer boolean, p_count integer, p_all boolean)
RETURNS TABLE (o_outcome text, o_generations jsonb, o_balance bigint, o_cost integer, o_available bigint,
               o_retry_after integer, o_required bigint, o_matched boolean)
LANGUAGE plpgsql
SET plan_cache_mode = auto
AS $$
DECLARE
    v_cost integer;
    v_active boolean;
    v_head timestamptz;
    v_arrivals bigint;
    v_oldest timestamptz;
    v_newest timestamptz;
    v_actor_role varchar;
    v_ids bigint[] := '{}';
    v_more bigint[];
    v_matching integer := 0;
    v_taken integer := 0;
    v_missed integer;
    v_need integer := CASE WHEN p_all THEN p_count ELSE 1 END;   -- items to pay for before the pool
    v_user users%ROWTYPE;
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
            ELSIF v_user.credits < v_cost::bigint * v_need AND v_user.role <> 'system' THEN
                o_outcome := 'insufficient_credits';
                o_available := v_user.credits;
                o_required := v_cost::bigint * v_need;
            ELSE
                SELECT coalesce(array_agg(t.id ORDER BY t.created_at, t.id), '{}'), max(t.created_at)
                  INTO v_ids, v_newest FROM (SELECT p.id, p.created_at FROM generations p
                         WHERE p.recipe_id = p_recipe_id AND p.user_id = 'system_backlog' AND p.status = 'completed'
                           AND p.created_at >= v_head AND coalesce(p.completed_at, p.created_at) >= p_fresh_after
                           AND (p_choices IS NULL OR p.form_data @> p_choices)
                         ORDER BY p.created_at, p.id LIMIT p_count FOR UPDATE SKIP LOCKED) t;
                v_matching := cardinality(v_ids);
                IF p_choices IS NOT NULL AND p_prefer AND v_matching < p_count THEN
                    SELECT coalesce(array_agg(t.id ORDER BY t.created_at, t.id), '{}'),
                           greatest(v_newest, max(t.created_at))
                      INTO v_more, v_newest FROM (SELECT p.id, p.created_at FROM generations p
                             WHERE p.recipe_id = p_recipe_id AND p.user_id = 'system_backlog'
                               AND p.status = 'completed' AND p.created_at >= v_head
                               AND coalesce(p.completed_at, p.created_at) >= p_fresh_after
                               AND p.id <> ALL (v_ids)
                             ORDER BY p.created_at, p.id LIMIT p_count - v_matching FOR UPDATE SKIP LOCKED) t;
                    v_ids := v_ids || v_more;
                END IF;
                v_taken := cardinality(v_ids);
                IF v_taken = 0 OR (p_all AND v_taken < p_count) THEN
                    v_taken := 0;
                    -- enough claimable items, locked ones included: other claims hold them
                    o_outcome := CASE WHEN (SELECT count(*) FROM (
                                              SELECT 1 FROM generations p
                                               WHERE p.recipe_id = p_recipe_id AND p.user_id = 'system_backlog'
                                                 AND p.status = 'completed' AND p.created_at >= v_head
                                                 AND coalesce(p.completed_at, p.created_at) >= p_fresh_after
                                                 AND (p_choices IS NULL OR p_prefer OR p.form_data @> p_choices)
                                               LIMIT v_need) n) >= v_need
                                      THEN 'race' ELSE 'no_backlog' END;
                ELSIF v_user.credits < v_cost::bigint * v_taken AND v_user.role <> 'system' THEN
                    v_taken := 0;
                    o_outcome := 'insufficient_credits';
                    o_available := v_user.credits;
                    o_required := v_cost::bigint * cardinality(v_ids);
                ELSE
                    WITH claimed AS (
                        UPDATE generations g
                           SET user_id = p_user_id, created_at = p_now, updated_at = p_now, credits_charged = v_cost,
                               metadata = g.metadata || p_patch || jsonb_build_object(
                                   'generatedAt', to_char(g.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))
                         WHERE g.id = ANY (v_ids)
                        RETURNING g.id, g.recipe_id, g.user_id, g.status, g.form_data, g.metadata, g.asset_url,
                                  g.thumbnail_url, g.error, g.created_at, g.updated_at, g.completed_at)
                    SELECT jsonb_agg(to_jsonb(c) ORDER BY array_position(v_ids, c.id)) INTO o_generations FROM claimed c;
                    UPDATE users u
                       SET credits = u.credits - v_cost::bigint * v_taken,
                           instant_cooldown_until = CASE WHEN p_cooldown_s > 0
                                                         THEN p_now + make_interval(secs => p_cooldown_s)
                                                         ELSE u.instant_cooldown_until END
                     WHERE u.id = p_user_id
                    RETURNING u.credits INTO o_balance;
                    INSERT INTO credit_transactions (user_id, amount, balance_after, kind, generation_id, created_at,
                                                     actor_id)
                    SELECT p_user_id, -v_cost, o_balance + v_cost::bigint * (v_taken - i.n), 'instant_claim', i.id, p_now,
                           p_actor_id
                      FROM unnest(v_ids) WITH ORDINALITY AS i (id, n) ORDER BY i.n;
                    -- this server process's own usage row of the recipe (one of 64)
                    INSERT INTO recipe_usage AS u (recipe_id, slot, n)
                    VALUES (p_recipe_id, 1 + pg_backend_pid() % 64, v_taken)
                    ON CONFLICT (recipe_id, slot) DO UPDATE SET n = u.n + excluded.n;
                    -- the new head, when the recipe's row is free and no item arrived since v_head was
                    -- read: the oldest item left, uncommitted claims of others included
                    PERFORM 1 FROM recipes r WHERE r.id = p_recipe_id AND r.pool_arrivals = v_arrivals
                       FOR NO KEY UPDATE SKIP LOCKED;
                    IF FOUND THEN
                        SELECT min(p.created_at) INTO v_oldest FROM generations p
                         WHERE p.recipe_id = p_recipe_id AND p.user_id = 'system_backlog'
                           AND p.status = 'completed' AND p.created_at >= v_head;
                        UPDATE recipes r SET pool_head = coalesce(v_oldest, v_newest) WHERE r.id = p_recipe_id;
                    END IF;
                    IF p_actor_id <> p_user_id THEN
                        INSERT INTO audit_events (at, actor_id, action, target_user_id, target_job_id,
                                                  target_recipe_id, details, request_id)
                        SELECT p_now, p_actor_id, 'claim_for_user', p_user_id, i.id, p_recipe_id,
                               jsonb_build_object('credits', v_cost), p_request_id
                          FROM unnest(v_ids) WITH ORDINALITY AS i (id, n) ORDER BY i.n;
                    END IF;
                    o_outcome := 'claimed';
                    o_matched := CASE WHEN p_choices IS NOT NULL THEN v_matching = v_taken END;
                END IF;
            END IF;
        END IF;
    END IF;
    IF o_outcome = 'claimed' THEN
        INSERT INTO claim_events (user_id, recipe_id, outcome, generation_id, latency_ms, created_at, actor_id,
                                  choices, matched)
        SELECT p_user_id, p_recipe_id, 'claimed', i.id,
               extract(epoch FROM clock_timestamp() - statement_timestamp()) * 1000.0, p_now, p_actor_id, p_choices,
               CASE WHEN p_choices IS NOT NULL THEN i.n <= v_matching END
          FROM unnest(v_ids) WITH ORDINALITY AS i (id, n);
    END IF;
    -- the items asked for and not handed out: misses of the pool, one per item (the rest of a
    -- batch that found fewer); a refusal before the pool is one event
    v_missed := CASE WHEN o_outcome = 'claimed' THEN p_count - v_taken
                     WHEN o_outcome IN ('no_backlog', 'race') THEN p_count ELSE 1 END;
    IF v_missed > 0 THEN
        INSERT INTO claim_events (user_id, recipe_id, outcome, generation_id, latency_ms, created_at, actor_id,
                                  choices, matched)
        SELECT p_user_id, p_recipe_id, CASE o_outcome WHEN 'recipe_not_found' THEN 'invalid'
                                                      WHEN 'claimed' THEN 'no_backlog' ELSE o_outcome END, NULL,
               extract(epoch FROM clock_timestamp() - statement_timestamp()) * 1000.0, p_now, p_actor_id,
               p_choices, CASE WHEN p_choices IS NOT NULL THEN false END
          FROM generate_series(1, v_missed);
    END IF;
    RETURN NEXT;
END
$$;
