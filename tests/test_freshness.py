"""Item freshness: a pool item completed longer than DELULA_MAX_ITEM_AGE_H ago is never handed
out (the claim function's version 6, SQLite's steps), maintenance marks it ``expired`` — kept,
never deleted, counted nowhere as ready — and migration 0014 goes up and down."""
from __future__ import annotations

import json
import random
import threading
from datetime import timedelta

import pytest
from sqlalchemy import text

from delula import auth, backlog, claims, housekeeping, queue_status, recipes
from delula.config import ConfigError, Settings
from delula.storage import SYSTEM_BACKLOG_USER_ID, JobStatus, accounts, jobs, stats
from delula.storage.models import Generation
from tests.support.factories import pool_row

AGE_H = 72.0


def _recipe(rt, cost=1):
    return recipes.create_recipe(rt, name=f"Fresh {random.random()}", credit_cost=cost)


def _items(rt, recipe_id: int, ages_h: list[float | None], *, created_h: float | None = None) -> list[int]:
    """Pool items completed ``ages_h`` hours ago (``None``: no completion time), in that order
    of creation (oldest first, ``created_h`` hours ago and a second apart, else each created a
    minute before its completion); their ids."""
    now = rt.now()
    rows = []
    for i, age in enumerate(ages_h):
        done = None if age is None else now - timedelta(hours=age)
        if created_h is not None:
            made = now - timedelta(hours=created_h) + timedelta(seconds=i)
        else:
            made = (done or now) - timedelta(minutes=1)
        rows.append(pool_row(recipe_id, now, created_at=made, completed_at=done,
                             asset_url=f"/sim/fal/files/fresh-{recipe_id}-{i}/video.svg"))
    with rt.store.begin() as s:
        jobs.add_generations(s, rows, now)
        by_url = {g.asset_url: g.id for g in s.query(Generation).filter(Generation.recipe_id == recipe_id)}
    return [by_url[r["asset_url"]] for r in rows]


def _status(rt, ids) -> dict[int, tuple[str, str]]:
    with rt.store.begin() as s:
        return {g.id: (g.status, g.user_id) for g in s.query(Generation).filter(Generation.id.in_(list(ids)))}


def _claim(rt, recipe_id: int, user_id: str):
    r = claims.instant_claim(rt, recipe_id=recipe_id, user_id=user_id)
    return r.generation["id"] if r.ok else r.outcome.value


# --- the setting --------------------------------------------------------------------------------

def test_the_age_bound_is_a_positive_number_of_hours_72_by_default():
    assert Settings.from_env({}).max_item_age_h == 72
    assert Settings.from_env({"DELULA_MAX_ITEM_AGE_H": "1.5"}).max_item_age_h == 1.5
    assert Settings.from_env({"DELULA_MAX_ITEM_AGE_H": " 168 "}).max_item_age_h == 168
    for bad in ("0", "-3", "nan", "inf", "soon", "1e9"):
        with pytest.raises(ConfigError, match="DELULA_MAX_ITEM_AGE_H"):
            Settings.from_env({"DELULA_MAX_ITEM_AGE_H": bad})
    with pytest.raises(ConfigError, match="DELULA_MAX_ITEM_AGE_H"):
        Settings.from_env({}).replace(max_item_age_h=0)


# --- the claim ----------------------------------------------------------------------------------

@pytest.mark.parametrize("by_token", [False, True], ids=["direct", "token"])
def test_an_item_older_than_the_bound_is_never_claimed_even_before_maintenance(rt, by_token):
    """The oldest items are stale (one has no completion time and was created long ago): the
    claim skips them and takes the fresh ones oldest-first; then the pool holds only stale items,
    which is an empty pool (404), not a race."""
    recipe = _recipe(rt)
    stale_a, stale_b, fresh_a, unfinished, fresh_b = _items(rt, recipe.id, [100, AGE_H + 0.01, AGE_H - 0.01,
                                                                             None, 1])
    user, token = auth.create_user(rt, "fresh", credits=10)

    def claim():
        if not by_token:
            return _claim(rt, recipe.id, user.id)
        _, r = claims.instant_claim_with_token(rt, token, recipe_id=recipe.id)
        return r.generation["id"] if r.ok else r.outcome.value

    # the item without a completion time is aged from its creation (a minute ago): fresh, and newest
    assert [claim(), claim(), claim(), claim()] == [fresh_a, fresh_b, unfinished, "no_backlog"]
    assert _status(rt, [stale_a, stale_b]) == {stale_a: ("completed", SYSTEM_BACKLOG_USER_ID),
                                               stale_b: ("completed", SYSTEM_BACKLOG_USER_ID)}
    assert auth.get_user(rt, user_id=user.id).credits == 7


