"""The instant claim: every outcome on both databases, and its invariants under parallel load."""
from __future__ import annotations

import random
import threading
import time
from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import text

from delula import auth, claims, recipes
from delula.clock import ManualClock
from delula.storage import SYSTEM_BACKLOG_USER_ID, accounts, catalog, jobs
from delula.storage.models import ClaimEvent, CreditTransaction, Generation, Recipe
from tests.support.factories import add_pool_items, pool_row


def _recipe(rt, cost=2, **kw):
    return recipes.create_recipe(rt, name=kw.pop("name", f"Recipe {random.random()}"), credit_cost=cost, **kw)


def _events(rt) -> list[ClaimEvent]:
    with rt.store.begin() as s:
        return list(s.query(ClaimEvent).order_by(ClaimEvent.id))


def _ledger(rt, user_id) -> list[CreditTransaction]:
    with rt.store.begin() as s:
        return list(s.query(CreditTransaction).filter_by(user_id=user_id).order_by(CreditTransaction.id))


def test_claim_moves_the_oldest_item_and_charges_in_one_go(rt):
    recipe = _recipe(rt, cost=3)
    ids = add_pool_items(rt, recipe.id, 3)
    user, _ = auth.create_user(rt, "ana", credits=10)

    result = claims.instant_claim(rt, recipe_id=recipe.id, user_id=user.id)

    assert result.ok and result.status_code == 200
    body = result.body
    assert body["creditsCharged"] == 3 and body["creditsRemaining"] == 7
    gen = body["generation"]
    assert gen["id"] == min(ids)  # oldest first
    assert gen["userId"] == user.id and gen["status"] == "completed"
    assert gen["metadata"]["isInstant"] is True and gen["metadata"]["claimedAt"].endswith("Z")
    assert gen["metadata"]["source"] == "backlog"  # the patch keeps existing metadata
    with rt.store.begin() as s:
        assert accounts.get_user(s, user.id).credits == 7
        assert catalog.get_recipe(s, recipe.id).usage_count == 1
        stored = jobs.get_generation(s, gen["id"])
        assert stored.user_id == user.id and stored.meta["isInstant"] is True
        assert accounts.ledger_mismatches(s) == []
    ledger = _ledger(rt, user.id)
    assert [(t.kind, t.amount, t.balance_after, t.generation_id) for t in ledger] == [
        ("grant", 10, 10, None), ("instant_claim", -3, 7, gen["id"])]
    [event] = _events(rt)
    assert (event.outcome, event.user_id, event.recipe_id, event.generation_id) == (
        "claimed", user.id, recipe.id, gen["id"])
    assert event.latency_ms > 0


def test_empty_pool_is_404_with_fallback_and_changes_nothing_but_the_event(rt):
    recipe = _recipe(rt)
    user, _ = auth.create_user(rt, "ben", credits=10)
    result = claims.instant_claim(rt, recipe_id=recipe.id, user_id=user.id)
    assert result.response() == (404, {"message": "No instant generation available", "fallbackToModal": True})
    assert [e.outcome for e in _events(rt)] == ["no_backlog"]
    assert len(_ledger(rt, user.id)) == 1
    assert auth.get_user(rt, user_id=user.id).credits == 10


@pytest.mark.parametrize("active", [True, False])
def test_unknown_or_inactive_recipe_is_404(rt, active):
    user, _ = auth.create_user(rt, "cai", credits=10)
    recipe_id = 424242
    if not active:
        recipe = _recipe(rt, is_active=False)
        add_pool_items(rt, recipe.id, 2)
        recipe_id = recipe.id
    result = claims.instant_claim(rt, recipe_id=recipe_id, user_id=user.id)
    assert result.response() == (404, {"message": "Recipe not found"})
    assert result.outcome is claims.Outcome.RECIPE_NOT_FOUND
    assert [e.outcome for e in _events(rt)] == ["invalid"]


def test_insufficient_credits_reports_required_and_available(rt):
    recipe = _recipe(rt, cost=5)
    add_pool_items(rt, recipe.id, 1)
    user, _ = auth.create_user(rt, "dee", credits=4)
    result = claims.instant_claim(rt, recipe_id=recipe.id, user_id=user.id)
    assert result.response() == (400, {"message": "Insufficient credits", "required": 5, "available": 4})
    assert recipes.available_count(rt, recipe.id) == 1
    assert auth.get_user(rt, user_id=user.id).credits == 4
    assert [e.outcome for e in _events(rt)] == ["insufficient_credits"]


