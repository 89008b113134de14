"""The backlog service: in-flight jobs count, weighted form data, demand-based targets, overrides,
a constant number of statements per pass, no overshoot with passes in parallel, cleanup."""
from __future__ import annotations

import json
import logging
import os
import random
import subprocess
import sys
import threading
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import event

from delula import auth, backlog, config, demo, forms, generations, policies, recipes
from delula.clock import ManualClock
from delula.storage import SYSTEM_BACKLOG_USER_ID, jobs, pool
from delula.storage.models import Generation, QueueSample

ROOT = Path(__file__).resolve().parents[1]

CHOICE = {"id": "color", "label": "Color", "type": "dropdown", "required": True,
          "options": [{"label": "Red", "value": "red"}, {"label": "Green", "value": "green"},
                      {"label": "Blue", "value": "blue"}]}


def _recipe(rt, name=None, variables=None, **kw):
    return recipes.create_recipe(rt, name=name or f"Recipe {random.random()}", credit_cost=1,
                                 variables=variables if variables is not None else [CHOICE], **kw)


def _generations(rt, **filters) -> list[Generation]:
    with rt.store.begin() as s:
        return list(s.query(Generation).filter_by(**filters).order_by(Generation.id))


def _row(rows, recipe_id) -> dict:
    return next(r for r in rows if r["recipeId"] == recipe_id)


def _set_status(rt, ids, status):
    with rt.store.begin() as s:
        s.query(Generation).filter(Generation.id.in_(ids)).update(
            {"status": status, "completed_at": rt.now() if status == "completed" else None},
            synchronize_session=False)


def _reactive(minimum, rate, lead, max_backlog):
    return policies.reactive(policies.RecipeState(minimum=minimum, rate_per_min=rate, lead_time_min=lead),
                             max_backlog)


def test_target_formula():
    assert _reactive(3, 0.0, 2.0, 30) == 3             # no demand: the minimum
    assert _reactive(3, 0.5, 8.0, 30) == 6             # ceil(0.5 × 8 × 1.5)
    assert _reactive(0, 0.1, 20.0, 30) == 3            # 3.0000000000000004 in floats is 3
    assert _reactive(0, 0.1, 21.0, 30) == 4            # 3.15 rounds up
    assert _reactive(3, 10.0, 5.0, 30) == 30           # capped by the maximum ...
    assert _reactive(40, 10.0, 5.0, 30) == 40          # ... unless the minimum is higher


def test_a_pass_fills_to_the_minimum_and_in_flight_jobs_count(rt):
    demo.seed(rt)
    first = backlog.maintain(rt)

    minimums = {r.id: (r.min_backlog if r.min_backlog is not None else 3) for r in recipes.list_recipes(rt)}
    assert first["created"] == minimums and first["createdTotal"] == sum(minimums.values()) == 20
    created = _generations(rt, user_id=SYSTEM_BACKLOG_USER_ID)
    assert len(created) == 20
    for gen in created:
        assert gen.status == "pending" and gen.priority == generations.BACKLOG_PRIORITY
        assert gen.priority > generations.USER_PRIORITY
        assert gen.meta["source"] == "backlog"
        recipe = recipes.get_recipe(rt, gen.recipe_id)
        assert forms.validate(recipe.variables, gen.form_data) == gen.form_data
    assert all(r["inFlight"] == r["target"] and r["deficit"] == 0 for r in first["recipes"])

    # pending jobs count: a second pass creates nothing
    assert backlog.maintain(rt)["createdTotal"] == 0
    # processing and completed ones count too
    _set_status(rt, [g.id for g in created[:5]], "processing")
    _set_status(rt, [g.id for g in created[5:10]], "completed")
    assert backlog.maintain(rt)["createdTotal"] == 0
    rows = backlog.status(rt)
    assert sum(r["completed"] for r in rows) == 5 and sum(r["inFlight"] for r in rows) == 15
    assert all(r["deficit"] == 0 for r in rows)

    # a failed job no longer counts: it is replaced
    _set_status(rt, [created[0].id], "failed")
    again = backlog.maintain(rt)
    assert again["created"] == {created[0].recipe_id: 1}