def test_age_counts_from_completion_not_creation(rt):
    """A job created long ago that completed recently is fresh; one without a completion time
    created beyond the bound is stale."""
    recipe = _recipe(rt)
    [late] = _items(rt, recipe.id, [0.5], created_h=AGE_H * 3)
    [unknown] = _items(rt, recipe.id, [None], created_h=AGE_H + 1)
    user, _ = auth.create_user(rt, "latecomer", credits=10)
    assert [_claim(rt, recipe.id, user.id), _claim(rt, recipe.id, user.id)] == [late, "no_backlog"]
    assert _status(rt, [unknown])[unknown] == ("completed", SYSTEM_BACKLOG_USER_ID)
    assert backlog.maintain(rt)["expired"] == 1
    assert _status(rt, [unknown])[unknown] == ("expired", SYSTEM_BACKLOG_USER_ID)


def test_the_bound_is_the_setting(db_url, make_runtime):
    rt = make_runtime(db_url, max_item_age_h=2)
    auth.ensure_system_user(rt)
    recipe = _recipe(rt)
    three_h, one_h = _items(rt, recipe.id, [3, 1])
    user, _ = auth.create_user(rt, "short", credits=10)
    assert [_claim(rt, recipe.id, user.id), _claim(rt, recipe.id, user.id)] == [one_h, "no_backlog"]
    assert backlog.maintain(rt)["expired"] == 1 and _status(rt, [three_h])[three_h][0] == "expired"


# --- maintenance ------------------------------------------------------------------------------

def test_maintenance_marks_stale_pool_items_expired_keeps_them_and_counts_them_nowhere(rt):
    recipe = _recipe(rt)
    stale = _items(rt, recipe.id, [AGE_H + 5, AGE_H + 1, AGE_H + 0.5])
    fresh = _items(rt, recipe.id, [2, 1])
    user, _ = auth.create_user(rt, "owner", credits=10)
    [newer] = _items(rt, recipe.id, [0.5])
    assert _claim(rt, recipe.id, user.id) == fresh[0]      # the oldest fresh item
    with rt.store.begin() as s:                            # an item a user owns is never expired, however old
        s.query(Generation).filter(Generation.id == fresh[0]).update(
            {Generation.completed_at: rt.now() - timedelta(hours=AGE_H * 2)})

    result = backlog.maintain(rt)

    assert result["expired"] == 3
    after = _status(rt, [*stale, *fresh, newer])
    assert {after[i] for i in stale} == {("expired", SYSTEM_BACKLOG_USER_ID)}
    assert after[fresh[0]] == ("completed", user.id)
    assert after[fresh[1]] == after[newer] == ("completed", SYSTEM_BACKLOG_USER_ID)
    row = next(r for r in result["recipes"] if r["recipeId"] == recipe.id)
    assert row["completed"] == 2                            # counted after expiring
    assert next(r for r in backlog.status(rt) if r["recipeId"] == recipe.id)["completed"] == 2
    assert recipes.available_count(rt, recipe.id) == 2
    assert next(r for r in recipes.list_with_availability(rt) if r["id"] == recipe.id)["instantAvailable"] == 2
    queue = queue_status.status(rt)
    assert queue["counts"][JobStatus.EXPIRED] == 3 and queue["claimable"]["byRecipe"][str(recipe.id)] == 2
    with rt.store.begin() as s:
        assert stats.backlog_counts(s)[recipe.id] == {"completed": 2, "inFlight": result["created"].get(recipe.id, 0)}
        assert stats.finished_since(s, rt.now() - timedelta(hours=1)).get(JobStatus.EXPIRED) == 3

    # kept: another pass, and housekeeping, delete none of them, and expire nothing twice
    assert backlog.maintain(rt)["expired"] == 0
    housekeeping.prune(rt)
    assert {_status(rt, stale)[i] for i in stale} == {("expired", SYSTEM_BACKLOG_USER_ID)}
    assert [_claim(rt, recipe.id, user.id) for _ in range(3)] == [fresh[1], newer, "no_backlog"]


def test_an_expired_item_shows_with_its_status(world):
    """The queue page's filter and counts, the API's generation body (its enum is the statuses)."""
    from pages import queue as queue_page

    from delula.api.bodies import Generation as GenerationBody
    from delula.generations import generation_json

    rt = world[0]
    recipe = _recipe(rt)
    [old] = _items(rt, recipe.id, [AGE_H + 1])
    backlog.maintain(rt)
    assert queue_page.parse_filters("expired")["statuses"] == ["expired"]
    assert queue_page.status_counts(queue_status.status(rt))["expired"] == 1
    assert "expired" in queue_page.STATUS_HINTS
    with rt.store.begin() as s:
        gen = jobs.get_generation(s, old)
        body = generation_json(gen)
    assert body["status"] == "expired"
    GenerationBody.model_validate_json(json.dumps(body))   # as the API's schema reads it
    assert [g.id for g in _list_jobs(rt, ("expired",))] == [old]


def _list_jobs(rt, statuses):
    with rt.store.begin() as s:
        return jobs.list_jobs(s, statuses=statuses)


# --- under parallel claims (PostgreSQL) -----------------------------------------------------------