def test_system_role_may_go_below_zero(rt):
    recipe = _recipe(rt, cost=5)
    add_pool_items(rt, recipe.id, 1)
    auth.create_user(rt, "qa_system", role="system", credits=0, with_token=False)
    system = auth.get_user(rt, username="qa_system")
    result = claims.instant_claim(rt, recipe_id=recipe.id, user_id=system.id)
    assert result.ok and result.body["creditsRemaining"] == -5
    with rt.store.begin() as s:
        assert accounts.ledger_mismatches(s) == []


def test_unknown_target_user_is_invalid(rt):
    recipe = _recipe(rt)
    add_pool_items(rt, recipe.id, 1)
    result = claims.instant_claim(rt, recipe_id=recipe.id, user_id="u_nobody")
    assert result.status_code == 400 and result.body["errors"] == {"targetUserId": "no such user"}
    assert recipes.available_count(rt, recipe.id) == 1


def test_cooldown_starts_with_a_successful_claim_and_passes(db_url, make_runtime):
    clock = ManualClock()
    rt = make_runtime(db_url, clock=clock, instant_cooldown_s=10)
    auth.ensure_system_user(rt)
    recipe = _recipe(rt, cost=1)
    add_pool_items(rt, recipe.id, 3)
    user, _ = auth.create_user(rt, "eve", credits=10)

    assert claims.instant_claim(rt, recipe_id=recipe.id, user_id=user.id).ok
    clock.advance(3.2)
    limited = claims.instant_claim(rt, recipe_id=recipe.id, user_id=user.id)
    assert limited.status_code == 429 and limited.retry_after == 7
    assert set(limited.body) == {"message", "retryAfter"}
    clock.advance(7)
    assert claims.instant_claim(rt, recipe_id=recipe.id, user_id=user.id).ok
    assert [e.outcome for e in _events(rt)] == ["claimed", "rate_limited", "claimed"]
    assert auth.get_user(rt, user_id=user.id).credits == 8


def test_refused_claims_do_not_start_the_cooldown(db_url, make_runtime):
    rt = make_runtime(db_url, instant_cooldown_s=10)
    auth.ensure_system_user(rt)
    recipe = _recipe(rt, cost=1)
    user, _ = auth.create_user(rt, "fay", credits=10)
    assert claims.instant_claim(rt, recipe_id=recipe.id, user_id=user.id).status_code == 404
    add_pool_items(rt, recipe.id, 1)
    assert claims.instant_claim(rt, recipe_id=recipe.id, user_id=user.id).ok


def test_staff_claim_for_a_test_user_charges_the_target(rt):
    recipe = _recipe(rt, cost=2)
    add_pool_items(rt, recipe.id, 1)
    staff, _ = auth.create_user(rt, "pm", role="product", credits=0)
    target, _ = auth.create_user(rt, "tester", credits=5, is_test=True)
    result = claims.instant_claim(rt, recipe_id=recipe.id, user_id=target.id, actor_id=staff.id)
    assert result.ok and result.generation["userId"] == target.id
    assert auth.get_user(rt, user_id=target.id).credits == 3
    assert auth.get_user(rt, user_id=staff.id).credits == 0


def test_idempotency_key_replays_the_first_response(rt):
    recipe = _recipe(rt, cost=1)
    add_pool_items(rt, recipe.id, 3)
    user, _ = auth.create_user(rt, "gus", credits=10)
    first = claims.instant_claim(rt, recipe_id=recipe.id, user_id=user.id, idempotency_key="abc-1")
    again = claims.instant_claim(rt, recipe_id=recipe.id, user_id=user.id, idempotency_key="abc-1")
    assert again.replayed and again.response() == first.response()
    assert auth.get_user(rt, user_id=user.id).credits == 9
    assert recipes.available_count(rt, recipe.id) == 2
    other = claims.instant_claim(rt, recipe_id=recipe.id, user_id=user.id, idempotency_key="abc-2")
    assert other.ok and other.generation["id"] != first.generation["id"]


@pytest.mark.postgres
def test_locked_pool_row_is_a_race_not_an_empty_pool(pg_rt):
    """With SKIP LOCKED, a pool whose rows are all being claimed answers 409, not 404."""
    rt = pg_rt
    recipe = _recipe(rt, cost=1)
    [item] = add_pool_items(rt, recipe.id, 1)
    user, _ = auth.create_user(rt, "hal", credits=5)
    with rt.store.begin() as s:
        s.query(Generation).filter_by(id=item).with_for_update().one()  # another claim in flight
        result = claims.instant_claim(rt, recipe_id=recipe.id, user_id=user.id)
    assert result.response() == (409, {"message": "No instant generation available (race condition)",
                                       "fallbackToModal": True})
    assert auth.get_user(rt, user_id=user.id).credits == 5
    assert [e.outcome for e in _events(rt)] == ["race"]


