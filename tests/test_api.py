"""The JSON API through Flask's test client: every status of SPEC §6, roles, bad input, idempotency.

The HTTP tests (``test_api_http.py``) and the schema tests (``test_api_schema.py``) share its
helpers (``tests/support``: :func:`make_app`, :func:`world`, :func:`db_snapshot`, :func:`bearer`).
"""
from __future__ import annotations

import shutil
from datetime import timedelta

import flask
import pytest
from prometheus_client.parser import text_string_to_metric_families

from delula import api, auth, claims, recipes
from delula.clock import ManualClock
from delula.storage import SYSTEM_BACKLOG_USER_ID, accounts, jobs
from delula.storage.models import ApiToken, Generation
from tests.support.api import MAX_BODY, NO_BACKLOG, RACE, bearer, make_app
from tests.support.db import admin_exec, database_url, db_snapshot, events, test_settings
from tests.support.factories import VARIABLES, add_pool_items, world

GENERATION_KEYS = {"id", "recipeId", "userId", "status", "formData", "assetUrl", "thumbnailUrl", "metadata",
                   "error", "createdAt", "updatedAt", "completedAt", "generatedAt"}


def credits(rt, user) -> int:
    return auth.get_user(rt, user_id=user.id).credits


def assert_json_error(response, status: int) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)[:500]
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert isinstance(body.get("message"), str) and body["message"]
    return body


def _instant(env, token, recipe_id=None, headers=None, **body):
    payload = {"recipeId": env.recipe.id if recipe_id is None else recipe_id, **body}
    return env.client.post("/api/generate/instant", json=payload, headers={**bearer(token), **(headers or {})})


# --- POST /api/generate/instant -------------------------------------------------------------

def test_instant_claim_returns_the_generation_and_charges(env):
    r = _instant(env, env.user_token)
    assert r.status_code == 200 and r.mimetype == "application/json"
    body = r.get_json()
    assert set(body) == {"generation", "creditsCharged", "creditsRemaining"}
    gen = body["generation"]
    assert set(gen) == GENERATION_KEYS
    assert gen["id"] == min(env.pool) and gen["userId"] == env.user.id and gen["status"] == "completed"
    assert gen["metadata"]["isInstant"] is True and gen["metadata"]["claimedAt"].endswith("Z")
    assert gen["createdAt"].endswith("Z") and gen["completedAt"].endswith("Z")
    assert (body["creditsCharged"], body["creditsRemaining"]) == (2, 18) and credits(env.rt, env.user) == 18
    assert events(env.rt) == ["claimed"]
    # The new owner sees it in their list and by id.
    assert env.client.get(f"/api/generations/{gen['id']}", headers=bearer(env.user_token)).get_json() == gen
    listed = env.client.get("/api/generations", headers=bearer(env.user_token)).get_json()["generations"]
    assert [g["id"] for g in listed] == [gen["id"]]


def test_instant_claim_with_choices_answers_matched_or_prefills_the_form(env):
    with env.rt.store.begin() as s:
        wild = jobs.get_generation(s, max(env.pool))
        wild.form_data = {"mood": "wild", "speed": 4}
    r = _instant(env, env.user_token, formData={"mood": "wild"})
    assert r.status_code == 200 and r.get_json()["matched"] is True
    assert r.get_json()["generation"]["id"] == max(env.pool)
    missed = _instant(env, env.user_token, formData={"mood": "wild", "speed": 4})
    assert (missed.status_code, missed.get_json()) == (404, {
        "message": "No instant generation available", "fallbackToModal": True,
        "formData": {"mood": "wild", "speed": 4}})
    preferred = _instant(env, env.user_token, formData={"mood": "wild"}, match="prefer").get_json()
    assert preferred["matched"] is False and preferred["generation"]["id"] == min(env.pool)
    assert credits(env.rt, env.user) == 16


def test_a_batch_claim_answers_a_list_and_charges_each_item(env):
    r = _instant(env, env.user_token, count=2)
    body = r.get_json()
    assert r.status_code == 200 and set(body) == {"generations", "creditsCharged", "creditsRemaining"}
    assert [g["id"] for g in body["generations"]] == sorted(env.pool)[:2]
    assert all(set(g) == GENERATION_KEYS for g in body["generations"])
    assert (body["creditsCharged"], body["creditsRemaining"]) == (4, 16)
    nothing = _instant(env, env.user_token, count=2, all=True)
    assert (nothing.status_code, nothing.get_json()) == (404, NO_BACKLOG) and credits(env.rt, env.user) == 16
    poor = _instant(env, env.poor_token, count=1, all=True)
    assert (poor.status_code, poor.get_json()) == (400, {"message": "Insufficient credits", "required": 2,
                                                        "available": 1})


