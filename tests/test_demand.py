"""Recorded demand: instant attempts per minute and recipe, misses included, on both databases."""
from __future__ import annotations

from datetime import timedelta

from delula import auth, backlog, demand, recipes
from delula.clock import ManualClock, isoformat
from delula.storage import pool
from delula.storage.models import Generation


def _claim(rt, recipe_id, user_id) -> str:
    with rt.store.begin() as s:
        return pool.claim(s, recipe_id=recipe_id, user_id=user_id, meta_patch={}, now=rt.now(), cooldown_s=0,
                          max_age_h=rt.settings.max_item_age_h).outcome


def _event(rt, recipe_id, user_id, outcome, at):
    with rt.store.begin() as s:
        pool.record_event(s, user_id=user_id, recipe_id=recipe_id, outcome=outcome, generation_id=None,
                          latency_ms=0.0, now=at)


def test_recorded_demand_includes_misses(db_url, make_runtime):
    clock = ManualClock()
    rt = make_runtime(db_url, clock=clock, min_backlog=1)
    auth.ensure_system_user(rt)
    recipe = recipes.create_recipe(rt, name="Wanted", credit_cost=1, variables=[])
    other = recipes.create_recipe(rt, name="Other", credit_cost=1, variables=[])
    user, _ = auth.create_user(rt, "ana", credits=100)
    clock.set(clock.now().replace(second=10, microsecond=0))
    first = clock.now().replace(second=0)

    # minute 1: two misses on an empty pool; then one item is made and claimed (a hit)
    assert _claim(rt, recipe.id, user.id) == "no_backlog"
    assert _claim(rt, recipe.id, user.id) == "no_backlog"
    backlog.maintain(rt)
    with rt.store.begin() as s:
        s.query(Generation).filter_by(recipe_id=recipe.id).update({"status": "completed", "completed_at": rt.now()})
    clock.advance(60)
    assert _claim(rt, recipe.id, user.id) == "claimed"
    # refusals are not demand on the pool; another recipe's miss is its own
    _event(rt, recipe.id, user.id, "insufficient_credits", clock.now())
    _event(rt, other.id, user.id, "race", clock.now())

    m0, m1 = isoformat(first), isoformat(first + timedelta(minutes=1))
    expected = sorted([(m0, recipe.id, 2, 0), (m1, recipe.id, 1, 1), (m1, other.id, 1, 0)])

    def read():
        got = demand.per_minute(rt, first - timedelta(hours=1), first + timedelta(hours=1))
        return sorted((r["minute"], r["recipeId"], r["attempts"], r["hits"]) for r in got)

    assert read() == expected                       # nothing rolled up yet: counted from the events
    clock.advance(120)
    assert demand.roll_up(rt)["rows"] == 3
    assert read() == expected                       # the same from demand_minutes

    # a miss whose transaction committed after its minute was rolled up is counted at the next run
    _event(rt, recipe.id, user.id, "no_backlog", first + timedelta(minutes=1, seconds=30))
    clock.advance(60)
    demand.roll_up(rt)
    assert demand.per_minute(rt, first + timedelta(minutes=1), first + timedelta(minutes=2), recipe.id)[0][
        "attempts"] == 2
    assert demand.roll_up(rt)["rows"] >= 0          # re-running is harmless
    assert sum(r["attempts"] for r in demand.per_minute(rt, first, first + timedelta(hours=1))) == 5
