-- delula_pool_arrived, version 1 (migration 0008): row trigger on generations updates.
-- An item entering the pool (a backlog job completing, out of order too) lowers its recipe's
-- pool_head if it is older, and bumps pool_arrivals so a claim running meanwhile leaves the head.
CREATE OR REPLACE FUNCTION delula_pool_arrived() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE recipes r
       SET pool_arrivals = r.pool_arrivals + 1,
           pool_head = CASE WHEN r.pool_head > NEW.created_at THEN NEW.created_at ELSE r.pool_head END
     WHERE r.id = NEW.recipe_id;
    RETURN NULL;
END
$$;