def test_instant_claim_refusals_have_the_statuses_of_the_spec(env):
    rt, c = env.rt, env.client
    assert _instant(env, env.user_token, recipe_id=env.empty.id).get_json() == NO_BACKLOG
    assert _instant(env, env.user_token, recipe_id=env.empty.id).status_code == 404
    for recipe_id in (env.inactive.id, 987654):
        r = _instant(env, env.user_token, recipe_id=recipe_id)
        assert (r.status_code, r.get_json()) == (404, {"message": "Recipe not found"})
    r = _instant(env, env.poor_token)
    assert (r.status_code, r.get_json()) == (400, {"message": "Insufficient credits", "required": 2, "available": 1})
    r = _instant(env, env.user_token, targetUserId=env.other.id)
    assert assert_json_error(r, 403)["message"].startswith("targetUserId")
    r = c.post("/api/generate/instant", json={"recipeId": "x"}, headers=bearer(env.user_token))
    assert assert_json_error(r, 400)["errors"] == {"recipeId": "must be an integer"}
    # Refusals by the claim are recorded (unknown recipes as "invalid"), and so is the malformed
    # body of an authenticated caller (issue 13: one "invalid" event); nothing was charged.
    assert events(rt) == ["no_backlog", "no_backlog", "invalid", "invalid", "insufficient_credits", "forbidden",
                          "invalid"]
    assert credits(rt, env.user) == 20 and credits(rt, env.poor) == 1
    assert recipes.available_count(rt, env.recipe.id) == 3


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Bearer nope",
                                    "Token abc", "Bearer " + "x" * 600])
def test_missing_or_bad_tokens_are_401_with_a_bearer_challenge(env, header):
    before = db_snapshot(env.rt)
    headers = {} if header is None else {"Authorization": header}
    for method, path in [("post", "/api/generate/instant"), ("post", "/api/generate"), ("get", "/api/generations/1"),
                         ("get", "/api/generations"), ("get", "/api/recipes"), ("get", "/api/backlog"),
                         ("get", "/api/queue/stats"), ("get", "/api/me")]:
        kw = {"json": {"recipeId": env.recipe.id}} if method == "post" else {}
        r = getattr(env.client, method)(path, headers=headers, **kw)
        assert_json_error(r, 401)
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert db_snapshot(env.rt) == before


def test_revoked_token_is_401(env):
    auth.revoke_tokens(env.rt, env.user.username)
    r = env.client.get("/api/me", headers=bearer(env.user_token))
    assert assert_json_error(r, 401)["message"] == "Invalid or revoked token"
    assert env.client.get("/api/me", headers=bearer(env.other_token)).status_code == 200


def test_a_token_that_authenticates_nobody_claims_nothing(env):
    """The instant claim checks the token in its own statement: a revoked token, an unknown one
    and a token of the system user (which never authenticates) take nothing and record nothing."""
    system_token = "a-token-of-the-system-user"  # no command issues one: written as a leak would
    with env.rt.store.begin() as s:
        accounts.add_token(s, SYSTEM_BACKLOG_USER_ID, auth.hash_token(system_token), env.rt.now())
    auth.revoke_tokens(env.rt, env.other.username)
    before = db_snapshot(env.rt)
    for token in (system_token, env.other_token, "not-a-token"):
        for body in ({}, {"targetUserId": env.user.id}):
            r = _instant(env, token, **body)
            assert assert_json_error(r, 401)["message"] == "Invalid or revoked token"
            assert r.headers["WWW-Authenticate"] == 'Bearer realm="delula", error="invalid_token"'
    assert db_snapshot(env.rt) == before


def test_a_refused_token_comes_before_a_refused_body(env):
    before = db_snapshot(env.rt)
    for body, content_type in [(b'{"recipeId": "x"}', "application/json"), (b"{", "application/json"),
                               (b"recipeId=1", "text/plain"), (b"x" * (MAX_BODY + 1), "application/json")]:
        r = env.client.post("/api/generate/instant", data=body, content_type=content_type,
                            headers=bearer("not-a-token"))
        assert_json_error(r, 401)
        assert env.client.post("/api/generate/instant", data=body, content_type=content_type,
                               headers=bearer(env.user_token)).status_code in (400, 413, 415)
    after = db_snapshot(env.rt)
    # issue 13: the two 400s of an authenticated caller are each one "invalid" claim event
    assert after.pop("events") == before.pop("events") + 2
    assert after == before


def test_an_instant_claim_marks_its_token_used_at_most_once_a_minute(db_url, make_runtime):
    clock = ManualClock()
    rt = make_runtime(db_url, clock=clock)
    auth.ensure_system_user(rt)
    env = world(rt, pool=3)
    env.client = make_app(rt).test_client()

    def last_used():
        with rt.store.begin() as s:
            return s.query(ApiToken.last_used_at).filter(ApiToken.user_id == env.user.id).scalar()

    assert last_used() is None
    first = clock.now()
    assert _instant(env, env.user_token).status_code == 200
    assert last_used() == first
    clock.advance(30)
    assert _instant(env, env.user_token).status_code == 200
    assert last_used() == first  # not rewritten within the minute
    clock.advance(31)
    assert _instant(env, env.user_token, recipe_id=env.empty.id).status_code == 404  # a refusal counts too
    assert last_used() == clock.now()


