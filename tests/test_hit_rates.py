"""The instant hit rate from recorded attempts: hits over hits and misses, per recipe and in
total, over a window and per hour — the same whether the minutes are rolled up or still raw."""
from __future__ import annotations

from datetime import timedelta

import pytest

from delula import auth, claims, demand, recipes
from delula.clock import ManualClock
from delula.storage import pool
from tests.support.factories import add_pool_items


def _claim(rt, recipe_id, user_id) -> str:
    return claims.instant_claim(rt, recipe_id=recipe_id, user_id=user_id).outcome.value


def _event(rt, recipe_id, user_id, outcome):
    with rt.store.begin() as s:
        pool.record_event(s, user_id=user_id, recipe_id=recipe_id, outcome=outcome, generation_id=None,
                          latency_ms=0.0, now=rt.now())


@pytest.fixture
def recorded(db_url, make_runtime):
    """Two hours of attempts: hour 1 — Alpha 2 hits 2 misses, Beta 1 miss; hour 2 — Alpha 1 hit,
    Beta 1 hit 1 race; plus refusals, which are not demand."""
    clock = ManualClock()
    clock.set(clock.now().replace(minute=5, second=0, microsecond=0))
    rt = make_runtime(db_url, clock=clock, instant_cooldown_s=0)
    auth.ensure_system_user(rt)
    a = recipes.create_recipe(rt, name="Alpha", credit_cost=1, variables=[])
    b = recipes.create_recipe(rt, name="Beta", credit_cost=1, variables=[])
    user, _ = auth.create_user(rt, "ana", credits=100)
    start = clock.now()
    add_pool_items(rt, a.id, 2)
    outcomes = [_claim(rt, a.id, user.id) for _ in range(4)] + [_claim(rt, b.id, user.id)]
    assert outcomes == ["claimed", "claimed", "no_backlog", "no_backlog", "no_backlog"]
    _event(rt, a.id, user.id, "insufficient_credits")
    _event(rt, a.id, user.id, "rate_limited")
    clock.advance(3600)
    add_pool_items(rt, a.id, 1)
    add_pool_items(rt, b.id, 1)
    assert [_claim(rt, a.id, user.id), _claim(rt, b.id, user.id)] == ["claimed", "claimed"]
    _event(rt, b.id, user.id, "race")
    clock.advance(120)
    return rt, clock, start, a.id, b.id


def _check(rt, clock, start, a, b):
    day = demand.hit_rates(rt, clock.now() - timedelta(days=1))
    assert (day["attempts"], day["hits"]) == (8, 4) and day["hitRate"] == 0.5
    assert day["recipes"][a] == {"attempts": 5, "hits": 3, "hitRate": pytest.approx(0.6)}
    assert day["recipes"][b] == {"attempts": 3, "hits": 1, "hitRate": pytest.approx(1 / 3)}
    hour = demand.hit_rates(rt, clock.now() - timedelta(hours=1))
    assert (hour["attempts"], hour["hits"]) == (3, 2)
    assert demand.hit_rates(rt, clock.now() - timedelta(minutes=1)) == {
        "attempts": 0, "hits": 0, "hitRate": None, "recipes": {}}

    series = demand.hit_rate_series(rt, start - timedelta(hours=1), 3600)
    assert len(series["buckets"]) == 3            # the hour before, then the two recorded
    assert series["total"]["attempts"] == [0, 5, 3] and series["total"]["hits"] == [0, 2, 2]
    assert series["total"]["hitRate"][0] is None
    assert series["total"]["hitRate"][1:] == [pytest.approx(0.4), pytest.approx(2 / 3)]
    assert series["recipes"][a]["hitRate"][1:] == [0.5, 1.0]
    assert series["recipes"][b]["hitRate"][1:] == [0.0, 0.5]


def test_hit_rates_from_raw_attempts(recorded):
    _check(*recorded)


def test_hit_rates_from_rolled_up_minutes_and_the_raw_tail(recorded):
    rt, clock, start, a, b = recorded
    assert demand.roll_up(rt)["rows"] > 0
    _check(rt, clock, start, a, b)
    # attempts after the roll-up come from the raw tail
    user = auth.get_user(rt, username="ana")
    assert _claim(rt, b, user.id) == "no_backlog"
    clock.advance(30)
    assert demand.hit_rates(rt, clock.now() - timedelta(hours=1))["attempts"] == 4


def test_a_series_bucket_is_whole_minutes(recorded):
    rt, clock, *_ = recorded
    with pytest.raises(ValueError, match="whole number of minutes"):
        demand.hit_rate_series(rt, clock.now() - timedelta(hours=1), 90)