@pytest.mark.postgres
def test_parallel_claims_never_hand_out_a_stale_item(pg_rt):
    """Twelve threads with their own connections claim from a pool where stale and fresh items
    alternate in the claim's order (the stale ones not yet marked), then maintenance passes run
    beside them from half-way: every fresh item is claimed exactly once, no stale one ever, and at the end the
    stale ones are expired, still in the table."""
    rt = pg_rt
    recipe = _recipe(rt)
    ages = [AGE_H + 1 + i / 10 if i % 2 == 0 else 1 for i in range(120)]
    ids = _items(rt, recipe.id, ages, created_h=AGE_H * 2)   # created in this order, a second apart
    stale = {gid for gid, age in zip(ids, ages) if age > AGE_H}
    fresh = set(ids) - stale
    users = [auth.create_user(rt, f"pf{i}", credits=1000, with_token=False)[0].id for i in range(12)]
    claimed, refused, errors, passes = [], [], [], []
    lock = threading.Lock()
    start = threading.Barrier(len(users) + 1)
    stop = threading.Event()

    def claimer(uid):
        start.wait()
        while not stop.is_set():
            got = _claim(rt, recipe.id, uid)
            with lock:
                (claimed if isinstance(got, int) else refused).append(got)
            if got == "no_backlog":
                return

    def maintainer():
        start.wait()
        while len(claimed) < len(fresh) // 2 and not stop.is_set():   # half the claims see the stale items unmarked
            stop.wait(0.005)
        try:
            while True:   # at least one pass, however quickly the claims end
                passes.append(backlog.maintain(rt)["expired"])
                if stop.is_set():
                    break
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=claimer, args=(u,)) for u in users] + [threading.Thread(target=maintainer)]
    for t in threads:
        t.start()
    for t in threads[:-1]:
        t.join(120)
    stop.set()
    threads[-1].join(60)

    assert errors == [] and sum(passes) == len(stale)
    assert len(claimed) == len(set(claimed)), "an item was claimed twice"
    assert set(claimed) == fresh and not set(claimed) & stale
    assert set(refused) <= {"no_backlog", "race"}
    after = _status(rt, ids)
    assert {after[i] for i in stale} == {("expired", SYSTEM_BACKLOG_USER_ID)}
    assert all(after[i][0] == "completed" and after[i][1] != SYSTEM_BACKLOG_USER_ID for i in fresh)
    with rt.store.begin() as s:
        assert accounts.ledger_mismatches(s) == []


# --- migration 0014 -----------------------------------------------------------------------------

def _migrate_down(store, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    from delula.storage.db import MIGRATIONS

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("path_separator", "os")
    with store.engine.connect() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)
        conn.commit()


def _claim_function(rt) -> tuple[int, str] | None:
    """How many ``delula_instant_claim`` functions exist, and the arguments of one (PostgreSQL)."""
    if not rt.store.is_postgres:
        return None
    with rt.store.begin() as s:
        rows = s.execute(text("SELECT pg_get_function_identity_arguments(oid) FROM pg_proc "
                              "WHERE proname = 'delula_instant_claim'")).scalars().all()
    return len(rows), rows[0]


def test_migration_0014_goes_down_and_up(rt):
    """Down to 0013: expired items become cancelled (never back in the pool), the status check
    refuses 'expired' and the claim function is version 5; up again: version 6, 'expired' allowed."""
    from delula import storage

    recipe = _recipe(rt)
    [old] = _items(rt, recipe.id, [AGE_H + 1])
    [young] = _items(rt, recipe.id, [1])
    backlog.maintain(rt)
    head = storage.current_revision(rt.store)
    assert head >= "0014"   # later migrations go down through it too
    if rt.store.is_postgres:
        count, args = _claim_function(rt)
        assert count == 1 and args.startswith(  # later versions add arguments after these
            "p_recipe_id integer, p_user_id character varying, p_actor_id character varying, p_patch jsonb, p_now "
            "timestamp with time zone, p_cooldown_s double precision, p_request_id character varying, p_fresh_after "
            "timestamp with time zone")

    _migrate_down(rt.store, "0013")

    assert storage.current_revision(rt.store) == "0013"
    assert _status(rt, [old, young]) == {old: ("cancelled", SYSTEM_BACKLOG_USER_ID),
                                         young: ("completed", SYSTEM_BACKLOG_USER_ID)}
    if rt.store.is_postgres:
        count, args = _claim_function(rt)
        assert count == 1 and "p_fresh_after" not in args and args.endswith("p_request_id character varying")
    with pytest.raises(Exception, match="ck_generations_status|CHECK constraint"):
        with rt.store.begin() as s:
            s.execute(text("UPDATE generations SET status = 'expired' WHERE id = :i"), {"i": young})

    storage.upgrade(rt.store)

    assert storage.current_revision(rt.store) == head
    if rt.store.is_postgres:
        assert _claim_function(rt)[0] == 1 and "p_fresh_after" in _claim_function(rt)[1]
    with rt.store.begin() as s:
        s.execute(text("UPDATE generations SET status = 'expired' WHERE id = :i"), {"i": young})
    assert _status(rt, [young])[young] == ("expired", SYSTEM_BACKLOG_USER_ID)
