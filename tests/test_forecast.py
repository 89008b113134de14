"""The forecast policy: its pure parts, and the live pass and the simulator handing it the same
inputs for the same recorded demand (real databases)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from delula import auth, backlog, demand, forecast, policies, recipes
from delula.clock import ManualClock
from delula.planner import simulation, traces
from delula.storage.models import ClaimEvent

CTX = policies.PassContext(max_backlog=30, concurrency=3, run_time_min=22.5 / 60, interval_min=1.0)
BUCKETS = int(policies.HORIZON_MIN // CTX.bucket_min)


def _state(rate=0.0, forecast_rate=None, minimum=3, completed=0, in_flight=0, lead=0.5, policy=None):
    f = () if forecast_rate is None else tuple([forecast_rate] * BUCKETS) if np.isscalar(forecast_rate) \
        else tuple(forecast_rate)
    return policies.RecipeState(minimum=minimum, completed=completed, in_flight=in_flight, rate_per_min=rate,
                                lead_time_min=lead, forecast=f, policy=policy)


def test_a_recipe_with_no_history_gets_its_minimum_and_learns():
    quiet = policies.plan("forecast", [_state(), _state(minimum=1)], CTX)
    assert [(o.target, o.jobs) for o in quiet] == [(3, 3), (1, 1)]
    busy = policies.plan("forecast", [_state(rate=6.0)], CTX)[0]   # its last hour, no profile yet
    assert busy.target > 3 and busy.jobs == busy.target


def test_cover_is_the_service_level_quantile_of_demand_over_the_refill_horizon():
    # 2 attempts/min over 1 min interval + 0.5 min lead: Poisson(3)
    for level, expected in [(0.5, 3), (0.9, 5), (0.98, 7), (0.999, 10)]:
        ctx = policies.PassContext(max_backlog=30, service_level=level, concurrency=50, run_time_min=0.4)
        assert policies.plan("forecast", [_state(forecast_rate=2.0, minimum=0)], ctx)[0].target == expected
    assert policies.poisson_quantile(0, 0.98) == 0
    assert policies.poisson_quantile(1000, 0.5) in (1000, 1001)


def test_a_peak_beyond_the_caps_throughput_is_built_before_it_most_needed_first():
    # capacity 0.9 × 3 / 0.375 = 7.2 items/min; demand 4/min, and 12/min for 2 hours from hour 6
    rates = np.full(BUCKETS, 2.0)
    rates[24:32] = 6.0
    states = [_state(rate=2.0, forecast_rate=rates), _state(rate=2.0, forecast_rate=rates)]
    cover = policies.poisson_quantile(2.0 * 1.5, 0.98)
    # the cap's spare 3.2/min for 6 hours covers the peak's (12 - 7.2) × 120 = 576: nothing yet
    assert [o.target for o in policies.plan("forecast", states, CTX)] == [cover, cover]
    # from 30 minutes before the peak, 576 - 2 × 48 must be in stock now; each recipe may hold 30
    rates = np.full(BUCKETS, 2.0)
    rates[2:10] = 6.0
    states = [_state(rate=2.0, forecast_rate=rates), _state(rate=2.0, forecast_rate=rates)]
    orders = policies.plan("forecast", states, CTX)
    assert [o.target for o in orders] == [30, 30]
    # the cover is ordered at once; the pre-build gradually: the cap plus one interval's
    # throughput on their way at most
    assert [o.jobs for o in orders] == [cover, cover]
    stocked = [_state(rate=2.0, forecast_rate=rates, completed=cover) for _ in range(2)]
    assert sum(o.jobs for o in policies.plan("forecast", stocked, CTX)) == int(np.ceil(3 + 7.2))
    # the emptier recipe's pre-build goes first
    uneven = policies.plan("forecast", [_state(rate=2.0, forecast_rate=rates, completed=20),
                                        _state(rate=2.0, forecast_rate=rates, completed=5)], CTX)
    assert uneven[1].jobs > uneven[0].jobs
    # what one recipe cannot hold, the others build (its stock frees the cap for it at the peak)
    skewed = np.full(BUCKETS, 0.1)
    skewed[24:32] = 1.0
    orders = policies.plan("forecast", [_state(rate=2.0, forecast_rate=rates * 2),
                                        _state(rate=0.1, forecast_rate=skewed)], CTX)
    assert orders[0].target == 30 and orders[1].target > 3


def test_no_prebuild_when_the_cap_keeps_up():
    orders = policies.plan("forecast", [_state(rate=1.0, forecast_rate=1.0) for _ in range(3)], CTX)
    assert all(o.target == policies.poisson_quantile(1.5, 0.98) for o in orders)


def test_a_recipes_own_policy_wins_over_the_passs():
    states = [_state(rate=4.0, forecast_rate=4.0), _state(rate=4.0, forecast_rate=4.0, policy="static"),
              _state(rate=4.0, lead=2.0, policy="reactive")]
    got = policies.plan("forecast", states, CTX)
    assert [o.policy for o in got] == ["forecast", "static", "reactive"]
    assert got[1].target == 3 and got[2].target == 12
    with pytest.raises(ValueError, match="unknown backlog policy"):
        policies.plan("forecast", [_state(policy="clairvoyant")], CTX)


def test_the_profile_learns_the_weekly_shape_the_level_and_the_shares():
    hours = 14 * 24
    how = np.arange(hours) % 168
    total = np.where(how % 24 >= 12, 6.0, 2.0) * 60          # attempts per hour
    counts = np.vstack([total * 0.75, total * 0.25])
    p = forecast.profile(counts, 0)
    assert p.now_how == 0 and p.level == pytest.approx(1.0)
    assert p.share.tolist() == pytest.approx([0.75, 0.25])
    assert p.shape[12] == pytest.approx(6.0) and p.shape[3] == pytest.approx(2.0)
    f = forecast.rates(p, np.array([0.0, 0.0]), 0.0, 96, 15.0)
    assert f[0, 0] == pytest.approx(1.5) and f[0, 48] == pytest.approx(4.5)    # 12:00 is the high half
    # a launch: a recipe with no share but a busy last hour is believed at once
    launched = forecast.rates(p, np.array([0.0, 5.0]), 0.0, 96, 15.0)
    assert launched[1, 0] == pytest.approx(5.0) and launched[1, 48] == pytest.approx(15.0)
    # hotter than last week: the level follows within a day
    hot = counts.copy()
    hot[:, -24:] *= 1.5
    assert forecast.profile(hot, 0).level > 1.2   # the shape has the hot day in it too


def test_hours_before_the_first_attempt_are_not_history():
    counts = np.zeros((1, 48))
    counts[0, 24:] = 120
    p = forecast.profile(counts, 0)
    assert p.shape[24:48] == pytest.approx(np.full(24, 2.0)) and p.shape[0] == pytest.approx(2.0)


def test_hourly_matrix_fills_missing_hours_with_zero():
    start = datetime(2026, 11, 23, tzinfo=timezone.utc)
    rows = [(start + timedelta(hours=1), 7, 5), (start + timedelta(hours=3), 9, 2), (start + timedelta(hours=3), 7, 1)]
    m = forecast.hourly_matrix(rows, [7, 9, 11], start, 4)
    assert m.tolist() == [[0, 5, 0, 1], [0, 0, 0, 2], [0, 0, 0, 0]]
    assert forecast.hourly_matrix([], [1], start, 2).tolist() == [[0, 0]]


def test_the_live_pass_and_the_simulator_hand_the_policy_the_same_forecast(db_url, make_runtime, monkeypatch):
    """The same recorded demand, in the database for the live pass and as a trace for the
    simulator: at the same moment both call ``policies.plan`` with the same demand inputs."""
    start = datetime(2026, 11, 23, tzinfo=timezone.utc)       # a Monday, as a trace's minute 0
    days = 8
    rng = np.random.default_rng(5)
    minutes = np.arange(days * 1440)
    hour = (minutes // 60) % 24
    rate = np.where((hour >= 9) & (hour < 21), 0.6, 0.15)
    counts = np.vstack([rng.poisson(rate * 0.7), rng.poisson(rate * 0.3)]).T
    frame = pd.DataFrame([(m, name, int(counts[m, r])) for m in range(len(minutes))
                          for r, name in enumerate(["Alpha", "Beta"]) if counts[m, r]],
                         columns=["minute", "recipe", "attempts"])
    trace = traces.from_counts("recorded", frame, seed=3, recipes=["Alpha", "Beta"])

    calls = []
    real_plan = policies.plan

    def spy(policy, states, ctx):
        calls.append((policy, states, ctx))
        return real_plan(policy, states, ctx)

    monkeypatch.setattr(policies, "plan", spy)
    now_s = days * 86400.0
    simulation.simulate(trace, "forecast", days_scored=30 / 86400, warmup_days=days, series=False)
    sim_states = calls[-1][1]

    clock = ManualClock(start + timedelta(days=days))
    rt = make_runtime(db_url, clock=clock)
    auth.ensure_system_user(rt)
    made = [recipes.create_recipe(rt, name=n, credit_cost=1, variables=[]) for n in ("Alpha", "Beta")]
    user, _ = auth.create_user(rt, "replayer", credits=0)
    rows = [{"user_id": user.id, "recipe_id": made[int(r)].id, "outcome": "no_backlog", "generation_id": None,
             "latency_ms": 0.0, "created_at": start + timedelta(seconds=float(t))}
            for t, r in zip(trace.times, trace.recipe) if t < now_s]
    with rt.store.begin() as s:
        s.execute(ClaimEvent.__table__.insert(), rows)
    demand.roll_up(rt)          # some of it rolled up, the rest read from the events
    calls.clear()
    backlog.status(rt)
    live_policy, live_states, _ = calls[-1]

    assert live_policy == "forecast"
    for sim, live in zip(sim_states, live_states):
        assert live.rate_per_min == pytest.approx(sim.rate_per_min)
        assert np.allclose(live.forecast, sim.forecast)
        assert sim.forecast[0] > 0