def _hammer(rt, recipe_id: int, user_ids: list[str], attempts: int, threads: int):
    results: list[claims.ClaimResult] = []
    lock = threading.Lock()
    todo = iter(range(attempts))
    rng = random.Random(7)
    start = threading.Barrier(threads)

    def worker():
        start.wait()
        while True:
            with lock:
                if next(todo, None) is None:
                    return
                uid = rng.choice(user_ids)
            r = claims.instant_claim(rt, recipe_id=recipe_id, user_id=uid)
            with lock:
                results.append((uid, r))

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(120)
    return results


@pytest.mark.postgres
@pytest.mark.parametrize("credits_each, expected", [(6, 50), (2, 40)])
def test_parallel_claims_keep_every_invariant(pg_rt, credits_each, expected):
    """24 threads with their own connections claim from a pool of 50; users have limited credits."""
    rt = pg_rt
    recipe = _recipe(rt, cost=1)
    pool_ids = set(add_pool_items(rt, recipe.id, 50))
    users = [auth.create_user(rt, f"par{i}", credits=credits_each)[0].id for i in range(20)]
    attempts = 400

    results = _hammer(rt, recipe.id, users, attempts, threads=24)

    assert len(results) == attempts
    won = [(uid, r.generation["id"]) for uid, r in results if r.ok]
    assert len(won) == expected  # min(pool, affordable)
    claimed_ids = [gid for _, gid in won]
    assert len(set(claimed_ids)) == len(claimed_ids), "a generation was claimed twice"
    assert set(claimed_ids) <= pool_ids
    assert {r.outcome for _, r in results} <= {claims.Outcome.CLAIMED, claims.Outcome.NO_BACKLOG,
                                               claims.Outcome.RACE, claims.Outcome.INSUFFICIENT_CREDITS}
    for _, r in results:
        if r.outcome in (claims.Outcome.NO_BACKLOG, claims.Outcome.RACE):
            assert r.body["fallbackToModal"] is True
    wins_by_user = Counter(uid for uid, _ in won)
    with rt.store.begin() as s:
        assert accounts.ledger_mismatches(s) == []
        for uid in users:
            assert accounts.get_user(s, uid).credits == credits_each - wins_by_user[uid] >= 0
        owners = {g.id: g.user_id for g in s.query(Generation).filter(Generation.id.in_(pool_ids))}
        charges = Counter(t.generation_id for t in s.query(CreditTransaction).filter_by(kind="instant_claim"))
        events = Counter(e.outcome for e in s.query(ClaimEvent))
        usage = catalog.get_recipe(s, recipe.id).usage_count
    for uid, gid in won:
        assert owners[gid] == uid
    assert sum(1 for o in owners.values() if o == SYSTEM_BACKLOG_USER_ID) == 50 - expected
    assert set(charges.values()) == {1} and set(charges) == set(claimed_ids)
    assert sum(events.values()) == attempts and events["claimed"] == expected
    assert Counter(r.outcome.event for _, r in results) == events
    assert usage == expected