def test_a_pass_logs_one_bounded_line_of_what_it_created(rt, caplog):
    """The line names the recipes with the most new jobs, not every recipe of a large catalogue."""
    made = [_recipe(rt, min_backlog=1 + (i == 7)) for i in range(backlog.LOGGED_RECIPES + 5)]
    with caplog.at_level(logging.INFO, logger="delula.backlog"):
        backlog.maintain(rt)
    (line,) = [r.getMessage() for r in caplog.records if "created" in r.getMessage()]
    total = len(made) + 1
    assert line.startswith(f"backlog: created {total} job(s): recipe {made[7].id} +2, ")
    assert line.count("recipe ") == backlog.LOGGED_RECIPES and line.endswith(" and 5 more recipe(s)")


def test_inactive_recipes_get_nothing(rt):
    _recipe(rt, is_active=False)
    assert backlog.maintain(rt)["createdTotal"] == 0
    assert backlog.status(rt) == []


def test_weighted_form_data_follows_the_statistics(db_url, make_runtime):
    """Without recent choices (and exploration off), the long-run usage statistics decide."""
    from delula.storage import catalog

    rt = make_runtime(db_url, exploration=0.0)
    auth.ensure_system_user(rt)
    recipe = _recipe(rt, min_backlog=300, variables=[
        CHOICE, {"id": "loud", "label": "Loud", "type": "toggle", "required": False, "defaultValue": False}])
    with rt.store.begin() as s:
        catalog.record_choices(s, recipe.id, {"color": "red"}, weight=90)
        catalog.record_choices(s, recipe.id, {"color": "green"}, weight=10)
        # a value users chose before the schema dropped it: never generated
        catalog.record_choices(s, recipe.id, {"color": "purple"}, weight=1000)

    backlog.maintain(rt, rng=random.Random(7))

    forms_ = [g.form_data for g in _generations(rt, recipe_id=recipe.id)]
    assert len(forms_) == 300
    colors = Counter(f["color"] for f in forms_)
    assert set(colors) == {"red", "green"}          # blue was never chosen, purple is no longer valid
    assert colors["red"] > 3 * colors["green"] > 0  # about 9:1
    # a field without statistics falls back to random valid values
    assert {f["loud"] for f in forms_} == {True, False}


def test_fallback_covers_every_field_type(rt):
    variables = [
        {"id": "d", "label": "D", "type": "dropdown", "required": True,
         "options": [{"label": "A", "value": "a"}, {"label": "B", "value": "b"}]},
        {"id": "r", "label": "R", "type": "radio", "required": False,
         "options": [{"label": "One", "value": 1}, {"label": "Two", "value": 2}]},
        {"id": "e", "label": "E", "type": "emoji_button", "required": True,
         "options": [{"label": "Cat", "value": "cat", "emoji": "🐱"}, {"label": "Dog", "value": "dog", "emoji": "🐶"}]},
        {"id": "s", "label": "S", "type": "slider", "required": True, "min": 0.25, "max": 2.0, "step": 0.25},
        {"id": "si", "label": "Si", "type": "slider", "required": True, "min": 1, "max": 9, "step": 2},
        {"id": "t", "label": "T", "type": "text", "required": True, "maxLength": 20,
         "examples": ["socks", "a toaster"]},
        {"id": "tn", "label": "Free text", "type": "text", "required": True, "maxLength": 4},
        {"id": "g", "label": "G", "type": "toggle", "required": False},
    ]
    recipe = _recipe(rt, variables=variables, min_backlog=40)

    backlog.maintain(rt, rng=random.Random(3))

    made = [g.form_data for g in _generations(rt, recipe_id=recipe.id)]
    assert len(made) == 40
    for form in made:
        assert set(form) == {v["id"] for v in variables}
        assert forms.validate(variables, form) == form
    seen = {fid: {json.dumps(f[fid]) for f in made} for fid in made[0]}
    assert seen["d"] == {'"a"', '"b"'} and seen["r"] == {"1", "2"} and seen["g"] == {"true", "false"}
    assert len(seen["s"]) > 1 and seen["si"] <= {"1", "3", "5", "7", "9"}
    assert seen["t"] <= {'"socks"', '"a toaster"'} and len(seen["tn"]) == 1


