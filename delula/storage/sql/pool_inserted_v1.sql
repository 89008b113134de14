-- delula_pool_inserted, version 1 (migration 0008): statement trigger on generations inserts.
-- Rows inserted straight into the pool lower their recipes' pool_head and bump pool_arrivals.
CREATE OR REPLACE FUNCTION delula_pool_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE recipes r
       SET pool_arrivals = r.pool_arrivals + n.items,
           pool_head = CASE WHEN r.pool_head > n.oldest THEN n.oldest ELSE r.pool_head END
      FROM (SELECT recipe_id, count(*) AS items, min(created_at) AS oldest
              FROM inserted WHERE user_id = 'system_backlog' AND status = 'completed' GROUP BY recipe_id) n
     WHERE r.id = n.recipe_id;
    RETURN NULL;
END
$$;