@pytest.mark.postgres
def test_racing_duplicates_with_one_idempotency_key_claim_once(pg_rt):
    rt = pg_rt
    recipe = _recipe(rt, cost=1)
    add_pool_items(rt, recipe.id, 10)
    user, _ = auth.create_user(rt, "dup", credits=10)
    results = []
    barrier = threading.Barrier(12)

    def go():
        barrier.wait()
        results.append(claims.instant_claim(rt, recipe_id=recipe.id, user_id=user.id, idempotency_key="same"))

    threads = [threading.Thread(target=go) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 12
    assert {r.response()[0] for r in results} == {200}
    assert len({r.generation["id"] for r in results}) == 1
    assert sum(not r.replayed for r in results) == 1
    assert auth.get_user(rt, user_id=user.id).credits == 9
    assert recipes.available_count(rt, recipe.id) == 9


def test_claim_events_keep_latency_and_time(db_url, make_runtime):
    clock = ManualClock()
    rt = make_runtime(db_url, clock=clock)
    auth.ensure_system_user(rt)
    recipe = _recipe(rt)
    user, _ = auth.create_user(rt, "ivy", credits=1)
    claims.instant_claim(rt, recipe_id=recipe.id, user_id=user.id)
    [event] = _events(rt)
    assert event.created_at == clock.now() and event.created_at.utcoffset() == timedelta(0)


@pytest.mark.postgres
def test_two_keys_of_one_user_in_flight_at_once_do_not_deadlock(pg_rt):
    """Two claims by one user with different Idempotency-Keys, each past its key insert when the
    other takes the user's row. The key row's foreign key holds a KEY SHARE lock on the user; a
    ``FOR UPDATE`` of the user (which conflicts with KEY SHARE) made each wait for the other: a
    deadlock, answered 500 under load. ``FOR NO KEY UPDATE`` does not conflict with KEY SHARE."""
    from delula.storage import pool

    rt = pg_rt
    recipe = _recipe(rt, cost=1)
    add_pool_items(rt, recipe.id, 2)
    user, _ = auth.create_user(rt, "twokeys", credits=5)
    now = rt.now()
    done: dict[str, object] = {}
    patch = {"isInstant": True, "claimedAt": now.isoformat()}

    with rt.store.begin() as a, rt.store.begin() as b:
        assert pool.reserve_key(a, user.id, "key-a", now) and pool.reserve_key(b, user.id, "key-b", now)

        def claim_b():
            try:
                done["b"] = pool.claim(b, recipe_id=recipe.id, user_id=user.id, now=now, meta_patch=patch,
                                       cooldown_s=0, max_age_h=rt.settings.max_item_age_h).outcome
                b.commit()
            except Exception as e:  # a deadlock surfaces here (or in the other claim)
                done["b"] = e

        other = threading.Thread(target=claim_b)
        other.start()
        other.join(1.0)  # with FOR UPDATE, b now waits for a's KEY SHARE on the user
        done["a"] = pool.claim(a, recipe_id=recipe.id, user_id=user.id, now=now, meta_patch=patch,
                               cooldown_s=0, max_age_h=rt.settings.max_item_age_h).outcome
        a.commit()
        other.join(30)
    assert done == {"a": "claimed", "b": "claimed"}
    assert auth.get_user(rt, user_id=user.id).credits == 3
    with rt.store.begin() as s:
        assert accounts.ledger_mismatches(s) == []


# --- the pool head (PostgreSQL, migration 0008) -----------------------------------------------------

def _ready(rt, recipe_id: int, created: list, **row) -> list[int]:
    """Pool items created at the given times (in that order), inserted ready; their ids."""
    rows = [pool_row(recipe_id, rt.now(), created_at=at, **row) for at in created]
    with rt.store.begin() as s:
        jobs.add_generations(s, rows, rt.now())
        mine = {g.created_at: g.id for g in s.query(Generation).filter(Generation.recipe_id == recipe_id,
                                                                     Generation.created_at.in_(created))}
    return [mine[at] for at in created]


def _head(rt, recipe_id: int):
    with rt.store.begin() as s:
        return s.query(Recipe.pool_head).filter(Recipe.id == recipe_id).scalar()


def _below_head(rt, recipe_id: int) -> int:
    """Claimable items the claim's scan would not see: must always be none."""
    with rt.store.begin() as s:
        return s.execute(text("""
            SELECT count(*) FROM generations g JOIN recipes r ON r.id = g.recipe_id
             WHERE g.recipe_id = :r AND g.user_id = 'system_backlog' AND g.status = 'completed'
               AND g.created_at < r.pool_head"""), {"r": recipe_id}).scalar()


def _claimed_id(rt, recipe_id: int, user_id: str):
    result = claims.instant_claim(rt, recipe_id=recipe_id, user_id=user_id)
    return result.body["generation"]["id"] if result.ok else str(result.status_code)


@pytest.mark.postgres
def test_the_claim_scans_from_the_pool_head_and_arrivals_below_it_lower_it(pg_rt):
    """Claims raise the head to the oldest item left; an item entering the pool below it (a
    backlog job that completes out of order, rows inserted ready) lowers it, so the order stays
    strictly oldest-first."""
    rt = pg_rt
    recipe = _recipe(rt, cost=1)
    user, _ = auth.create_user(rt, "header", credits=100)
    t0 = rt.now() - timedelta(hours=1)
    items = _ready(rt, recipe.id, [t0 + timedelta(minutes=i) for i in range(5)])
    assert _head(rt, recipe.id) is None                                  # unknown: the first claim scans all

    assert [_claimed_id(rt, recipe.id, user.id) for _ in range(2)] == items[:2]
    assert _head(rt, recipe.id) == t0 + timedelta(minutes=2)           # the oldest item left

    # a backlog job created long before the head completes now
    [late] = _ready(rt, recipe.id, [t0 - timedelta(minutes=10)], **{"status": "processing", "attempts": 1})
    assert _head(rt, recipe.id) == t0 + timedelta(minutes=2)           # not in the pool yet
    with rt.store.begin() as s:
        assert jobs.complete(s, late, 1, asset_url="/sim/fal/files/late/video.svg", thumbnail_url=None,
                             meta_patch={}, now=rt.now())
    assert _head(rt, recipe.id) == t0 - timedelta(minutes=10)
    assert _claimed_id(rt, recipe.id, user.id) == late

    [old] = _ready(rt, recipe.id, [t0 - timedelta(days=1)])             # inserted ready, older still
    assert _head(rt, recipe.id) == t0 - timedelta(days=1)
    assert [_claimed_id(rt, recipe.id, user.id) for _ in range(5)] == [old, *items[2:], "404"]
    assert _below_head(rt, recipe.id) == 0


class _RolledBack(Exception):
    pass


USAGE_SLOTS = 64   # a claim adds its use to the row of its server process: 1 + pid mod 64


def _two_sessions(rt):
    """Two psycopg connections to ``rt``'s database whose claims add to different usage rows."""
    import psycopg

    url = rt.store.engine.url.render_as_string(hide_password=False).replace("+psycopg", "")
    first = psycopg.connect(url)
    second = psycopg.connect(url, autocommit=True)
    while second.info.backend_pid % USAGE_SLOTS == first.info.backend_pid % USAGE_SLOTS:
        second.close()
        second = psycopg.connect(url, autocommit=True)
    return first, second


def _raw_claim(conn, recipe_id: int, user_id: str):
    """The claim function called as the API calls it; the item's id, or the outcome."""
    outcome, items = conn.execute(
        "SELECT o_outcome, o_generations FROM delula_instant_claim(%s, %s, %s, '{\"isInstant\": true}'::jsonb, "
        "now(), 0, NULL, now() - interval '72 hours', NULL, false, 1, false)", (recipe_id, user_id, user_id)).fetchone()
    return items[0]["id"] if outcome == "claimed" else outcome


def _usage_rows(rt, recipe_id: int) -> list[int]:
    with rt.store.begin() as s:
        return list(s.execute(text("SELECT n FROM recipe_usage WHERE recipe_id = :r ORDER BY slot"),
                              {"r": recipe_id}).scalars())


@pytest.mark.postgres
def test_a_claim_that_rolls_back_leaves_its_item_above_the_head(pg_rt):
    """A claim in flight holds the oldest item, the recipe's row and its usage row; a claim of
    the recipe in another session takes the next item without waiting for it (version 8: its
    use in its own row, the head left where it is while the recipe's row is held). The first
    rolls back: the head is below its item, which is the next claimed, and only the second's
    use is counted."""
    rt = pg_rt
    recipe = _recipe(rt, cost=1)
    user, _ = auth.create_user(rt, "roller", credits=100)
    other_user, _ = auth.create_user(rt, "roller2", credits=100)
    t0 = rt.now() - timedelta(hours=1)
    a, b, c = _ready(rt, recipe.id, [t0 + timedelta(minutes=i) for i in range(3)])
    first, second = _two_sessions(rt)
    with first, second:
        second.execute("SET lock_timeout = '5s'")   # a wait would fail the claim, not hang the test
        assert _raw_claim(first, recipe.id, user.id) == a       # in a transaction left open
        assert _raw_claim(second, recipe.id, other_user.id) == b
        first.rollback()
    head = _head(rt, recipe.id)                            # unknown, or a counted as still in the pool
    assert head is None or head <= t0
    assert _below_head(rt, recipe.id) == 0
    assert _usage_rows(rt, recipe.id) == [1]
    assert [_claimed_id(rt, recipe.id, user.id) for _ in range(3)] == [a, c, "404"]
    assert auth.get_user(rt, user_id=user.id).credits == 98


@pytest.mark.postgres
def test_claims_of_one_recipe_go_on_while_another_holds_its_rows(pg_rt):
    """A claim in flight holds the recipe's row and its usage row; three more claims of the
    recipe in another session finish meanwhile, adding their use to that session's own usage
    row. When the first commits, the recipe's usage is the sum of both rows."""
    rt = pg_rt
    recipe = _recipe(rt, cost=1)
    users = [auth.create_user(rt, f"busy{i}", credits=10)[0] for i in range(2)]
    t0 = rt.now() - timedelta(hours=1)
    items = _ready(rt, recipe.id, [t0 + timedelta(minutes=i) for i in range(5)])
    first, second = _two_sessions(rt)
    with first, second:
        second.execute("SET lock_timeout = '5s'")
        assert _raw_claim(second, recipe.id, users[1].id) == items[0]   # both sessions' rows exist
        assert _raw_claim(first, recipe.id, users[0].id) == items[1]    # in a transaction left open
        assert [_raw_claim(second, recipe.id, users[1].id) for _ in range(3)] == items[2:5]
        first.commit()
    assert sorted(_usage_rows(rt, recipe.id)) == [1, 4]
    with rt.store.begin() as s:
        assert catalog.get_recipe(s, recipe.id).usage_count == 5
        assert accounts.ledger_mismatches(s) == []
    assert _below_head(rt, recipe.id) == 0


@pytest.mark.postgres
def test_parallel_claims_of_one_recipe_count_every_use_in_few_rows(pg_rt):
    """Eight threads claim 400 items of one recipe: every item once, the usage exact over the
    sessions' usage rows, the head never above an item, the ledger reconciled."""
    rt = pg_rt
    recipe = _recipe(rt, cost=1)
    users = [auth.create_user(rt, f"hot{i}", credits=1_000)[0] for i in range(8)]
    t0 = rt.now() - timedelta(hours=1)
    items = _ready(rt, recipe.id, [t0 + timedelta(seconds=i) for i in range(400)])
    start = threading.Barrier(8)
    got: list = []
    lock = threading.Lock()

    def claimer(user_id):
        start.wait()
        mine = []
        while (gid := _claimed_id(rt, recipe.id, user_id)) != "404":
            if isinstance(gid, int):      # else the last items are held by others' claims: again
                mine.append(gid)
        with lock:
            got.extend(mine)

    threads = [threading.Thread(target=claimer, args=(u.id,)) for u in users]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    assert sorted(got) == items
    rows = _usage_rows(rt, recipe.id)
    assert sum(rows) == 400 and 1 <= len(rows) <= USAGE_SLOTS
    with rt.store.begin() as s:
        assert catalog.get_recipe(s, recipe.id).usage_count == 400
        assert accounts.ledger_mismatches(s) == []
    assert _below_head(rt, recipe.id) == 0


def test_migration_0020_goes_down_and_up(rt):
    """Down to 0019: the usage rows fold into recipes.usage_count and the claim function is
    version 7 again (PostgreSQL); up again: version 8, and usage goes on from the folded count."""
    from delula import storage
    from tests.test_freshness import _migrate_down

    recipe = _recipe(rt, cost=1)
    user, _ = auth.create_user(rt, "folder", credits=10)
    add_pool_items(rt, recipe.id, 3)
    assert [claims.instant_claim(rt, recipe_id=recipe.id, user_id=user.id).ok for _ in range(2)] == [True, True]
    head = storage.current_revision(rt.store)

    _migrate_down(rt.store, "0019")
    with rt.store.begin() as s:
        assert s.execute(text("SELECT usage_count FROM recipes WHERE id = :r"), {"r": recipe.id}).scalar() == 2
        if rt.store.is_postgres:
            assert "recipe_usage" not in s.execute(text("SELECT prosrc FROM pg_proc "
                                                        "WHERE proname = 'delula_instant_claim'")).scalar()
    storage.upgrade(rt.store)
    assert storage.current_revision(rt.store) == head
    assert claims.instant_claim(rt, recipe_id=recipe.id, user_id=user.id).ok
    with rt.store.begin() as s:
        assert catalog.get_recipe(s, recipe.id).usage_count == 3
        assert s.execute(text("SELECT usage_count FROM recipes WHERE id = :r"), {"r": recipe.id}).scalar() == 2


@pytest.mark.postgres
def test_migration_0021_goes_down_and_up(pg_rt):
    """Down to 0020: version 8 of the claim function, which inserts misses on every call; up:
    version 9, which inserts them only when there are some. A claim's events are the same under
    both: one per item handed out, one per item missed."""
    from delula import storage
    from tests.test_freshness import _migrate_down

    rt = pg_rt
    recipe = _recipe(rt, cost=1)
    user, _ = auth.create_user(rt, "nine", credits=100)
    add_pool_items(rt, recipe.id, 6)

    def events_of(count: int) -> Counter:
        with rt.store.begin() as s:
            before = Counter(dict(s.execute(text("SELECT outcome, count(*) FROM claim_events GROUP BY outcome")).all()))
        claims.instant_claim(rt, recipe_id=recipe.id, user_id=user.id, ask=claims.Ask(count=count))
        with rt.store.begin() as s:
            after = Counter(dict(s.execute(text("SELECT outcome, count(*) FROM claim_events GROUP BY outcome")).all()))
        return after - before

    def function_source() -> str:
        with rt.store.begin() as s:
            return s.execute(text("SELECT prosrc FROM pg_proc WHERE proname = 'delula_instant_claim'")).scalar()

    head = storage.current_revision(rt.store)
    _migrate_down(rt.store, "0020")
    assert "IF v_missed > 0" not in function_source()
    assert events_of(3) == Counter(claimed=3)
    storage.upgrade(rt.store)
    assert storage.current_revision(rt.store) == head and "IF v_missed > 0" in function_source()
    assert events_of(3) == Counter(claimed=3)
    assert events_of(1) == Counter(no_backlog=1)
    add_pool_items(rt, recipe.id, 2)
    assert events_of(3) == Counter(claimed=2, no_backlog=1)
    with rt.store.begin() as s:
        assert accounts.ledger_mismatches(s) == []
    assert auth.get_user(rt, user_id=user.id).credits == 100 - 8


@pytest.mark.postgres
def test_the_head_never_hides_an_item_under_parallel_claims_and_arrivals(pg_rt):
    """Six connections claim from one recipe while another completes backlog jobs created long
    ago (out of order) and inserts ready rows below the head, and a seventh checks, in snapshot
    after snapshot, that no claimable item is below the head. At the end every item was claimed
    exactly once and the pool is empty."""
    rt = pg_rt
    recipe = _recipe(rt, cost=1)
    users = [auth.create_user(rt, f"hp{i}", credits=10_000)[0] for i in range(6)]
    t0 = rt.now() - timedelta(hours=2)
    rng = random.Random(21)
    ready = _ready(rt, recipe.id, [t0 + timedelta(seconds=i) for i in range(300)])
    pending = _ready(rt, recipe.id, [t0 + timedelta(seconds=rng.uniform(-3600, 600), microseconds=i)
                                     for i in range(120)], status="processing", attempts=1)
    stop, claimed, violations, errors = threading.Event(), [], [], []
    lock = threading.Lock()

    def claimer(user_id):
        while not stop.is_set():
            got = _claimed_id(rt, recipe.id, user_id)
            if isinstance(got, str):   # 404 or 409 while the pool is empty or all held
                continue
            with lock:
                claimed.append(got)

    def arrivals():
        try:
            late = list(pending)
            rng.shuffle(late)
            for n, gid in enumerate(late):
                with rt.store.begin() as s:
                    assert jobs.complete(s, gid, 1, asset_url="/sim/fal/files/p/video.svg", thumbnail_url=None,
                                         meta_patch={}, now=rt.now())
                if n % 20 == 0:
                    inserted.extend(_ready(rt, recipe.id, [t0 - timedelta(hours=1, microseconds=n + k)
                                                           for k in range(5)]))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    def checker():
        while not stop.is_set():
            n = _below_head(rt, recipe.id)
            if n:
                violations.append(n)

    inserted: list[int] = []
    workers = [threading.Thread(target=claimer, args=(u.id,)) for u in users]
    workers += [threading.Thread(target=checker)]
    feeder = threading.Thread(target=arrivals)
    for t in [*workers, feeder]:
        t.start()
    feeder.join(120)
    deadline = time.monotonic() + 60
    while recipes.available_count(rt, recipe.id) and time.monotonic() < deadline:
        time.sleep(0.05)   # the claimers drain the pool (an item hidden below the head would stay)
    stop.set()
    for t in workers:
        t.join(60)
    assert errors == [] and violations == []
    everything = set(ready) | set(pending) | set(inserted)
    assert len(claimed) == len(set(claimed)) and set(claimed) == everything
    assert recipes.available_count(rt, recipe.id) == 0 and _below_head(rt, recipe.id) == 0
    with rt.store.begin() as s:
        assert accounts.ledger_mismatches(s) == []


# --- every outcome, table-driven, through the SQLite steps and the PostgreSQL function ---------

def _case_claimed(rt, recipe, user):
    add_pool_items(rt, recipe.id, 1)


def _case_no_backlog(rt, recipe, user):
    pass


def _case_insufficient(rt, recipe, user):
    add_pool_items(rt, recipe.id, 1)
    auth.create_user(rt, "qa_poor", credits=1, with_token=False)


def _case_rate_limited(rt, recipe, user):
    add_pool_items(rt, recipe.id, 2)
    assert claims.instant_claim(rt, recipe_id=recipe.id, user_id=user.id).ok


OUTCOMES = [
    # (case, set-up, recipe override, target, outcome, status, event, fields of the result)
    ("claimed", _case_claimed, None, None, claims.Outcome.CLAIMED, 200, "claimed",
     {"credits_charged": 2, "credits_remaining": 8}),
    ("no backlog", _case_no_backlog, None, None, claims.Outcome.NO_BACKLOG, 404, "no_backlog", {}),
    ("insufficient credits", _case_insufficient, None, "qa_poor", claims.Outcome.INSUFFICIENT_CREDITS, 400,
     "insufficient_credits", {"required": 2, "available": 1}),
    ("rate limited", _case_rate_limited, None, None, claims.Outcome.RATE_LIMITED, 429, "rate_limited",
     {"retry_after": 10}),
    ("unknown recipe", _case_no_backlog, 999_999, None, claims.Outcome.RECIPE_NOT_FOUND, 404, "invalid", {}),
    ("unknown user", _case_claimed, None, "u_nobody", claims.Outcome.INVALID, 400, "invalid",
     {"errors": {"targetUserId": "no such user"}}),
    ("the system user", _case_claimed, None, SYSTEM_BACKLOG_USER_ID, claims.Outcome.INVALID, 400, "invalid",
     {"errors": {"targetUserId": "must not be the system user"}}),
]


@pytest.mark.parametrize("by_token", [False, True], ids=["direct", "token"])
@pytest.mark.parametrize("case,setup,recipe_id,target,outcome,status,event,fields", OUTCOMES,
                         ids=[c[0] for c in OUTCOMES])
def test_every_outcome_on_both_databases(db_url, make_runtime, by_token, case, setup, recipe_id, target,
                                         outcome, status, event, fields):
    """One table for both claim paths: the SQLite steps and the PostgreSQL function (``db_url``
    runs each case on both), called directly and through the token's one-statement claim."""
    rt = make_runtime(db_url, instant_cooldown_s=10)
    auth.ensure_system_user(rt)
    recipe = _recipe(rt, cost=2)
    _, token = auth.create_user(rt, "qa_staff", role="ops", credits=0)
    user, _ = auth.create_user(rt, "qa_user", credits=10, with_token=False)
    setup(rt, recipe, user)
    if target == "qa_poor":
        target = auth.get_user(rt, username="qa_poor").id
    target = target or user.id
    before = len(_events(rt))
    if by_token:
        caller, result = claims.instant_claim_with_token(rt, token, recipe_id=recipe_id or recipe.id,
                                                         target_user_id=target)
        assert caller is not None and caller.username == "qa_staff"
    else:
        result = claims.instant_claim(rt, recipe_id=recipe_id or recipe.id, user_id=target)
    assert result.outcome is outcome
    assert result.status_code == status
    for name, value in fields.items():
        assert getattr(result, name) == value, name
    if outcome is claims.Outcome.CLAIMED:
        assert result.generation["userId"] == target and result.generation["metadata"]["isInstant"] is True
    events = _events(rt)[before:]
    assert [e.outcome for e in events] == [event]
    with rt.store.begin() as s:
        assert accounts.ledger_mismatches(s) == []


@pytest.mark.parametrize("outcome", list(claims.Outcome))
def test_a_replayed_result_is_the_result_it_stored(rt, outcome):
    """The idempotency row keeps the outcome; its body gives back every field of the result."""
    results = {
        claims.Outcome.CLAIMED: claims.ClaimResult(outcome, generation={"id": 1}, credits_charged=2,
                                                   credits_remaining=3),
        claims.Outcome.INSUFFICIENT_CREDITS: claims.ClaimResult(outcome, required=5, available=1),
        claims.Outcome.RATE_LIMITED: claims.ClaimResult(outcome, retry_after=7),
        claims.Outcome.INVALID: claims.ClaimResult(outcome, errors={"targetUserId": "no such user"}),
    }
    result = results.get(outcome, claims.ClaimResult(outcome))
    replayed = claims._replayed(outcome, result.body)
    assert replayed.replayed and replayed.response() == result.response()
    assert {**vars(replayed), "replayed": False} == vars(result)
