"""The pool follows demand: the recent choices a maintenance pass reads (users' own generations and
instant attempts with choices, misses included, inside ``DELULA_CHOICE_WINDOW_H``) and the backlog
jobs' form data drawn from their joint distribution."""
from __future__ import annotations

import random
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import event

from delula import auth, backlog, choices, forms, recipes
from delula.clock import ManualClock
from delula.storage import SYSTEM_BACKLOG_USER_ID, catalog, jobs
from delula.storage.models import ClaimEvent, Generation

START = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
VARIABLES = [
    {"id": "animal", "label": "Animal", "type": "dropdown", "required": True,
     "options": [{"label": v, "value": v} for v in ("bengal cat", "golden retriever", "corgi", "red panda")]},
    {"id": "sport", "label": "Sport", "type": "dropdown", "required": True,
     "options": [{"label": v, "value": v} for v in ("pole vault", "frisbee", "surfing", "sumo")]},
    {"id": "caption", "label": "Caption", "type": "text", "required": False, "maxLength": 40,
     "examples": ["Going for gold"]},
]
CAT = {"animal": "bengal cat", "sport": "pole vault"}
DOG = {"animal": "golden retriever", "sport": "frisbee"}
OLD = {"animal": "corgi", "sport": "sumo"}


def _world(db_url, make_runtime, **settings):
    clock = ManualClock(START)
    rt = make_runtime(db_url, clock=clock, **settings)
    auth.ensure_system_user(rt)
    recipe = recipes.create_recipe(rt, name="Animal Olympics", credit_cost=1, variables=VARIABLES, min_backlog=0)
    user, _ = auth.create_user(rt, "asker", credits=0)
    return rt, clock, recipe, user


def _attempts(rt, recipe_id, user_id, outcome, asked, n, at):
    with rt.store.begin() as s:
        for i in range(n):
            s.add(ClaimEvent(user_id=user_id, recipe_id=recipe_id, outcome=outcome, generation_id=None,
                             latency_ms=1.0, created_at=at + timedelta(seconds=i), choices=asked,
                             matched=None if asked is None else outcome == "claimed"))


def _generations(rt, recipe_id, user_id, form_data, n, at, source="user"):
    rows = [dict(user_id=user_id, recipe_id=recipe_id, form_data=form_data, meta={"source": source}, priority=0,
                 created_at=at + timedelta(seconds=i)) for i in range(n)]
    with rt.store.begin() as s:
        jobs.add_generations(s, rows, at)


def _read(rt, recipe_ids, limit=backlog.CHOICE_ROWS):
    with rt.store.begin() as s:
        return catalog.recent_choices(s, recipe_ids, rt.now() - timedelta(hours=rt.settings.choice_window_h), limit)


@pytest.mark.postgres
def test_recent_choices_are_users_generations_and_demand_attempts_in_the_window(pg_url, make_runtime):
    rt, clock, recipe, user = _world(pg_url, make_runtime, choice_window_h=24)
    other = recipes.create_recipe(rt, name="Other", credit_cost=1, variables=VARIABLES)
    now = rt.now()
    hour_ago = now - timedelta(hours=1)
    # read: a user's own generation (its text too, as stored), attempts hit, missed, raced
    _generations(rt, recipe.id, user.id, {**DOG, "caption": "my private words"}, 1, hour_ago)
    _attempts(rt, recipe.id, user.id, "claimed", CAT, 2, hour_ago + timedelta(minutes=1))
    _attempts(rt, recipe.id, user.id, "no_backlog", CAT, 3, hour_ago + timedelta(minutes=2))
    _attempts(rt, recipe.id, user.id, "race", {"animal": "corgi"}, 1, hour_ago + timedelta(minutes=3))
    # not read: backlog jobs (also once claimed), refused attempts, attempts without choices,
    # another recipe, anything older than the window
    _generations(rt, recipe.id, SYSTEM_BACKLOG_USER_ID, OLD, 4, hour_ago, source="backlog")
    _generations(rt, recipe.id, user.id, OLD, 4, hour_ago, source="backlog")
    for outcome in ("rate_limited", "insufficient_credits", "invalid", "forbidden"):
        _attempts(rt, recipe.id, user.id, outcome, OLD, 2, hour_ago)
    _attempts(rt, recipe.id, user.id, "no_backlog", None, 5, hour_ago)
    _attempts(rt, other.id, user.id, "no_backlog", OLD, 5, hour_ago)
    _generations(rt, recipe.id, user.id, OLD, 3, now - timedelta(hours=25))
    _attempts(rt, recipe.id, user.id, "no_backlog", OLD, 3, now - timedelta(hours=24, seconds=10))

    read = _read(rt, [recipe.id])
    assert set(read) == {recipe.id}
    assert read[recipe.id] == [{"animal": "corgi"}] + [CAT] * 5 + [{**DOG, "caption": "my private words"}]
    # the domain strips the text: it never reaches the draw
    assert choices.usable(VARIABLES, [(c, 1) for c in read[recipe.id]]) == [
        ({"animal": "corgi"}, 1.0), (CAT, 5.0), (DOG, 1.0)]
    # each source bounded by its newest rows
    assert _read(rt, [recipe.id], limit=2)[recipe.id] == [{"animal": "corgi"}, CAT, {**DOG, "caption": "my private words"}]
    assert _read(rt, []) == {} and _read(rt, [recipe.id, other.id])[other.id] == [OLD] * 5
    # a day on, the window holds nothing
    clock.set(now + timedelta(days=1))
    assert _read(rt, [recipe.id]) == {}