def test_target_follows_attempts_of_the_last_hour_and_the_lead_time(db_url, make_runtime):
    clock = ManualClock()
    rt = make_runtime(db_url, clock=clock, min_backlog=2, max_backlog=30, backlog_policy="reactive")
    auth.ensure_system_user(rt)
    busy, quiet, capped = _recipe(rt, name="Busy"), _recipe(rt, name="Quiet"), _recipe(rt, name="Capped")
    user, _ = auth.create_user(rt, "ana", credits=0)
    now = clock.now()
    with rt.store.begin() as s:
        def claims_(recipe_id, n, ago, outcome="claimed"):
            for i in range(n):
                pool.record_event(s, user_id=user.id, recipe_id=recipe_id, outcome=outcome, generation_id=None,
                                  latency_ms=1.0, now=now - ago + timedelta(seconds=i))
        claims_(busy.id, 20, timedelta(minutes=50))                  # hits ...
        claims_(busy.id, 6, timedelta(minutes=40), "no_backlog")     # ... and misses: demand is attempts,
        claims_(busy.id, 4, timedelta(minutes=20), "race")           # 0.5 per minute in all
        claims_(busy.id, 100, timedelta(hours=2))                    # too old: not counted
        for refused in ("insufficient_credits", "rate_limited", "invalid", "forbidden"):
            claims_(busy.id, 25, timedelta(minutes=5), refused)      # never reached the pool: not demand
        claims_(quiet.id, 12, timedelta(minutes=30))                 # 0.2 per minute
        claims_(capped.id, 600, timedelta(minutes=30))               # 10 per minute
        # finished backlog jobs (claimed since): Busy took 8 minutes from creation to completion
        done = []
        for minutes in (6, 8, 8, 9, 30):
            created = now - timedelta(hours=3, minutes=minutes)
            done.append(dict(user_id=user.id, recipe_id=busy.id, status="completed", form_data={"color": "red"},
                             meta={"source": "backlog"}, priority=10, created_at=created,
                             completed_at=now - timedelta(hours=3)))
        # older than a day, and a user job: neither counts
        done.append(dict(user_id=user.id, recipe_id=quiet.id, status="completed", form_data={},
                         meta={"source": "backlog"}, priority=10, created_at=now - timedelta(days=2),
                         completed_at=now - timedelta(days=1, minutes=1)))
        done.append(dict(user_id=user.id, recipe_id=quiet.id, status="completed", form_data={},
                         meta={"source": "user"}, priority=0, created_at=now - timedelta(hours=5),
                         completed_at=now - timedelta(hours=1)))
        jobs.add_generations(s, done, now)

    rows = backlog.status(rt)
    b, q, c = _row(rows, busy.id), _row(rows, quiet.id), _row(rows, capped.id)
    assert (b["claimRatePerMin"], b["leadTimeMin"], b["target"]) == (0.5, 8.0, 6)
    # no data of its own: the overall median of the day (8 minutes too) → ceil(0.2 × 8 × 1.5) = 3
    assert (q["claimRatePerMin"], q["leadTimeMin"], q["target"]) == (0.2, 8.0, 3)
    assert c["target"] == 30 and c["minimum"] == 2
    assert backlog.maintain(rt)["created"] == {busy.id: 6, quiet.id: 3, capped.id: 30}

    # an hour later the claims have left the window: back to the minimum (in-flight jobs stay)
    clock.advance(3600)
    rows = backlog.status(rt)
    assert all(r["claimRatePerMin"] == 0 and r["target"] == 2 and r["deficit"] == 0 for r in rows)


def test_default_lead_time_without_data(rt):
    recipe = _recipe(rt)
    assert _row(backlog.status(rt), recipe.id)["leadTimeMin"] == backlog.DEFAULT_LEAD_TIME_MIN


def test_the_recipe_override_wins(db_url, make_runtime):
    rt = make_runtime(db_url, min_backlog=3, max_backlog=4)
    auth.ensure_system_user(rt)
    default, more, none_ = _recipe(rt), _recipe(rt, min_backlog=7), _recipe(rt, min_backlog=0)
    rows = backlog.status(rt)
    assert [(_row(rows, r.id)["minimum"], _row(rows, r.id)["target"]) for r in (default, more, none_)] == [
        (3, 3), (7, 7), (0, 0)]
    assert backlog.maintain(rt)["created"] == {default.id: 3, more.id: 7}

    recipes.set_min_backlog(rt, default.id, 5)
    recipes.set_min_backlog(rt, more.id, None)
    assert backlog.maintain(rt)["created"] == {default.id: 2}
    assert _row(backlog.status(rt), more.id)["target"] == 3


