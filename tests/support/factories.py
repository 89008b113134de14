"""Data for tests: claimable pool items, the API's world of users and recipes, and an hour of
realistic dashboard activity (:func:`seed_activity`, for the data-shaping and the browser tests)."""
from __future__ import annotations

import math
from datetime import timedelta
from types import SimpleNamespace

from delula import auth, demo, recipes
from delula.storage import SYSTEM_BACKLOG_USER_ID, jobs, schedule, stats
from delula.storage import pool as store_pool

VARIABLES = [
    {"id": "mood", "label": "Mood", "type": "dropdown", "required": True, "defaultValue": "calm",
     "options": [{"label": "Calm", "value": "calm"}, {"label": "Wild", "value": "wild"}]},
    {"id": "speed", "label": "Speed", "type": "slider", "required": True, "defaultValue": 2,
     "min": 1, "max": 5, "step": 1},
    {"id": "caption", "label": "Caption", "type": "text", "required": False, "maxLength": 20},
]


def pool_row(recipe_id: int, now, **overrides) -> dict:
    """The row of a finished backlog generation ready to claim, for ``jobs.add_generations``."""
    return {**dict(user_id=SYSTEM_BACKLOG_USER_ID, recipe_id=recipe_id, status="completed", form_data={},
                   meta={"source": "backlog"}, priority=10, asset_url=f"/sim/fal/files/test-{recipe_id}/video.svg",
                   completed_at=now), **overrides}


def add_pool_items(rt, recipe_id: int, n: int, *, form_data: dict | None = None) -> list[int]:
    """``n`` finished backlog generations ready to claim, oldest first; returns their ids."""
    now = rt.now()
    rows = [pool_row(recipe_id, now, form_data=form_data or {},
                     asset_url=f"/sim/fal/files/test-{recipe_id}-{i}/video.svg") for i in range(n)]
    with rt.store.begin() as s:
        jobs.add_generations(s, rows, now)
        return [g.id for g in jobs.list_for_user(s, SYSTEM_BACKLOG_USER_ID, limit=100000)
                if g.recipe_id == recipe_id and g.status == "completed"]


def world(rt, *, pool: int = 3, cost: int = 2) -> SimpleNamespace:
    """Users of every role with tokens (``user`` a test account, which product staff may act
    for; ``other`` and ``poor`` real ones), an active recipe with ``pool`` claimable items, an
    inactive recipe with items, and an active recipe with an empty pool."""
    w = SimpleNamespace()
    for name, role, credits in [("user", "user", 20), ("other", "user", 20), ("poor", "user", 1),
                                ("product", "product", 0), ("ops", "ops", 50)]:
        account, token = auth.create_user(rt, f"api_{name}", role=role, credits=credits, is_test=name == "user")
        setattr(w, name, account)
        setattr(w, f"{name}_token", token)
    w.recipe = recipes.create_recipe(rt, name="Api Recipe", credit_cost=cost, variables=VARIABLES)
    w.pool = add_pool_items(rt, w.recipe.id, pool)
    w.inactive = recipes.create_recipe(rt, name="Api Retired", credit_cost=1, is_active=False)
    add_pool_items(rt, w.inactive.id, 2)
    w.empty = recipes.create_recipe(rt, name="Api Empty", credit_cost=1)
    return w


# --- realistic dashboard data --------------------------------------------------------------------

# Ready backlog per demo recipe (ids 1..7; default minimum 3, recipe 7's override is 2):
# recipes 2 and 6 are below their minimum.
READY = {1: 5, 2: 1, 3: 3, 4: 4, 5: 3, 6: 2, 7: 2}
IN_FLIGHT = {2: 2, 6: 1}            # pending backlog jobs
PROCESSING_S = (8, 12, 15, 22, 25, 31, 40, 55, 70, 95, 130, 200)   # completed jobs' processing times
CLAIMS = {"claimed": 10, "no_backlog": 3, "race": 1, "insufficient_credits": 2}
FAILED_BACKLOG, FAILED_USER = 2, 1
NORMAL_GENERATIONS = 4


