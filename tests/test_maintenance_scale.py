"""What makes a maintenance pass over thousands of recipes cheap changes none of its results: the
one-statement insert stores what the ORM's executemany stored, ``choices.usable`` gives the same
with a memo as without, and a forecast row (``forecast.Ahead``) is its tuple to every reader."""
from __future__ import annotations

import random
from datetime import timedelta

import numpy as np
import pytest
from sqlalchemy import insert

from delula import auth, choices, forecast, policies, recipes
from delula.storage import SYSTEM_BACKLOG_USER_ID, jobs
from delula.storage.models import Generation

COLUMNS = ("user_id", "recipe_id", "status", "form_data", "meta", "priority", "attempts", "poll_count",
           "credits_charged", "refunded", "created_at", "updated_at", "error", "completed_at", "asset_url")


def _stored(rt, recipe_id):
    with rt.store.begin() as s:
        return [tuple(getattr(g, c) for c in COLUMNS)
                for g in s.query(Generation).filter(Generation.recipe_id == recipe_id).order_by(Generation.id)]


def test_the_one_statement_insert_stores_what_the_orm_stored(rt):
    a = recipes.create_recipe(rt, name="Bulk A", credit_cost=1).id
    b = recipes.create_recipe(rt, name="Bulk B", credit_cost=1).id
    now = rt.now()
    done = now - timedelta(minutes=3)

    def rows(recipe_id):
        return [dict(user_id=SYSTEM_BACKLOG_USER_ID, recipe_id=recipe_id, priority=10 + i % 2,
                     form_data={"n": i, "mood": ["calm", "wild"][i % 2], "x": None, "f": 0.5, "t": True},
                     meta={"source": "backlog", "isInstant": False, "recipeName": "Bulk é"},
                     error=None if i % 3 else "boom", completed_at=done if i % 2 else None,
                     asset_url=None if i % 2 else f"/files/{i}")
                for i in range(7)]

    with rt.store.begin() as s:
        jobs.add_generations(s, rows(a), now)                 # every row the same keys: one statement
    with rt.store.begin() as s:
        s.execute(insert(Generation), [{**dict(status="pending", attempts=0, poll_count=0, refunded=False,
                                                    credits_charged=0, created_at=now, updated_at=now), **r}
                                            for r in rows(b)])   # the ORM's executemany
    mine, orm = _stored(rt, a), _stored(rt, b)
    assert [r[:1] + r[2:] for r in mine] == [r[:1] + r[2:] for r in orm] and len(mine) == 7
    with rt.store.begin() as s:                                # one row, and rows of different keys
        jobs.add_generations(s, [dict(user_id=SYSTEM_BACKLOG_USER_ID, recipe_id=a, form_data={}, meta={},
                                      priority=10)], now)
        jobs.add_generations(s, [dict(user_id=SYSTEM_BACKLOG_USER_ID, recipe_id=a, form_data={}, meta={},
                                      priority=10), dict(user_id=SYSTEM_BACKLOG_USER_ID, recipe_id=a,
                                                         form_data={}, meta={}, priority=10, error="x")], now)
    assert len(_stored(rt, a)) == 10


def test_the_one_statement_insert_refuses_a_string_too_long_for_its_column(pg_url, make_runtime):
    rt = make_runtime(pg_url)
    auth.ensure_system_user(rt)
    a = recipes.create_recipe(rt, name="Bulk C", credit_cost=1).id
    with pytest.raises(Exception, match="too long"):   # not cut short to the column's length
        with rt.store.begin() as s:
            jobs.add_generations(s, [dict(user_id=SYSTEM_BACKLOG_USER_ID, recipe_id=a, form_data={}, meta={},
                                          priority=10, provider_request_id="x" * 600)] * 2, rt.now())


SCHEMA = [
    {"id": "animal", "label": "Animal", "type": "dropdown", "required": True,
     "options": [{"label": v, "value": v} for v in ("cat", "dog", "fox")]},
    {"id": "mood", "label": "Mood", "type": "radio", "required": True,
     "options": [{"label": v, "value": v} for v in ("calm", "wild")]},
    {"id": "count", "label": "Count", "type": "slider", "required": True, "min": 1, "max": 5, "step": 1},
    {"id": "caption", "label": "Caption", "type": "text", "required": True, "maxLength": 40, "examples": ["hello"]},
]


def test_usable_gives_the_same_with_a_memo():
    rng = random.Random(4)
    pool = [{"animal": rng.choice(["cat", "dog", "fox", "emu"]), "mood": rng.choice(["calm", "wild", 3]),
             "count": rng.choice([1, 2, True, 9]), "caption": "mine"} for _ in range(40)]
    pool += [{"animal": ["cat"]}, {}, {"gone": 1}, "not a dict"]
    memo: dict = {}
    for _ in range(30):
        obs = [(rng.choice(pool), rng.choice([1, 2, 0.5, 0, -1])) for _ in range(rng.randint(0, 25))]
        assert choices.usable(SCHEMA, obs, memo=memo) == choices.usable(SCHEMA, obs)
        a, b = random.Random(9), random.Random(9)
        assert (choices.draw_forms(SCHEMA, obs, 5, exploration=0.1, rng=a, memo=memo)
                == choices.draw_forms(SCHEMA, obs, 5, exploration=0.1, rng=b))


def test_a_forecast_row_is_its_tuple_to_the_policy():
    rng = np.random.default_rng(3)
    p = forecast.profile(rng.poisson(3, (6, 400)).astype(float), 5)
    last = rng.random(6)
    rows = forecast.ahead(p, last, 17.0)
    tuples = [tuple(r) for r in forecast.rates(p, last, 17.0, len(rows[0]), forecast.BUCKET_MIN).tolist()]
    assert rows == tuples and [hash(r) for r in rows] == [hash(t) for t in tuples]
    assert rows[2][0] == tuples[2][0] and rows[2][:5] == tuples[2][:5] and np.allclose(rows[2], tuples[2])
    ctx = policies.PassContext(max_backlog=30, run_time_min=0.3)

    def states(fc, order):
        return [policies.RecipeState(minimum=2, completed=i % 3, in_flight=i % 2, rate_per_min=float(last[i]),
                                     lead_time_min=2.0 + i, forecast=fc[i]) for i in order]

    for order in (range(6), [3, 1, 5, 0]):   # the whole matrix, and some of its rows
        assert policies.plan("forecast", states(rows, order), ctx) == policies.plan("forecast", states(tuples, order), ctx)
    short = [t[:10] for t in tuples]         # shorter forecasts take the slow path, as before
    assert policies.plan("forecast", states(short, range(6)), ctx) == policies.plan("forecast", states(short, range(6)), ctx)


def test_the_one_statement_insert_applies_the_models_defaults(rt):
    """Rows that leave out columns with a Python-side default (priority, form data, metadata)
    get them as the ORM's insert gives them, not NULL."""
    user, _ = auth.create_user(rt, "defaults", credits=0)
    recipe_id = recipes.create_recipe(rt, name="Defaults", credit_cost=1).id
    rows = [dict(user_id=user.id, recipe_id=recipe_id, status=status) for status in ("failed", "completed")]
    with rt.store.begin() as s:
        assert jobs.add_generations(s, rows, rt.now()) == 2
    with rt.store.begin() as s:
        stored = [(g.priority, g.form_data, g.meta, g.attempts)
                  for g in s.query(Generation).filter(Generation.recipe_id == recipe_id)]
    assert stored == [(0, {}, {}, 0)] * 2