def _count_statements(rt, fn):
    statements = []

    def before(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    event.listen(rt.store.engine, "before_cursor_execute", before)
    try:
        result = fn()
    finally:
        event.remove(rt.store.engine, "before_cursor_execute", before)
    return result, statements


def test_a_pass_takes_the_same_number_of_statements_for_10_or_200_recipes(db_url, make_runtime):
    from delula.storage import catalog

    counts = {}
    for n in (10, 200):
        rt = make_runtime(db_url)
        auth.ensure_system_user(rt)
        made = [_recipe(rt, name=f"R{n}-{i}") for i in range(n)]
        with rt.store.begin() as s:
            for r in made:
                catalog.record_choices(s, r.id, {"color": "red"}, weight=3)
        result, maintain_sql = _count_statements(rt, lambda: backlog.maintain(rt))
        assert result["createdTotal"] == 3 * n
        _, status_sql = _count_statements(rt, lambda: backlog.status(rt))
        counts[n] = (len(maintain_sql), len(status_sql))
        # clear the table for the next size (same database)
        with rt.store.begin() as s:
            s.query(Generation).delete()
            s.query(catalog.RecipeUsageOption).delete()
            for r in made:
                catalog.set_active(s, r.id, False)
    assert counts[10] == counts[200]
    # the first pass of the hour also reads the forecast's hourly history (three statements);
    # status, in the same hour, reuses what it learnt; both read what is paused (one statement)
    assert counts[10][0] <= 15 and counts[10][1] <= 8


@pytest.mark.postgres
def test_two_passes_at_once_never_overshoot(pg_url, make_runtime):
    setup = make_runtime(pg_url)
    auth.ensure_system_user(setup)
    made = [_recipe(setup, name=f"P{i}", min_backlog=3 + i % 4) for i in range(25)]
    expected = sum(3 + i % 4 for i in range(25))
    runtimes = [make_runtime(pg_url, pool_size=2) for _ in range(4)]
    barrier = threading.Barrier(len(runtimes))
    results, errors = [], []

    def run(rt_):
        try:
            for _ in range(5):
                barrier.wait(timeout=30)
                results.append(backlog.maintain(rt_)["createdTotal"])
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(r,)) for r in runtimes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    assert sum(results) == expected
    per_recipe = Counter(g.recipe_id for g in _generations(setup, user_id=SYSTEM_BACKLOG_USER_ID))
    assert per_recipe == {r.id: 3 + i % 4 for i, r in enumerate(made)}


def test_cleanup_keeps_the_newest_ten_failed_per_recipe(db_url, make_runtime):
    clock = ManualClock()
    rt = make_runtime(db_url, clock=clock, min_backlog=0)
    auth.ensure_system_user(rt)
    a, b = _recipe(rt), _recipe(rt)
    user, _ = auth.create_user(rt, "ana", credits=0)
    now = clock.now()

    def failed(recipe_id, n, age, owner=SYSTEM_BACKLOG_USER_ID):
        return [dict(user_id=owner, recipe_id=recipe_id, status="failed", form_data={}, meta={"source": "backlog"},
                     priority=10, error="boom", created_at=now - age - timedelta(minutes=i)) for i in range(n)]

    with rt.store.begin() as s:
        jobs.add_generations(s, failed(a.id, 15, timedelta(days=2)) + failed(a.id, 3, timedelta(hours=1))
                             + failed(b.id, 5, timedelta(days=3))
                             + failed(b.id, 20, timedelta(days=3), owner=user.id), now)
    newest_a = sorted((g for g in _generations(rt, recipe_id=a.id)), key=lambda g: g.created_at)[-10:]

    result = backlog.maintain(rt)

    assert result["cleanedUp"] == 8
    left_a = _generations(rt, recipe_id=a.id, status="failed")
    assert {g.id for g in left_a} == {g.id for g in newest_a}
    assert len(_generations(rt, recipe_id=b.id, user_id=SYSTEM_BACKLOG_USER_ID)) == 5
    assert len(_generations(rt, recipe_id=b.id, user_id=user.id)) == 20   # user generations are never touched
    assert backlog.maintain(rt)["cleanedUp"] == 0