def test_the_api_does_not_open_the_dashboard_session(env):
    """Under /api/* the session cookie is not read: a browser's cookie never authorizes an API call."""
    app = make_app(env.rt)
    app.secret_key = "test-secret"
    seen = []
    app.before_request(lambda: seen.append((flask.request.path, dict(flask.session))))
    app.add_url_rule("/page", "page", lambda: "ok")
    client = app.test_client()
    with client.session_transaction() as session:
        session["user_id"] = env.ops.id
    assert client.get("/page").status_code == 200
    assert client.get("/api/me").status_code == 401
    assert client.get("/api/me", headers=bearer(env.user_token)).get_json()["id"] == env.user.id
    assert seen == [("/page", {"user_id": env.ops.id}), ("/api/me", {}), ("/api/me", {})]


def test_staff_may_claim_for_a_test_user_who_is_charged(env):
    for token in (env.product_token, env.ops_token):
        r = _instant(env, token, targetUserId=env.user.id)
        assert r.status_code == 200, r.get_json()
        assert r.get_json()["generation"]["userId"] == env.user.id
    assert credits(env.rt, env.user) == 16
    assert credits(env.rt, env.product) == 0 and credits(env.rt, env.ops) == 50
    r = _instant(env, env.ops_token, targetUserId="u_nobody")
    assert r.status_code == 400 and r.get_json()["errors"] == {"targetUserId": "no such user"}
    r = _instant(env, env.ops_token, targetUserId=SYSTEM_BACKLOG_USER_ID)
    assert r.status_code == 400 and "targetUserId" in r.get_json()["errors"]


def test_cooldown_is_429_with_retry_after_for_the_credited_user(db_url, make_runtime):
    clock = ManualClock()
    rt = make_runtime(db_url, clock=clock, instant_cooldown_s=10)
    auth.ensure_system_user(rt)
    env = world(rt, pool=5)
    env.rt, env.client = rt, make_app(rt).test_client()

    assert _instant(env, env.user_token).status_code == 200
    clock.advance(2.5)
    r = _instant(env, env.user_token)
    body = assert_json_error(r, 429)
    assert body["retryAfter"] == 8 and r.headers["Retry-After"] == "8"
    # The cooldown belongs to the credited user: staff acting for them hit it too, others do not.
    assert _instant(env, env.ops_token, targetUserId=env.user.id).status_code == 429
    assert _instant(env, env.other_token).status_code == 200
    clock.advance(8)
    assert _instant(env, env.user_token).status_code == 200
    assert credits(rt, env.user) == 16
    assert events(rt) == ["claimed", "rate_limited", "rate_limited", "claimed", "claimed"]


@pytest.mark.postgres
def test_a_locked_last_item_is_409_race_with_fallback(pg_rt):
    rt = pg_rt
    env = world(rt, pool=1)
    env.rt, env.client = rt, make_app(rt).test_client()
    with rt.store.begin() as s:
        s.query(Generation).filter_by(id=env.pool[0]).with_for_update().one()  # a claim in flight
        r = _instant(env, env.user_token)
    assert (r.status_code, r.get_json()) == (409, RACE)
    assert credits(rt, env.user) == 20 and events(rt) == ["race"]


# --- Idempotency-Key ------------------------------------------------------------------------

def test_idempotency_key_replays_the_first_response_and_never_charges_twice(env):
    rt = env.rt
    key = {"Idempotency-Key": "order-1"}
    first = _instant(env, env.user_token, headers=key)
    assert first.status_code == 200
    for _ in range(3):
        again = _instant(env, env.user_token, headers=key)
        assert (again.status_code, again.get_json()) == (200, first.get_json())
    assert credits(rt, env.user) == 18 and events(rt) == ["claimed"]
    assert recipes.available_count(rt, env.recipe.id) == 2
    # Another key claims again; the same key from another user is that user's own key.
    assert _instant(env, env.user_token, headers={"Idempotency-Key": "order-2"}).get_json()["generation"]["id"] \
        != first.get_json()["generation"]["id"]
    other = _instant(env, env.other_token, headers=key)
    assert other.status_code == 200 and other.get_json()["generation"]["userId"] == env.other.id


def test_a_refusal_is_replayed_too(env):
    key = {"Idempotency-Key": "k" * 200}
    first = _instant(env, env.user_token, recipe_id=env.empty.id, headers=key)
    assert (first.status_code, first.get_json()) == (404, NO_BACKLOG)
    add_pool_items(env.rt, env.empty.id, 1)
    again = _instant(env, env.user_token, recipe_id=env.empty.id, headers=key)
    assert (again.status_code, again.get_json()) == (404, NO_BACKLOG)
    assert _instant(env, env.user_token, recipe_id=env.empty.id).status_code == 200  # no key: claims


def test_a_replayed_429_keeps_its_retry_after_header(db_url, make_runtime):
    clock = ManualClock()
    rt = make_runtime(db_url, clock=clock, instant_cooldown_s=30)
    auth.ensure_system_user(rt)
    env = world(rt)
    env.rt, env.client = rt, make_app(rt).test_client()
    assert _instant(env, env.user_token).status_code == 200
    first = _instant(env, env.user_token, headers={"Idempotency-Key": "k"})
    clock.advance(60)
    again = _instant(env, env.user_token, headers={"Idempotency-Key": "k"})
    assert again.status_code == 429 and again.get_json() == first.get_json()
    assert again.headers["Retry-After"] == first.headers["Retry-After"] == "30"


# --- POST /api/generate ---------------------------------------------------------------------

