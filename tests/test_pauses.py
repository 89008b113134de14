"""Pause and resume: kept in the database, obeyed by the maintenance pass and the queue tick,
audited, over the CLI and the ops API; and a pause set from the CLI stops a separate worker
process within one tick, a resume restarts it."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from delula import audit, auth, backlog, generations, pauses, queue, recipes
from delula.storage import SYSTEM_BACKLOG_USER_ID, jobs
from tests.support.api import bearer
from tests.support.db import db_snapshot
from tests.support.processes import ROOT, spawn, stop_processes, worker_env
from tests.support.waiting import wait_for


def _backlog_jobs(rt, recipe_id):
    with rt.store.begin() as s:
        return [g for g in jobs.list_for_user(s, SYSTEM_BACKLOG_USER_ID, limit=10_000) if g.recipe_id == recipe_id]


def test_pause_and_resume_are_kept_audited_once_and_say_when_nothing_changed(env):
    rt = env.rt
    first = pauses.pause(rt, "backlog", actor_id=env.ops.id)
    again = pauses.pause(rt, "backlog", actor_id=env.product.id)
    assert first["changed"] and not again["changed"]
    assert first["state"] == {"queue": False, "backlog": True, "recipes": []}
    pauses.pause(rt, "backlog", env.recipe.id, actor_id=env.ops.id)
    pauses.pause(rt, "queue", actor_id=None, via="cli")
    shown = pauses.described(rt)
    assert [(p["scope"], p["recipeId"], p["by"]) for p in shown] == [
        ("queue", None, None), ("backlog", None, "api_ops"), ("backlog", env.recipe.id, "api_ops")]
    assert pauses.state(rt).summary() == {"queue": True, "backlog": True, "recipes": [env.recipe.id]}

    assert pauses.resume(rt, "backlog", actor_id=env.ops.id)["changed"]   # the recipe's own pause stays
    assert pauses.state(rt).summary() == {"queue": True, "backlog": False, "recipes": [env.recipe.id]}
    assert not pauses.resume(rt, "backlog", actor_id=env.ops.id)["changed"]
    events = audit.events(rt, limit=None)
    assert sorted(e["action"] for e in events if e["action"] in ("pause", "resume")) == ["pause"] * 3 + ["resume"]
    cli_event = next(e for e in events if e["action"] == "pause" and e["details"]["scope"] == "queue")
    assert cli_event["actorId"] is None and cli_event["details"]["via"] == "cli"


@pytest.mark.parametrize("scope, recipe, error", [
    ("queue", 1, pauses.PauseError), ("backlog", 99_999, pauses.NoSuchRecipe), ("everything", None, pauses.PauseError),
    ("backlog", "3", pauses.PauseError)])
def test_a_pause_that_cannot_be_applied_changes_nothing(env, scope, recipe, error):
    before = db_snapshot(env.rt)
    with pytest.raises(error):
        pauses.pause(env.rt, scope, recipe, actor_id=env.ops.id)
    assert db_snapshot(env.rt) == before and pauses.described(env.rt) == []


def test_a_paused_backlog_orders_nothing_and_starts_no_backlog_job_but_user_jobs_go_on(env):
    rt = env.rt
    recipes.set_min_backlog(rt, env.recipe.id, 6, actor_id=None)
    recipes.set_min_backlog(rt, env.empty.id, 2, actor_id=None)
    pauses.pause(rt, "backlog", env.recipe.id, actor_id=env.ops.id)
    result = backlog.maintain(rt)
    assert env.recipe.id not in result["created"] and result["created"].get(env.empty.id) == 2
    rows = {r["recipeId"]: r for r in result["recipes"]}
    assert rows[env.recipe.id]["paused"] and rows[env.recipe.id]["deficit"] == 3 and not rows[env.empty.id]["paused"]

    pauses.pause(rt, "backlog", actor_id=env.ops.id)
    assert backlog.maintain(rt)["createdTotal"] == 0
    user_job = generations.create_user_generation(rt, user_id=env.user.id, recipe_id=env.recipe.id, form_data={})
    queue.tick(rt)
    assert [g.status for g in _backlog_jobs(rt, env.empty.id)] == ["pending", "pending"]
    assert generations.get_generation(rt, user_job.generation["id"]).status == "processing"   # submitted

    pauses.resume(rt, "backlog", actor_id=env.ops.id)
    queue.tick(rt)
    assert [g.status for g in _backlog_jobs(rt, env.empty.id)] == ["processing", "processing"]


def test_a_paused_queue_submits_nothing_and_still_finishes_what_was_submitted(env):
    rt = env.rt
    first = generations.create_user_generation(rt, user_id=env.user.id, recipe_id=env.recipe.id, form_data={})
    with rt.store.begin() as s:   # submitted, not yet polled
        jobs.claim_pending(s, limit=1, now=rt.now())
    queue.recover(rt)             # submits it and makes its poll due
    pauses.pause(rt, "queue", actor_id=env.ops.id)
    second = generations.create_user_generation(rt, user_id=env.user.id, recipe_id=env.recipe.id, form_data={})
    with rt.store.begin() as s:
        jobs.repoll_submitted(s, rt.now())
    queue.tick(rt)
    assert generations.get_generation(rt, first.generation["id"]).status == "completed"
    waiting = generations.get_generation(rt, second.generation["id"])
    assert waiting.status == "pending" and waiting.attempts == 0
    pauses.resume(rt, "queue", actor_id=env.ops.id)
    queue.tick(rt)
    assert generations.get_generation(rt, second.generation["id"]).status == "processing"


# --- the API ----------------------------------------------------------------------------------------

def test_the_pause_routes_are_for_ops_and_queue_stats_says_what_is_paused(env):
    c, ops = env.client, bearer(env.ops_token)
    r = c.post("/api/backlog/pause", headers=ops)                      # no body: every recipe
    assert r.status_code == 200 and r.get_json()["state"] == {"queue": False, "backlog": True, "recipes": []}
    r = c.post("/api/backlog/pause", json={"recipeId": env.recipe.id}, headers=ops)
    assert r.status_code == 200 and r.get_json()["recipeId"] == env.recipe.id and r.get_json()["changed"]
    assert c.post("/api/queue/pause", headers=ops).status_code == 200
    stats = c.get("/api/queue/stats", headers=bearer(env.user_token)).get_json()
    assert stats["paused"] == {"queue": True, "backlog": True, "recipes": [env.recipe.id]}
    r = c.post("/api/backlog/resume", json={}, headers=ops)
    assert r.status_code == 200 and r.get_json()["state"]["backlog"] is False
    assert c.post("/api/queue/resume", headers=ops).get_json()["state"]["queue"] is False
    assert c.get("/api/queue/stats", headers=ops).get_json()["paused"] == {
        "queue": False, "backlog": False, "recipes": [env.recipe.id]}


@pytest.mark.parametrize("path, body, token, status", [
    ("/api/backlog/pause", None, "product_token", 403),
    ("/api/queue/pause", None, "user_token", 403),
    ("/api/queue/resume", None, None, 401),
    ("/api/backlog/pause", {"recipeId": 99_999}, "ops_token", 404),
    ("/api/backlog/pause", {"recipeId": "1"}, "ops_token", 400),
    ("/api/backlog/pause", {"recipe": 1}, "ops_token", 400),
    ("/api/backlog/resume", [1], "ops_token", 400),
])
def test_a_refused_pause_is_json_and_changes_nothing(env, path, body, token, status):
    before = db_snapshot(env.rt)
    headers = bearer(getattr(env, token)) if token else {}
    r = env.client.post(path, json=body, headers=headers) if body is not None else env.client.post(path, headers=headers)
    assert r.status_code == status and "message" in r.get_json()
    assert db_snapshot(env.rt) == before and pauses.described(env.rt) == []


# --- a separate worker obeys the CLI -----------------------------------------------------------------

def _cli(env: dict, *args) -> str:
    proc = subprocess.run([sys.executable, "-m", "delula", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.mark.postgres
def test_a_pause_from_the_cli_stops_a_separate_worker_within_a_tick_and_resume_restarts_it(pg_url, make_runtime,
                                                                                          tmp_path):
    rt = make_runtime(pg_url)
    auth.ensure_system_user(rt)
    user, _ = auth.create_user(rt, "pause_user", credits=100)
    recipe = recipes.create_recipe(rt, name="Paused Recipe", credit_cost=1)
    env = worker_env(pg_url, DELULA_SIMULATOR_DURATION="0.2", DELULA_SIMULATOR_FAILURE_RATE="0",
                     DELULA_MAINTENANCE_INTERVAL_S="0.5")
    worker = spawn(["-m", "delula", "worker"], env, tmp_path / "worker.log")
    try:
        first = generations.create_user_generation(rt, user_id=user.id, recipe_id=recipe.id, form_data={})
        wait_for(lambda: generations.get_generation(rt, first.generation["id"]).status == "completed",
                 timeout=60, what="the worker to run a job")

        assert "paused" in _cli(env, "backlog", "pause")
        recipes.set_min_backlog(rt, recipe.id, 2, actor_id=None)
        assert "paused" in _cli(env, "queue", "pause")
        assert "paused:    queue submissions, backlog (all recipes)" in _cli(env, "queue", "status")
        held = generations.create_user_generation(rt, user_id=user.id, recipe_id=recipe.id, form_data={})
        time.sleep(3)   # three queue ticks and six maintenance passes
        assert _backlog_jobs(rt, recipe.id) == []
        waiting = generations.get_generation(rt, held.generation["id"])
        assert (waiting.status, waiting.attempts) == ("pending", 0)

        assert "resumed" in _cli(env, "queue", "resume")
        wait_for(lambda: generations.get_generation(rt, held.generation["id"]).status == "completed",
                 timeout=10, what="the held job once the queue resumed")
        assert _backlog_jobs(rt, recipe.id) == []
        assert "resumed" in _cli(env, "backlog", "resume")
        wait_for(lambda: [g.status for g in _backlog_jobs(rt, recipe.id)] == ["completed", "completed"],
                 timeout=15, what="the backlog refilled once resumed")
        assert worker.poll() is None
    finally:
        stop_processes(worker)
    actions = [(e["action"], e["details"]["via"]) for e in audit.events(rt, limit=None)
               if e["action"] in ("pause", "resume")]
    assert sorted(actions) == [("pause", "cli")] * 2 + [("resume", "cli")] * 2