def test_record_sample_writes_the_totals(rt):
    demo.seed(rt)
    backlog.maintain(rt)
    sample = backlog.record_sample(rt)
    assert sample == {"pending": 20, "processing": 0, "backlog": 0, "backlog_in_flight": 20,
                      "recipes_below_minimum": 7}
    with rt.store.begin() as s:
        row = s.query(QueueSample).one()
    assert (row.pending, row.backlog_in_flight, row.recipes_below_minimum) == (20, 20, 7)


def test_the_service_object_delegates(rt):
    recipe = _recipe(rt)
    service = backlog.BacklogRetainMinimumService(rt)
    assert _row(service.check_backlog_status(), recipe.id)["deficit"] == 3
    assert service.generate_missing_backlog_videos()["created"] == {recipe.id: 3}
    assert _row(service.check_backlog_status(), recipe.id)["deficit"] == 0


def test_cli_backlog_maintain_and_status(tmp_path):
    env = {**os.environ, "DELULA_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}", "PYTHONPATH": str(ROOT)}

    def run(*args):
        proc = subprocess.run([sys.executable, "-m", "delula", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    run("demo", "seed")
    assert json.loads(run("backlog", "maintain"))["createdTotal"] == 20
    rows = json.loads(run("backlog", "status", "--json"))["recipes"]
    assert len(rows) == 7 and all(r["inFlight"] == r["target"] and r["deficit"] == 0 for r in rows)
    assert "DEFICIT" in run("backlog", "status")


def test_a_recipe_that_ran_dry_keeps_its_demand(db_url, make_runtime):
    """Misses are demand: a recipe whose pool is empty, so that every attempt is ``no_backlog``,
    keeps the target its attempts ask for instead of sinking to its minimum."""
    clock = ManualClock()
    rt = make_runtime(db_url, clock=clock, min_backlog=1, max_backlog=30, backlog_policy="reactive")
    auth.ensure_system_user(rt)
    dry = _recipe(rt, name="Dry")
    user, _ = auth.create_user(rt, "ana", credits=100)
    for _ in range(30):                                   # 30 real attempts on an empty pool
        assert pool_claim(rt, dry.id, user.id) == "no_backlog"
        clock.advance(60)
    row = _row(backlog.status(rt), dry.id)
    assert row["claimRatePerMin"] == 0.5                  # 30 misses in the hour
    assert row["target"] == _reactive(1, 0.5, backlog.DEFAULT_LEAD_TIME_MIN, 30) == 2
    assert backlog.maintain(rt)["created"] == {dry.id: 2}


def pool_claim(rt, recipe_id, user_id) -> str:
    with rt.store.begin() as s:
        return pool.claim(s, recipe_id=recipe_id, user_id=user_id, meta_patch={}, now=rt.now(), cooldown_s=0,
                          max_age_h=rt.settings.max_item_age_h).outcome


@pytest.mark.parametrize("policy", ["static", "reactive"])
def test_the_policy_in_force_is_the_setting(db_url, make_runtime, policy):
    clock = ManualClock()
    rt = make_runtime(db_url, clock=clock, min_backlog=2, max_backlog=30, backlog_policy=policy)
    auth.ensure_system_user(rt)
    recipe = _recipe(rt, name="Wanted")
    user, _ = auth.create_user(rt, "ana", credits=0)
    with rt.store.begin() as s:
        for i in range(60):                               # 1 attempt a minute, every one a miss
            pool.record_event(s, user_id=user.id, recipe_id=recipe.id, outcome="no_backlog", generation_id=None,
                              latency_ms=1.0, now=clock.now() - timedelta(minutes=59) + timedelta(minutes=i))
    row = _row(backlog.status(rt), recipe.id)
    state = policies.RecipeState(minimum=2, rate_per_min=1.0, lead_time_min=backlog.DEFAULT_LEAD_TIME_MIN)
    assert row["policy"] == policy
    assert row["target"] == policies.target(policy, state, 30) == {"static": 2, "reactive": 3}[policy]


def test_the_setting_names_every_policy_and_nothing_else():
    assert config.BACKLOG_POLICIES == tuple(policies.POLICIES)
    with pytest.raises(config.ConfigError, match="DELULA_BACKLOG_POLICY"):
        config.Settings.from_env({"DELULA_BACKLOG_POLICY": "psychic"})
    with pytest.raises(ValueError, match="unknown backlog policy"):
        policies.target("psychic", policies.RecipeState(minimum=1), 30)