def test_generate_queues_a_pending_charged_user_job(env):
    r = env.client.post("/api/generate", json={"recipeId": env.recipe.id, "formData": {"mood": "wild", "speed": 4}},
                        headers=bearer(env.user_token))
    assert r.status_code == 202
    body = r.get_json()
    gen = body["generation"]
    assert set(gen) == GENERATION_KEYS and gen["status"] == "pending" and gen["userId"] == env.user.id
    assert gen["formData"] == {"mood": "wild", "speed": 4}
    assert gen["metadata"]["source"] == "user" and gen["metadata"]["isInstant"] is False
    assert (body["creditsCharged"], body["creditsRemaining"]) == (2, 18)
    # formData may be left out: the schema's defaults fill it.
    r = env.client.post("/api/generate", json={"recipeId": env.recipe.id}, headers=bearer(env.user_token))
    assert r.status_code == 202 and r.get_json()["generation"]["formData"] == {"mood": "calm", "speed": 2}
    assert credits(env.rt, env.user) == 16


def test_generate_refusals(env):
    c, h = env.client, bearer(env.user_token)
    before = db_snapshot(env.rt)
    r = c.post("/api/generate", json={"recipeId": env.recipe.id, "formData": {"mood": "angry", "speed": 9, "x": 1}},
               headers=h)
    body = assert_json_error(r, 400)
    assert set(body["errors"]) == {"mood", "speed", "x"}
    r = c.post("/api/generate", json={"recipeId": env.recipe.id}, headers=bearer(env.poor_token))
    assert r.get_json() == {"message": "Insufficient credits", "required": 2, "available": 1}
    for recipe_id in (env.inactive.id, 424242):
        r = c.post("/api/generate", json={"recipeId": recipe_id}, headers=h)
        assert (r.status_code, r.get_json()) == (404, {"message": "Recipe not found"})
    assert db_snapshot(env.rt) == before


# --- reads ----------------------------------------------------------------------------------

def test_a_generation_is_visible_to_its_owner_and_staff_only(env):
    gen = _instant(env, env.user_token).get_json()["generation"]
    path = f"/api/generations/{gen['id']}"
    for token in (env.user_token, env.product_token, env.ops_token):
        r = env.client.get(path, headers=bearer(token))
        assert r.status_code == 200 and r.get_json() == gen
    r = env.client.get(path, headers=bearer(env.other_token))
    assert (r.status_code, r.get_json()) == (404, {"message": "Generation not found"})
    # Pool items still belong to the system user: invisible to users, visible to staff.
    assert env.client.get(f"/api/generations/{env.pool[1]}", headers=bearer(env.user_token)).status_code == 404
    assert env.client.get(f"/api/generations/{env.pool[1]}", headers=bearer(env.ops_token)).status_code == 200


@pytest.mark.parametrize("ident", ["0", "999999", "abc", "1.5", "-1", "１", "9" * 19, "9" * 400, "1e3", "%00", "%2F"])
def test_unknown_or_malformed_generation_ids_are_404_json(env, ident):
    r = env.client.get(f"/api/generations/{ident}", headers=bearer(env.ops_token))
    assert assert_json_error(r, 404)["message"] in ("Generation not found", "Not found")


def test_my_generations_are_mine_only_newest_first(env):
    h = bearer(env.user_token)
    claimed = _instant(env, env.user_token).get_json()["generation"]["id"]
    made = [env.client.post("/api/generate", json={"recipeId": env.recipe.id}, headers=h).get_json()["generation"]["id"]
            for _ in range(2)]
    env.client.post("/api/generate", json={"recipeId": env.recipe.id}, headers=bearer(env.other_token))
    listed = env.client.get("/api/generations", headers=h).get_json()["generations"]
    assert [g["id"] for g in listed] == [made[1], made[0], claimed]
    assert {g["userId"] for g in listed} == {env.user.id}
    assert env.client.get("/api/generations", headers=bearer(env.product_token)).get_json() == {"generations": []}


def test_recipes_list_active_ones_with_fresh_availability(env):
    h = bearer(env.user_token)
    listed = env.client.get("/api/recipes", headers=h).get_json()["recipes"]
    by_id = {r["id"]: r for r in listed}
    assert set(by_id) == {env.recipe.id, env.empty.id}  # the inactive recipe is hidden
    mine = by_id[env.recipe.id]
    assert {"id", "name", "slug", "creditCost", "variables", "instantAvailable"} <= set(mine)
    assert (mine["instantAvailable"], mine["creditCost"], mine["variables"]) == (3, 2, VARIABLES)
    assert by_id[env.empty.id]["instantAvailable"] == 0
    _instant(env, env.user_token)  # the claim invalidates the cached list in this process
    after = {r["id"]: r for r in env.client.get("/api/recipes", headers=h).get_json()["recipes"]}
    assert after[env.recipe.id]["instantAvailable"] == 2