def seed_activity(rt, *, leader: bool = True) -> dict:
    """Demo recipes and users plus an hour of activity ending at ``rt.now()``: ready and in-flight
    backlog, completed and failed jobs with processing times, claim attempts by outcome, normal
    user generations, queue samples every 30 s and (if ``leader``) a live scheduler leader row.
    Returns the numbers it wrote."""
    demo.seed(rt)
    now = rt.now()
    maya = auth.get_user(rt, username="maya")
    ago = lambda seconds: now - timedelta(seconds=seconds)  # noqa: E731
    rows = []
    for rid, n in READY.items():
        rows += [dict(user_id=SYSTEM_BACKLOG_USER_ID, recipe_id=rid, status="completed", form_data={},
                      meta={"source": "backlog"}, priority=10, asset_url=f"/sim/fal/files/seed-{rid}-{i}/video.svg",
                      created_at=ago(3400), started_at=ago(3300),
                      completed_at=ago(3300 - (6 + 9 * i + 3 * rid)))
                 for i in range(n)]
    for rid, n in IN_FLIGHT.items():
        rows += [dict(user_id=SYSTEM_BACKLOG_USER_ID, recipe_id=rid, form_data={}, meta={"source": "backlog"},
                      priority=10, created_at=ago(40)) for _ in range(n)]
    # Jobs processed in the last hour, owned by maya (normal generations that completed).
    for i, seconds in enumerate(PROCESSING_S):
        done = ago(3000 - i * 240)
        rows.append(dict(user_id=maya.id, recipe_id=1 + i % 3, status="completed", form_data={},
                         meta={"source": "user"}, priority=0, created_at=done - timedelta(seconds=seconds + 5),
                         started_at=done - timedelta(seconds=seconds), completed_at=done, updated_at=done,
                         asset_url=f"/sim/fal/files/seed-job-{i}/video.svg"))
    for i in range(FAILED_BACKLOG):
        rows.append(dict(user_id=SYSTEM_BACKLOG_USER_ID, recipe_id=2, status="failed", form_data={},
                         meta={"source": "backlog"}, priority=10, created_at=ago(1900 + i * 60),
                         updated_at=ago(1800 + i * 60), error="provider: FAILED (simulated failure)", attempts=3))
    for i in range(FAILED_USER):
        rows.append(dict(user_id=maya.id, recipe_id=3, status="failed", form_data={}, meta={"source": "user"},
                         priority=0, created_at=ago(700), updated_at=ago(600), error="provider: timed out", attempts=3))
    # Normal generations still queued (created recently).
    for i in range(NORMAL_GENERATIONS):
        rows.append(dict(user_id=maya.id, recipe_id=4, form_data={}, meta={"source": "user"}, priority=0,
                         created_at=ago(300 + i * 400)))
    normal_created = NORMAL_GENERATIONS + len(PROCESSING_S) + FAILED_USER
    with rt.store.begin() as s:
        for row in rows:
            jobs.add_generations(s, [row], row.get("created_at", now))
        minute = 0
        for outcome, n in CLAIMS.items():
            for _ in range(n):
                minute += 3
                store_pool.record_event(s, user_id=maya.id, recipe_id=1 + minute % 5, outcome=outcome,
                                  generation_id=None, latency_ms=4.0, now=ago(minute * 60 + 10))
        for k in range(120):  # a sample every 30 s for the last hour
            stats.add_queue_sample(s, now=ago(k * 30 + 5), pending=round(4 + 3 * math.sin(k / 9)),
                                   processing=2 + (k // 7) % 2, backlog=round(20 + 4 * math.sin(k / 15)),
                                   backlog_in_flight=3, recipes_below_minimum=2)
        if leader:
            schedule.claim_leadership(s, "scheduler", host="worker-1", pid=4242, now=ago(1800))
            schedule.heartbeat(s, "scheduler", host="worker-1", pid=4242, now=now)
    rt.invalidate()
    return {"ready": sum(READY.values()), "inFlight": sum(IN_FLIGHT.values()), "completedJobs": len(PROCESSING_S),
            "failedJobs": FAILED_BACKLOG + FAILED_USER, "claims": dict(CLAIMS), "normalCreated": normal_created,
            "pending": sum(IN_FLIGHT.values()) + NORMAL_GENERATIONS}
