"""Issue 13, the data and operations part: one user's free text never reaches another user,
``/metrics`` is closed and cheap under traffic, refused claims are recorded and pruned, secrets
stay out of messages, and recipes can be changed (audited) and switched off without losing their pool.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
import requests

from delula import audit, auth, backlog, claims, housekeeping, metrics, recipes
from delula.config import ConfigError, Settings
from delula.storage import catalog, pool
from delula.storage.models import ClaimEvent, Generation, RecipeUsageOption
from tests.support.api import bearer, make_app, serve
from tests.support.factories import world

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 30
SECRET = "s3cr3t-pa55"

SCHEMA = [
    {"id": "caption", "label": "Caption", "type": "text", "required": True, "maxLength": 60,
     "examples": ["a calm sea"]},
    {"id": "note", "label": "Note", "type": "text", "required": False, "maxLength": 60},
    {"id": "style", "label": "Style", "type": "dropdown", "required": True,
     "options": [{"label": "A", "value": "a"}, {"label": "B", "value": "b"}]},
]


def _usage_rows(rt, recipe_id) -> list[tuple[str, str, int]]:
    with rt.store.begin() as s:
        return sorted((r.variable_id, r.value, r.count)
                      for r in s.query(RecipeUsageOption).filter_by(recipe_id=recipe_id))


# --- item 6: privacy -------------------------------------------------------------------------------

def test_a_users_text_never_reaches_the_statistics_or_a_backlog_job(db_url, make_runtime):
    from delula import generations

    rt = make_runtime(db_url, exploration=0.0)     # every job drawn from what users chose
    auth.ensure_system_user(rt)
    recipe = recipes.create_recipe(rt, name="Private", credit_cost=1, variables=SCHEMA, min_backlog=8)
    user, _ = auth.create_user(rt, "writer", credits=5)
    private = "my neighbour's address is 12 Elm St"
    made = generations.create_user_generation(rt, user_id=user.id, recipe_id=recipe.id,
                                              form_data={"caption": private, "note": private, "style": "b"})
    assert made.status_code == 202
    assert _usage_rows(rt, recipe.id) == [("style", '"b"', 1)]

    # rows counted before the rule (text included) are ignored by the drawing
    with rt.store.begin() as s:
        s.add(RecipeUsageOption(recipe_id=recipe.id, variable_id="caption", value=json.dumps(private), count=1000))
    backlog.maintain(rt)
    with rt.store.begin() as s:
        pooled = [g.form_data for g in s.query(Generation).filter(Generation.recipe_id == recipe.id,
                                                                  Generation.user_id != user.id)]
    assert len(pooled) == 8
    assert all(private not in json.dumps(form) for form in pooled)
    assert {form["caption"] for form in pooled} == {"a calm sea"}       # the author's example
    assert {form["style"] for form in pooled} == {"b"}                  # the one choice users made


def test_the_statistics_keep_at_most_50_values_per_field(rt):
    recipe = recipes.create_recipe(rt, name="Bounded", credit_cost=1, variables=[
        {"id": "n", "label": "N", "type": "slider", "required": True, "min": 0, "max": 100, "step": 1},
        {"id": "style", "label": "Style", "type": "dropdown", "required": True,
         "options": [{"label": "A", "value": "a"}]}])
    for n in range(60):
        with rt.store.begin() as s:
            catalog.record_choices(s, recipe.id, {"n": n, "style": "a"})
    with rt.store.begin() as s:
        catalog.record_choices(s, recipe.id, {"n": 0})          # a kept value goes on counting
        stats = catalog.usage_statistics(s, [recipe.id])[recipe.id]
    assert len(stats["n"]) == catalog.MAX_VALUES_PER_FIELD == 50
    assert set(stats["n"]) == set(range(50)) and stats["n"][0] == 2
    assert stats["style"] == {"a": 60}


# --- item 7: /metrics ------------------------------------------------------------------------------

def test_metrics_need_an_ops_token_or_the_metrics_token(db_url, make_runtime):
    rt = make_runtime(db_url, metrics_token="scrape-me")
    auth.ensure_system_user(rt)
    w = world(rt)
    with serve(make_app(rt)) as base, requests.Session() as http:
        def get(headers=None):
            return http.get(f"{base}/metrics", headers=headers or {}, timeout=TIMEOUT)

        for r in (get(), get(bearer("not-a-token")), get(bearer("scrape-m"))):
            assert r.status_code == 401 and r.headers["Content-Type"].startswith("application/json")
            assert r.headers["WWW-Authenticate"].startswith("Bearer") and "message" in r.json()
        for token in (w.user_token, w.product_token):
            r = get(bearer(token))
            assert r.status_code == 403 and "message" in r.json()
        for token in (w.ops_token, "scrape-me"):
            r = get(bearer(token))
            assert r.status_code == 200 and "delula_backlog_ready" in r.text


def test_claims_leave_the_metrics_cache_and_misses_compute_once(rt, monkeypatch):
    w = world(rt, pool=3)
    computed = []
    real = metrics.snapshot

    def slow_snapshot(runtime):
        computed.append(threading.get_ident())
        time.sleep(0.3)
        return real(runtime)

    monkeypatch.setattr(metrics, "snapshot", slow_snapshot)
    n = 12
    barrier = threading.Barrier(n)
    texts = []

    def scrape():
        barrier.wait()
        texts.append(metrics.render(rt))

    threads = [threading.Thread(target=scrape) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert len(texts) == n and len(set(texts)) == 1
    assert len(computed) == 1                                   # twelve misses, one computation

    assert claims.instant_claim(rt, recipe_id=w.recipe.id, user_id=w.user.id).ok   # calls rt.invalidate()
    rt.invalidate()
    assert metrics.render(rt) == texts[0] and len(computed) == 1


# --- item 8: refused claims recorded and pruned, secrets masked ------------------------------------

def test_a_malformed_instant_body_is_one_invalid_event_of_its_caller(rt):
    w = world(rt)
    client = make_app(rt).test_client()
    r = client.post("/api/generate/instant", json={"recipeId": w.recipe.id, "extra": 1}, headers=bearer(w.user_token))
    assert r.status_code == 400
    r = client.post("/api/generate/instant", data=b"{", content_type="application/json",
                    headers=bearer(w.user_token))
    assert r.status_code == 400
    r = client.post("/api/generate/instant", json={"recipeId": "x"})   # anonymous: nothing recorded
    assert r.status_code == 401
    with rt.store.begin() as s:
        got = [(e.user_id, e.recipe_id, e.outcome, e.actor_id) for e in s.query(ClaimEvent).order_by(ClaimEvent.id)]
    assert got == [(w.user.id, w.recipe.id, "invalid", w.user.id), (w.user.id, None, "invalid", w.user.id)]


def test_housekeeping_prunes_old_refused_claim_events_in_batches(db_url, make_runtime, monkeypatch):
    rt = make_runtime(db_url, event_retention_days=30)
    now = rt.now()
    with rt.store.begin() as s:
        for days, outcome in [(31, "invalid"), (31, "no_backlog"), (40, "forbidden"), (45, "rate_limited"),
                              (400, "claimed"), (29, "invalid"), (1, "race")]:
            pool.record_event(s, user_id="u", recipe_id=1, outcome=outcome, generation_id=None, latency_ms=0.0,
                              now=now - timedelta(days=days))
    monkeypatch.setattr(housekeeping, "EVENT_BATCH", 3)
    assert housekeeping.prune(rt)["claimEventsDeleted"] == 4
    with rt.store.begin() as s:
        assert sorted(e.outcome for e in s.query(ClaimEvent)) == ["claimed", "invalid", "race"]
    assert Settings.from_env({}).event_retention_days == 90
    assert Settings.from_env({"DELULA_EVENT_RETENTION_DAYS": "7"}).event_retention_days == 7


def test_database_urls_keep_their_password_out_of_reprs_and_messages(tmp_path):
    s = Settings(database_url=f"postgres://app:{SECRET}@db.internal:5432/delula")
    assert s.database_url == f"postgresql+psycopg://app:{SECRET}@db.internal:5432/delula"   # postgres:// accepted
    assert SECRET not in repr(s) and "postgresql+psycopg://app:***@db.internal:5432/delula" in repr(s)
    assert Settings.from_env({"DELULA_DATABASE_URL": "postgresql://u@h/db"}).database_url == \
        "postgresql+psycopg://u@h/db"
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({"DELULA_DATABASE_URL": f"mysql://app:{SECRET}@h/db"})
    assert SECRET not in str(refused.value) and "app:***@h" in str(refused.value)

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("DELULA_DATABASE_URL", None)
    for url in (f"mysql://app:{SECRET}@h/db", f"postgresql://app:{SECRET}@h:notaport/db"):
        proc = subprocess.run([sys.executable, "-m", "delula", "--database-url", url, "backlog", "status"],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert SECRET not in proc.stdout + proc.stderr and "***" in proc.stderr


# --- item 9: recipe management ---------------------------------------------------------------------

def test_an_inactive_recipe_keeps_its_pool_but_is_neither_refilled_nor_claimable(rt):
    w = world(rt, pool=2)
    recipes.update_recipe(rt, w.recipe.id, min_backlog=5)
    recipe = recipes.set_active(rt, w.recipe.id, False)
    assert not recipe.is_active
    created = backlog.maintain(rt)["created"]
    assert w.recipe.id not in created
    assert recipes.available_count(rt, w.recipe.id) == 2                       # kept
    result = claims.instant_claim(rt, recipe_id=w.recipe.id, user_id=w.user.id)
    assert result.response() == (404, {"message": "Recipe not found"})
    assert recipes.available_count(rt, w.recipe.id) == 2

    recipes.set_active(rt, w.recipe.id, True)
    assert claims.instant_claim(rt, recipe_id=w.recipe.id, user_id=w.user.id).ok
    assert backlog.maintain(rt)["created"][w.recipe.id] == 4                   # refilled to its minimum of 5


def test_recipe_updates_are_checked_and_audited(rt):
    w = world(rt)
    updated = recipes.update_recipe(rt, w.recipe.id, name="Renamed", credit_cost=4, actor_id=None)
    assert (updated.name, updated.credit_cost) == ("Renamed", 4)
    [row] = audit.events(rt, action="recipe_update")
    assert row["actorId"] is None and row["targetRecipeId"] == w.recipe.id
    assert row["details"]["credit_cost"] == {"before": 2, "after": 4}
    for bad in (dict(credit_cost=-1), dict(name=""), dict(variables=[{"id": "x"}]), dict(min_backlog=5000),
                dict(is_active="yes")):
        with pytest.raises(recipes.RecipeError):
            recipes.update_recipe(rt, w.recipe.id, **bad)
    with pytest.raises(recipes.UnknownRecipe):
        recipes.update_recipe(rt, 987654, name="Nobody")
    assert len(audit.events(rt, action="recipe_update")) == 1


def test_recipes_update_from_the_cli(tmp_path):
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    env = {**os.environ, "DELULA_DATABASE_URL": url, "PYTHONPATH": str(ROOT)}

    def run(*args, expect=0):
        proc = subprocess.run([sys.executable, "-m", "delula", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == expect, proc.stdout + proc.stderr
        return proc

    rid = json.loads(run("recipes", "create", "--name", "Cli", "--credit-cost", "2").stdout)["id"]
    out = json.loads(run("recipes", "update", str(rid), "--name", "Cli 2", "--credit-cost", "3", "--inactive",
                         "--min-backlog", "4", "--variables", json.dumps(SCHEMA)).stdout)
    assert (out["name"], out["creditCost"], out["isActive"], out["minBacklog"]) == ("Cli 2", 3, False, 4)
    assert [v["id"] for v in out["variables"]] == ["caption", "note", "style"]
    assert json.loads(run("recipes", "update", str(rid), "--active").stdout)["isActive"] is True
    run("recipes", "update", str(rid), "--variables", "{", expect=2)
    run("recipes", "update", str(rid), "--credit-cost", "-1", expect=2)
    run("recipes", "update", str(rid), "--variables", '[{"id": "x"}]', expect=2)
    assert json.loads(run("recipes", "update", "987654", "--name", "X", expect=1).stdout) == {
        "message": "no recipe 987654"}
    rows = json.loads(run("audit", "--json").stdout)
    rows = rows["events"] if isinstance(rows, dict) else rows
    assert [(r["action"], r["actorId"]) for r in rows] == [("recipe_update", None)] * 2