def test_backlog_is_for_staff_only(env):
    r = env.client.get("/api/backlog", headers=bearer(env.user_token))
    assert assert_json_error(r, 403)
    for token in (env.product_token, env.ops_token):
        rows = env.client.get("/api/backlog", headers=bearer(token)).get_json()["recipes"]
        by_id = {row["recipeId"]: row for row in rows}
        assert set(by_id) == {env.recipe.id, env.empty.id}
        row = by_id[env.recipe.id]
        assert {"recipeId", "name", "completed", "inFlight", "target", "deficit"} <= set(row)
        assert (row["completed"], row["inFlight"], row["name"]) == (3, 0, "Api Recipe")
        assert row["deficit"] == max(0, row["target"] - 3)


def test_queue_stats_and_me(env):
    env.client.post("/api/generate", json={"recipeId": env.recipe.id}, headers=bearer(env.user_token))
    stats = env.client.get("/api/queue/stats", headers=bearer(env.user_token)).get_json()
    assert set(stats) >= {"pending", "processing", "completedLastHour", "failedLastHour", "avgProcessingSeconds",
                          "p95ProcessingSeconds", "cachedAt"}
    assert stats["pending"] >= 1 and stats["cachedAt"].endswith("Z")
    me = env.client.get("/api/me", headers=bearer(env.user_token)).get_json()
    assert me == {"id": env.user.id, "username": "api_user", "role": "user", "credits": 18, "isTest": True}


# --- malformed input: 400/413/415, JSON, and nothing changes --------------------------------