@pytest.mark.postgres
def test_the_read_uses_the_indexes(pg_url, make_runtime):
    """With sequential scans priced out, the plan reads users' jobs through their partial index,
    and the attempts through an index of claim_events: neither table is scanned whole."""
    rt, clock, recipe, user = _world(pg_url, make_runtime)
    _generations(rt, recipe.id, user.id, CAT, 50, rt.now() - timedelta(hours=1))
    _attempts(rt, recipe.id, user.id, "no_backlog", CAT, 50, rt.now() - timedelta(hours=1))
    seen = []

    def before(conn, cursor, statement, parameters, context, executemany):
        if "claim_events" in statement:
            seen.append((statement, parameters))

    event.listen(rt.store.engine, "before_cursor_execute", before)
    try:
        assert len(_read(rt, [recipe.id])[recipe.id]) == 100
    finally:
        event.remove(rt.store.engine, "before_cursor_execute", before)
    (statement, parameters), = seen
    with rt.store.engine.connect() as conn:
        conn.exec_driver_sql("SET enable_seqscan = off")
        plan = "\n".join(r[0] for r in conn.exec_driver_sql("EXPLAIN " + statement, parameters))
    assert "ix_generations_user_jobs" in plan
    assert "Seq Scan" not in plan, plan


def _pairs(rt, recipe_id) -> Counter:
    with rt.store.begin() as s:
        made = list(s.query(Generation).filter_by(recipe_id=recipe_id, user_id=SYSTEM_BACKLOG_USER_ID))
    for g in made:
        assert forms.validate(VARIABLES, g.form_data) == g.form_data
        assert g.form_data.get("caption") in (None, "Going for gold")
    return Counter((g.form_data["animal"], g.form_data["sport"]) for g in made)


def test_backlog_jobs_follow_the_recorded_joint_choices(db_url, make_runtime):
    rt, clock, recipe, user = _world(db_url, make_runtime, exploration=0.1)
    recipes.set_min_backlog(rt, recipe.id, 600)
    at = rt.now() - timedelta(hours=2)
    _attempts(rt, recipe.id, user.id, "no_backlog", CAT, 30, at)          # misses: unmet demand
    _attempts(rt, recipe.id, user.id, "claimed", DOG, 10, at)
    _generations(rt, recipe.id, user.id, {**DOG, "caption": "my private words"}, 10, at)
    _attempts(rt, recipe.id, user.id, "no_backlog", OLD, 500, rt.now() - timedelta(days=2))   # out of the window

    assert backlog.maintain(rt, rng=random.Random(4))["created"] == {recipe.id: 600}
    pairs = _pairs(rt, recipe.id)
    n = sum(pairs.values())
    asked = pairs[tuple(CAT.values())] + pairs[tuple(DOG.values())]
    # 90 % drawn from what was asked (6 : 4), 10 % from the schema alone (16 pairs)
    assert asked / n == pytest.approx(0.9 + 0.1 * 2 / 16, abs=0.04)
    assert pairs[tuple(CAT.values())] / n == pytest.approx(0.9 * 0.6 + 0.1 / 16, abs=0.05)
    # what a per-field draw would make of it: cat with frisbee as often as cat with pole vault
    assert pairs[("bengal cat", "frisbee")] / n < 0.03
    assert pairs[tuple(OLD.values())] / n < 0.02            # only by exploration


def test_without_exploration_only_asked_combinations_are_made(db_url, make_runtime):
    rt, clock, recipe, user = _world(db_url, make_runtime, exploration=0.0)
    recipes.set_min_backlog(rt, recipe.id, 200)
    _attempts(rt, recipe.id, user.id, "race", CAT, 3, rt.now() - timedelta(minutes=5))
    _attempts(rt, recipe.id, user.id, "no_backlog", {"animal": "red panda"}, 1, rt.now() - timedelta(minutes=5))
    _attempts(rt, recipe.id, user.id, "no_backlog", OLD, 50, rt.now() - timedelta(hours=25))
    backlog.maintain(rt, rng=random.Random(9))
    pairs = _pairs(rt, recipe.id)
    # the red panda's sport is left open: drawn from the sports asked for, the pole vault
    assert set(pairs) == {("bengal cat", "pole vault"), ("red panda", "pole vault")}
    assert pairs[("bengal cat", "pole vault")] / 200 == pytest.approx(0.75, abs=0.08)