J = "application/json"
_COMMON = [
    ("not-json", J, b"recipeId=1", 400),
    ("empty", J, b"", 400),
    ("trailing-garbage", J, b'{"recipeId": 1} x', 400),
    ("utf8-bom", J, b'\xef\xbb\xbf{"recipeId": 1}', 400),
    ("text-plain", "text/plain", b'{"recipeId": 1}', 415),
    ("form-encoded", "application/x-www-form-urlencoded", b"recipeId=1", 415),
    ("no-content-type", None, b'{"recipeId": 1}', 415),
    ("top-level-array", J, b"[1]", 400),
    ("top-level-string", J, b'"1"', 400),
    ("top-level-null", J, b"null", 400),
    ("top-level-number", J, b"1", 400),
    ("missing-recipeId", J, b"{}", 400),
    ("recipeId-string", J, b'{"recipeId": "1"}', 400),
    ("recipeId-float", J, b'{"recipeId": 1.0}', 400),
    ("recipeId-fraction", J, b'{"recipeId": 1.5}', 400),
    ("recipeId-exponent", J, b'{"recipeId": 1e0}', 400),
    ("recipeId-true", J, b'{"recipeId": true}', 400),
    ("recipeId-false", J, b'{"recipeId": false}', 400),
    ("recipeId-null", J, b'{"recipeId": null}', 400),
    ("recipeId-array", J, b'{"recipeId": [1]}', 400),
    ("recipeId-object", J, b'{"recipeId": {"id": 1}}', 400),
    ("recipeId-int32-overflow", J, b'{"recipeId": 2147483648}', 400),
    ("recipeId-int32-underflow", J, b'{"recipeId": -2147483649}', 400),
    ("recipeId-int64-overflow", J, b'{"recipeId": 9223372036854775808}', 400),
    ("recipeId-400-digits", J, b'{"recipeId": ' + b"9" * 400 + b"}", 400),
    ("recipeId-5000-digits", J, b'{"recipeId": ' + b"9" * 5000 + b"}", 400),
    ("recipeId-1e400", J, b'{"recipeId": 1e400}', 400),
    ("recipeId-NaN", J, b'{"recipeId": NaN}', 400),
    ("recipeId-Infinity", J, b'{"recipeId": -Infinity}', 400),
    ("invalid-utf8", J, b'{"recipeId": 1, "note": "\xff\xfe"}', 400),
    ("lone-surrogate", J, b'{"recipeId": 1, "note": "\\ud800"}', 400),
    ("nul-in-string", J, b'{"recipeId": 1, "note": "a\\u0000b"}', 400),
    ("nul-in-key", J, b'{"recipeId": 1, "a\\u0000": 1}', 400),
    ("deep-nesting", J, b'{"recipeId": 1, "x": ' + b"[" * 20000 + b"]" * 20000 + b"}", 400),
    ("nested-junk-as-id", J, b'{"recipeId": {"a": [{"b": null}, 1e999]}}', 400),
    ("oversized", J, b'{"recipeId": 1, "pad": "' + b"x" * (MAX_BODY + 10) + b'"}', 413),
]
_INSTANT_ONLY = [
    ("targetUserId-number", J, b'{"recipeId": 1, "targetUserId": 5}', 400),
    ("targetUserId-null", J, b'{"recipeId": 1, "targetUserId": null}', 400),
    ("targetUserId-array", J, b'{"recipeId": 1, "targetUserId": ["u"]}', 400),
    ("targetUserId-empty", J, b'{"recipeId": 1, "targetUserId": ""}', 400),
    ("targetUserId-too-long", J, b'{"recipeId": 1, "targetUserId": "' + b"u" * 65 + b'"}', 400),
    ("targetUserId-nul", J, b'{"recipeId": 1, "targetUserId": "u\\u0000"}', 400),
    ("targetUserId-system", J, b'{"recipeId": 1, "targetUserId": "system_backlog"}', 400),
    ("choices-array", J, b'{"recipeId": 1, "formData": []}', 400),
    ("choices-null", J, b'{"recipeId": 1, "formData": null}', 400),
    ("choices-unknown-field", J, b'{"recipeId": 1, "formData": {"colour": "red"}}', 400),
    ("choices-out-of-options", J, b'{"recipeId": 1, "formData": {"mood": "sleepy"}}', 400),
    ("choices-null-value", J, b'{"recipeId": 1, "formData": {"mood": null}}', 400),
    ("choices-slider-string", J, b'{"recipeId": 1, "formData": {"speed": "3"}}', 400),
    ("choices-text-too-long", J, b'{"recipeId": 1, "formData": {"caption": "' + b"c" * 21 + b'"}}', 400),
    ("match-unknown", J, b'{"recipeId": 1, "formData": {"mood": "calm"}, "match": "fuzzy"}', 400),
    ("match-null", J, b'{"recipeId": 1, "match": null}', 400),
    ("count-zero", J, b'{"recipeId": 1, "count": 0}', 400),
    ("count-eleven", J, b'{"recipeId": 1, "count": 11}', 400),
    ("count-string", J, b'{"recipeId": 1, "count": "2"}', 400),
    ("count-float", J, b'{"recipeId": 1, "count": 2.0}', 400),
    ("count-true", J, b'{"recipeId": 1, "count": true}', 400),
    ("all-string", J, b'{"recipeId": 1, "count": 2, "all": "yes"}', 400),
    ("all-null", J, b'{"recipeId": 1, "count": 2, "all": null}', 400),
]
_GENERATE_ONLY = [
    ("formData-array", J, b'{"recipeId": 1, "formData": []}', 400),
    ("formData-string", J, b'{"recipeId": 1, "formData": "mood=wild"}', 400),
    ("formData-null", J, b'{"recipeId": 1, "formData": null}', 400),
    ("formData-unknown-field", J, b'{"recipeId": 1, "formData": {"colour": "red"}}', 400),
    ("formData-nested-junk", J, b'{"recipeId": 1, "formData": {"mood": {"a": [1, {"b": []}]}}}', 400),
    ("formData-slider-string", J, b'{"recipeId": 1, "formData": {"speed": "3"}}', 400),
    ("formData-slider-bool", J, b'{"recipeId": 1, "formData": {"speed": true}}', 400),
    ("formData-slider-huge", J, b'{"recipeId": 1, "formData": {"speed": 1000000000000000000}}', 400),
    ("formData-slider-too-big", J, b'{"recipeId": 1, "formData": {"speed": 1' + b"0" * 30 + b"}}", 400),
    ("formData-slider-400-digits", J, b'{"recipeId": 1, "formData": {"speed": ' + b"9" * 400 + b"}}", 400),
    ("formData-slider-NaN", J, b'{"recipeId": 1, "formData": {"speed": NaN}}', 400),
    ("formData-slider-1e308", J, b'{"recipeId": 1, "formData": {"speed": 1e308}}', 400),
    ("formData-text-too-long", J, b'{"recipeId": 1, "formData": {"caption": "' + b"c" * 21 + b'"}}', 400),
    ("formData-text-nul", J, b'{"recipeId": 1, "formData": {"caption": "\\u0000"}}', 400),
]
_BAD_KEYS = [("empty", ""), ("too-long", "k" * 201), ("non-ascii", "schl\xfcssel"), ("control", "a\x7fb")]


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def shared_env(request, tmp_path_factory):
    """One database per backend for all malformed-body cases: each must leave it unchanged."""
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("api-malformed") / "delula.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        url, drop = f"sqlite:///{path}", None
    else:
        admin, template = request.getfixturevalue("pg_admin"), request.getfixturevalue("pg_template")
        name = f"{template}_api_malformed"
        admin_exec(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin_exec(admin, f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        url, drop = database_url(admin, name), (admin, name)
    from delula.runtime import Runtime

    rt = Runtime.from_settings(test_settings(url))
    auth.ensure_system_user(rt)
    env = world(rt, pool=5, cost=1)
    env.rt, env.client = rt, make_app(rt).test_client()
    yield env
    rt.close()
    if drop:
        admin_exec(drop[0], f'DROP DATABASE IF EXISTS "{drop[1]}" WITH (FORCE)')


def _post_raw(env, path, content_type, raw, headers=None):
    headers = {**bearer(env.ops_token), **(headers or {})}
    if content_type:
        headers["Content-Type"] = content_type
    return env.client.post(path, data=raw.replace(b'"recipeId": 1', f'"recipeId": {env.recipe.id}'.encode()),
                           headers=headers)


@pytest.mark.parametrize("case", _COMMON + _INSTANT_ONLY, ids=lambda c: c[0])
def test_malformed_instant_requests_change_nothing(shared_env, case):
    """...but a 400 of an authenticated caller is one "invalid" claim event (issue 13)."""
    _, content_type, raw, status = case
    before = db_snapshot(shared_env.rt)
    r = _post_raw(shared_env, "/api/generate/instant", content_type, raw)
    body = assert_json_error(r, status)
    if status == 400:
        assert isinstance(body["errors"], dict) and body["errors"]
    after = db_snapshot(shared_env.rt)
    assert after.pop("events") == before.pop("events") + (status == 400)
    assert after == before


@pytest.mark.parametrize("case", _COMMON + _GENERATE_ONLY, ids=lambda c: c[0])
def test_malformed_generate_requests_change_nothing(shared_env, case):
    _, content_type, raw, status = case
    before = db_snapshot(shared_env.rt)
    r = _post_raw(shared_env, "/api/generate", content_type, raw)
    body = assert_json_error(r, status)
    if status == 400:
        assert isinstance(body["errors"], dict) and body["errors"]
    assert db_snapshot(shared_env.rt) == before


@pytest.mark.parametrize("key", [k for _, k in _BAD_KEYS], ids=[name for name, _ in _BAD_KEYS])
def test_malformed_idempotency_keys_are_400(shared_env, key):
    before = db_snapshot(shared_env.rt)
    r = _post_raw(shared_env, "/api/generate/instant", J, b'{"recipeId": 1}', {"Idempotency-Key": key})
    assert "Idempotency-Key" in assert_json_error(r, 400)["errors"]
    after = db_snapshot(shared_env.rt)
    assert after.pop("events") == before.pop("events") + 1  # issue 13: one "invalid" claim event
    assert after == before


def test_the_shared_env_still_claims(shared_env):
    """The malformed cases were refused for their own sake: a good request on the same data works."""
    r = _post_raw(shared_env, "/api/generate/instant", J, b'{"recipeId": 1}')
    assert r.status_code == 200, r.get_json()


# --- errors outside the views, outages, health, metrics -------------------------------------

def test_unrouted_api_paths_and_wrong_methods_are_json(env):
    c = env.client
    for path in ("/api", "/api/", "/api/nope", "/api/generations/1/extra", "/api/recipes/", "/healthz/x"):
        assert_json_error(c.get(path, headers=bearer(env.ops_token)), 404)
    r = c.post("/api/recipes", headers=bearer(env.ops_token))
    assert assert_json_error(r, 405) and "GET" in r.headers["Allow"]
    r = c.delete("/api/generate/instant", headers=bearer(env.ops_token))
    assert assert_json_error(r, 405) and r.headers["Allow"] == "POST"
    for path in ("/healthz", "/metrics", "/api/openapi.json"):
        assert_json_error(c.post(path), 405)
    # Non-API paths keep Flask's (or Dash's) own handling.
    r = c.get("/not-the-api")
    assert r.status_code == 404 and r.mimetype == "text/html"


def test_a_bug_is_a_json_500(env, monkeypatch):
    def broken(rt):
        raise RuntimeError("boom")

    monkeypatch.setattr(api.recipes, "list_with_availability", broken)
    r = env.client.get("/api/recipes", headers=bearer(env.user_token))
    assert assert_json_error(r, 500) == {"message": "Internal server error"}


def test_unreachable_database_is_503_json_everywhere(make_runtime):
    rt = make_runtime("postgresql+psycopg://postgres@127.0.0.1:9/delula_nowhere")
    c = make_app(rt).test_client()
    h = bearer("some-token")
    for method, path in [("post", "/api/generate/instant"), ("post", "/api/generate"), ("get", "/api/generations/1"),
                         ("get", "/api/generations"), ("get", "/api/recipes"), ("get", "/api/backlog"),
                         ("get", "/api/queue/stats"), ("get", "/api/me"), ("get", "/metrics")]:
        kw = {"json": {"recipeId": 1}} if method == "post" else {}
        r = getattr(c, method)(path, headers=h, **kw)
        assert (r.status_code, r.get_json()) == (503, {"message": "Database unavailable"}), path
    r = c.get("/healthz")
    assert r.status_code == 503
    assert r.get_json() == {"status": "degraded", "database": "unreachable", "message": "Database unavailable"}
    assert c.get("/api/openapi.json").status_code == 200  # needs no database


@pytest.mark.postgres
def test_database_going_away_mid_service_is_503_and_changes_nothing(pg_admin, pg_url, make_runtime):
    rt = make_runtime(pg_url)
    auth.ensure_system_user(rt)
    env = world(rt)
    env.rt, env.client = rt, make_app(rt).test_client()
    assert env.client.get("/healthz").get_json() == {"status": "ok", "database": "ok"}
    before = db_snapshot(rt)
    name = pg_url.rsplit("/", 1)[1]
    admin_exec(pg_admin, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
    admin_exec(pg_admin, f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
    try:
        r = _instant(env, env.user_token, headers={"Idempotency-Key": "during-outage"})
        assert (r.status_code, r.get_json()) == (503, {"message": "Database unavailable"})
        assert env.client.get("/healthz").status_code == 503
    finally:
        admin_exec(pg_admin, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
    assert env.client.get("/healthz").status_code == 200
    assert db_snapshot(rt) == before
    r = _instant(env, env.user_token, headers={"Idempotency-Key": "during-outage"})
    assert r.status_code == 200  # the key was never stored: the retry claims


def _samples(text: str) -> dict:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_metrics_are_computed_from_the_database(env, make_runtime):
    rt = env.rt
    _instant(env, env.user_token)
    _instant(env, env.user_token, recipe_id=env.empty.id)
    _instant(env, env.poor_token)
    now = rt.now()
    with rt.store.begin() as s:  # two finished user jobs of 12 s and 100 s, one failed, one pending
        jobs.add_generations(s, [
            dict(user_id=env.other.id, recipe_id=env.recipe.id, status="completed", form_data={},
                 meta={"source": "user"}, started_at=now - timedelta(seconds=12), completed_at=now),
            dict(user_id=env.other.id, recipe_id=env.recipe.id, status="completed", form_data={},
                 meta={"source": "user"}, started_at=now - timedelta(seconds=100), completed_at=now),
            dict(user_id=env.other.id, recipe_id=env.recipe.id, status="failed", form_data={}, meta={"source": "user"}),
            dict(user_id=SYSTEM_BACKLOG_USER_ID, recipe_id=env.recipe.id, form_data={}, meta={"source": "backlog"}),
        ], now)
    r = env.client.get("/metrics", headers=bearer(env.ops_token))
    assert r.status_code == 200 and r.mimetype == "text/plain"
    m = _samples(r.get_data(as_text=True))
    recipe = (("recipe", "Api Recipe"), ("recipe_id", str(env.recipe.id)))
    assert m[("delula_backlog_ready", recipe)] == 2
    assert m[("delula_backlog_in_flight", recipe)] == 1
    assert m[("delula_backlog_target", recipe)] >= 3
    assert ("delula_backlog_ready", (("recipe", "Api Retired"), ("recipe_id", str(env.inactive.id)))) not in m
    assert m[("delula_queue_jobs", (("status", "pending"),))] == 1
    assert m[("delula_queue_jobs", (("status", "processing"),))] == 0
    assert m[("delula_jobs_finished_last_hour", (("status", "failed"),))] == 1
    # The pool items completed "now" too (no start time, so no duration); a claim moves created_at and
    # updated_at, never completed_at.
    assert m[("delula_jobs_finished_last_hour", (("status", "completed"),))] == 2 + 3 + 2
    claims_by = {dict(k[1])["outcome"]: v for k, v in m.items() if k[0] == "delula_instant_claims_last_hour"}
    assert claims_by == {"claimed": 1, "no_backlog": 1, "race": 0, "insufficient_credits": 1, "rate_limited": 0,
                         "invalid": 0, "forbidden": 0}
    user_src = (("source", "user"),)
    assert m[("delula_job_duration_seconds_bucket", (("le", "10"),) + user_src)] == 0
    assert m[("delula_job_duration_seconds_bucket", (("le", "20"),) + user_src)] == 1
    assert m[("delula_job_duration_seconds_bucket", (("le", "120"),) + user_src)] == 2
    assert m[("delula_job_duration_seconds_bucket", (("le", "+Inf"),) + user_src)] == 2
    assert m[("delula_job_duration_seconds_gsum", user_src)] == 112
    # Another process on the same database (another gunicorn worker) reports the same numbers.
    other = make_app(make_runtime(rt.settings.database_url)).test_client()
    assert _samples(other.get("/metrics", headers=bearer(env.ops_token)).get_data(as_text=True)) == m


def test_openapi_document_needs_no_token(env):
    r = env.client.get("/api/openapi.json")
    assert r.status_code == 200 and r.get_json()["openapi"].startswith("3.")


def test_claims_through_the_api_and_the_domain_agree(env):
    """The API is a thin face: its body is exactly the domain's ``ClaimResult.response()``."""
    direct = claims.instant_claim(env.rt, recipe_id=env.empty.id, user_id=env.user.id)
    r = _instant(env, env.user_token, recipe_id=env.empty.id)
    assert (r.status_code, r.get_json()) == direct.response()


def test_the_api_inside_the_dash_app(sqlite_url, make_runtime):
    """Mounted by ``app.create_app``: Dash's catch-all page route and sign-in gate leave /api alone."""
    from app import create_app

    rt = make_runtime(sqlite_url)
    server = create_app(rt, start_scheduler=False).server
    env = world(rt)
    c = server.test_client()
    h = bearer(env.user_token)
    r = c.post("/api/generate/instant", json={"recipeId": env.recipe.id}, headers=h)
    assert r.status_code == 200 and r.get_json()["generation"]["userId"] == env.user.id
    assert c.get("/api/me", headers=h).get_json()["credits"] == 18
    for path in ("/api", "/api/", "/api/typo", "/api/generations/x"):
        assert_json_error(c.get(path, headers=h), 404)
    assert_json_error(c.post("/api/recipes", headers=h), 405)
    assert_json_error(c.post("/healthz"), 405)
    assert_json_error(c.post("/api/generate", data=b"x" * (MAX_BODY + 1), headers={**h, "Content-Type": J}), 413)
    assert_json_error(c.get("/api/me"), 401)
    assert c.get("/healthz").get_json() == {"status": "ok", "database": "ok"}
    assert_json_error(c.get("/metrics"), 401)  # issue 13: no anonymous scrapes
    assert c.get("/metrics", headers=bearer(env.ops_token)).mimetype == "text/plain"
    # Dash keeps its own pages: a signed-out browser is sent to the sign-in page.
    r = c.get("/recipes")
    assert r.status_code == 302 and "/login" in r.headers["Location"]
