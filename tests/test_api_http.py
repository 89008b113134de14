"""The JSON API over real HTTP: a threaded server on a free port, real clients, real databases.

Covers every status code of SPEC §6 on the wire, bodies the test client cannot send (chunked,
oversized), racing duplicates of one Idempotency-Key, and the parallel claim run of issue 3.
"""
from __future__ import annotations

import random
import threading
from collections import Counter

import pytest
import requests

from delula import auth, recipes
from delula.storage import SYSTEM_BACKLOG_USER_ID, accounts
from delula.storage.models import ClaimEvent, CreditTransaction, Generation
from tests.support.api import MAX_BODY, NO_BACKLOG, RACE, bearer, make_app, serve
from tests.support.db import db_snapshot, events
from tests.support.factories import add_pool_items, world

TIMEOUT = 60


def _json_error(r: requests.Response, status: int) -> dict:
    assert r.status_code == status, r.text[:500]
    assert r.headers["Content-Type"].startswith("application/json")
    body = r.json()
    assert isinstance(body["message"], str) and body["message"]
    return body


@pytest.mark.postgres
def test_every_status_of_the_spec_over_http(pg_url, make_runtime):
    rt = make_runtime(pg_url, instant_cooldown_s=60)
    auth.ensure_system_user(rt)
    w = world(rt, pool=2, cost=2)
    locked = recipes.create_recipe(rt, name="Locked", credit_cost=1)
    [locked_item] = add_pool_items(rt, locked.id, 1)
    with serve(make_app(rt)) as base, requests.Session() as http:
        def instant(token, headers=None, **body):
            return http.post(f"{base}/api/generate/instant", json={"recipeId": w.recipe.id, **body},
                             headers={**bearer(token), **(headers or {})}, timeout=TIMEOUT)

        r = instant(w.user_token)
        assert r.status_code == 200 and r.json()["creditsRemaining"] == 18
        gen_id = r.json()["generation"]["id"]
        r = instant(w.user_token)  # the cooldown of the user just credited
        assert _json_error(r, 429)["retryAfter"] == 60 and r.headers["Retry-After"] == "60"
        r = http.post(f"{base}/api/generate", json={"recipeId": w.recipe.id, "formData": {"mood": "wild"}},
                      headers=bearer(w.other_token), timeout=TIMEOUT)
        assert r.status_code == 202 and r.json()["generation"]["status"] == "pending"
        assert _json_error(instant(w.other_token, recipeId=True), 400)["errors"] == {"recipeId": "must be an integer"}
        assert instant(w.poor_token).json() == {"message": "Insufficient credits", "required": 2, "available": 1}
        r = instant("not-a-token")
        assert _json_error(r, 401) and r.headers["WWW-Authenticate"].startswith("Bearer")
        _json_error(instant(w.other_token, targetUserId=w.user.id), 403)
        _json_error(http.get(f"{base}/api/backlog", headers=bearer(w.other_token), timeout=TIMEOUT), 403)
        assert instant(w.other_token, recipeId=w.inactive.id).json() == {"message": "Recipe not found"}
        r = instant(w.other_token, recipeId=w.empty.id)
        assert (r.status_code, r.json()) == (404, NO_BACKLOG)
        _json_error(http.get(f"{base}/api/generations/{gen_id}", headers=bearer(w.other_token), timeout=TIMEOUT),
                    404)
        assert http.get(f"{base}/api/generations/{gen_id}", headers=bearer(w.user_token),
                        timeout=TIMEOUT).json()["id"] == gen_id
        with rt.store.begin() as s:  # another claim holds the only item of "Locked"
            s.query(Generation).filter_by(id=locked_item).with_for_update().one()
            r = instant(w.other_token, recipeId=locked.id)
        assert (r.status_code, r.json()) == (409, RACE)
        _json_error(http.put(f"{base}/api/generate/instant", headers=bearer(w.user_token), timeout=TIMEOUT), 405)
        _json_error(http.post(f"{base}/api/generate/instant", data=b'{"recipeId": 1}',
                              headers={**bearer(w.other_token), "Content-Type": "text/plain"}, timeout=TIMEOUT), 415)
        _json_error(http.post(f"{base}/api/generate/instant", data=b"{" + b" " * (MAX_BODY + 1) + b"}",
                              headers={**bearer(w.other_token), "Content-Type": "application/json"},
                              timeout=TIMEOUT), 413)
        for path in ("/api/generations", "/api/recipes", "/api/queue/stats", "/api/me", "/api/backlog"):
            r = http.get(f"{base}{path}", headers=bearer(w.ops_token), timeout=TIMEOUT)
            assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/json"), path
        assert http.get(f"{base}/healthz", timeout=TIMEOUT).json() == {"status": "ok", "database": "ok"}
        assert http.get(f"{base}/api/openapi.json", timeout=TIMEOUT).json()["openapi"].startswith("3.")
        _json_error(http.get(f"{base}/metrics", timeout=TIMEOUT), 401)  # issue 13: no anonymous scrapes
        r = http.get(f"{base}/metrics", headers=bearer(w.ops_token), timeout=TIMEOUT)
        assert r.status_code == 200 and "delula_backlog_ready" in r.text
    # issue 13: the malformed body (recipeId true) and the refused targetUserId are recorded too
    assert events(rt) == ["claimed", "rate_limited", "invalid", "insufficient_credits", "forbidden", "invalid",
                          "no_backlog", "race"]


def test_unreachable_database_is_503_over_http(make_runtime):
    rt = make_runtime("postgresql+psycopg://postgres@127.0.0.1:9/delula_nowhere")
    with serve(make_app(rt)) as base:
        r = requests.get(f"{base}/healthz", timeout=TIMEOUT)
        assert r.status_code == 503 and r.json()["database"] == "unreachable"
        r = requests.post(f"{base}/api/generate/instant", json={"recipeId": 1}, headers=bearer("t"), timeout=TIMEOUT)
        assert (r.status_code, r.json()) == (503, {"message": "Database unavailable"})


@pytest.mark.parametrize("how", ["content-length", "chunked"])
def test_oversized_and_broken_bodies_over_http_change_nothing(rt, how):
    w = world(rt)
    before = db_snapshot(rt)
    big = b'{"recipeId": %d, "pad": "' % w.recipe.id + b"x" * (2 * MAX_BODY) + b'"}'
    headers = {**bearer(w.ops_token), "Content-Type": "application/json"}
    with serve(make_app(rt)) as base:
        url = f"{base}/api/generate/instant"
        data = big if how == "content-length" else iter([big[i:i + 4096] for i in range(0, len(big), 4096)])
        _json_error(requests.post(url, data=data, headers=headers, timeout=TIMEOUT), 413)
        r = requests.post(url, data=b'{"recipeId": %d, "x": "\xc3\x28"}' % w.recipe.id, headers=headers,
                          timeout=TIMEOUT)
        assert _json_error(r, 400)["errors"] == {"body": "is not valid UTF-8"}
        small = iter([b'{"recipeId": ', b"%d}" % w.recipe.id])  # chunked and small: accepted
        after = db_snapshot(rt)
        assert after.pop("events") == before.pop("events") + 1  # issue 13: the 400 is an "invalid" event
        assert after == before
        r = requests.post(url, data=small, headers=headers, timeout=TIMEOUT)
        assert r.status_code == 200, r.text


@pytest.mark.postgres
def test_racing_duplicates_of_one_key_claim_and_charge_once(pg_rt):
    rt = pg_rt
    w = world(rt, pool=10, cost=1)
    n = 16
    barrier = threading.Barrier(n)
    results = []
    lock = threading.Lock()

    def go(base):
        with requests.Session() as http:
            barrier.wait()
            r = http.post(f"{base}/api/generate/instant", json={"recipeId": w.recipe.id},
                          headers={**bearer(w.user_token), "Idempotency-Key": "one-click"}, timeout=TIMEOUT)
            with lock:
                results.append((r.status_code, r.json(), r.headers.get("Content-Type")))

    with serve(make_app(rt)) as base:
        threads = [threading.Thread(target=go, args=(base,)) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(TIMEOUT)
    assert len(results) == n
    assert len({(status, repr(sorted(body.items()))) for status, body, _ in results}) == 1  # all identical
    status, body, _ = results[0]
    assert status == 200 and body["creditsRemaining"] == 19
    assert events(rt) == ["claimed"]
    with rt.store.begin() as s:
        charges = s.query(CreditTransaction).filter_by(user_id=w.user.id, kind="instant_claim").all()
        assert [(t.amount, t.generation_id) for t in charges] == [(-1, body["generation"]["id"])]
        assert accounts.ledger_mismatches(s) == []
    assert recipes.available_count(rt, w.recipe.id) == 9


def _claim_in_parallel(rt, threads_n: int, attempts: list[tuple[str, str, dict]]) -> list[tuple[str, int, dict]]:
    """POST every ``(who, token, body)`` of ``attempts`` to the instant claim from ``threads_n``
    threads started together; returns ``(who, status, json body)`` per attempt."""
    todo = iter(attempts)
    lock = threading.Lock()
    results: list[tuple[str, int, dict]] = []
    start = threading.Barrier(threads_n)

    def worker(base):
        with requests.Session() as http:
            start.wait()
            while True:
                with lock:
                    attempt = next(todo, None)
                if attempt is None:
                    return
                who, token, body = attempt
                r = http.post(f"{base}/api/generate/instant", json=body, headers=bearer(token), timeout=TIMEOUT)
                try:
                    answer = r.json()
                except ValueError:
                    answer = {"raw": r.text[:200]}
                with lock:
                    results.append((who, r.status_code, answer))

    with serve(make_app(rt)) as base:
        pool = [threading.Thread(target=worker, args=(base,)) for _ in range(threads_n)]
        for t in pool:
            t.start()
        for t in pool:
            t.join(300)
    assert len(results) == len(attempts)
    return results


@pytest.mark.slow
@pytest.mark.postgres
def test_parallel_instant_claims_over_http(pg_rt):
    """32 client threads, 224 attempts by 10 users on a pool of 60: every invariant holds."""
    rt = pg_rt
    recipe = recipes.create_recipe(rt, name="Parallel", credit_cost=1)
    pool_ids = set(add_pool_items(rt, recipe.id, 60))
    users = []
    for i in range(10):
        user, token = auth.create_user(rt, f"par_{i}", credits=100)
        users.append((user.id, token))
    attempts = 224
    rng = random.Random(3)
    results = _claim_in_parallel(rt, 32, [(uid, token, {"recipeId": recipe.id})
                                          for uid, token in (rng.choice(users) for _ in range(attempts))])
    statuses = Counter(status for _, status, _ in results)
    assert not [s for s in statuses if s >= 500], statuses
    assert set(statuses) <= {200, 404, 409}, statuses
    assert statuses[200] == 60
    won = [(uid, body["generation"]["id"]) for uid, status, body in results if status == 200]
    ids = [gid for _, gid in won]
    assert len(set(ids)) == len(ids) == 60 and set(ids) == pool_ids  # no id twice, the whole pool
    for _, status, body in results:
        if status in (404, 409):
            assert body["fallbackToModal"] is True, body
    wins = Counter(uid for uid, _ in won)
    with rt.store.begin() as s:
        assert accounts.ledger_mismatches(s) == []
        for uid, _ in users:
            assert accounts.get_user(s, uid).credits == 100 - wins[uid]
        owners = {g.id: g.user_id for g in s.query(Generation).filter(Generation.id.in_(pool_ids))}
        outcomes = Counter(e.outcome for e in s.query(ClaimEvent))
    assert {gid: uid for uid, gid in won} == owners
    assert SYSTEM_BACKLOG_USER_ID not in owners.values()
    assert outcomes["claimed"] == 60 and sum(outcomes.values()) == attempts


@pytest.mark.slow
@pytest.mark.postgres
def test_staff_and_users_claiming_in_parallel_charge_the_right_accounts(pg_rt):
    """Ops claims for five test users while they claim for themselves, 16 threads at once: each
    statement checks a token and claims, locking the credited user's row, a pool row and the
    token's row. No deadlock, no item twice, the credited user pays, staff pays nothing."""
    rt = pg_rt
    recipe = recipes.create_recipe(rt, name="Staff Parallel", credit_cost=2)
    pool_ids = set(add_pool_items(rt, recipe.id, 50))
    ops, ops_token = auth.create_user(rt, "par_ops", role="ops", credits=7)
    users = [auth.create_user(rt, f"par_t{i}", credits=40) for i in range(5)]
    rng = random.Random(5)
    attempts = []
    for _ in range(120):
        user, token = rng.choice(users)
        if rng.random() < 0.5:
            attempts.append((user.id, ops_token, {"recipeId": recipe.id, "targetUserId": user.id}))
        else:
            attempts.append((user.id, token, {"recipeId": recipe.id}))
    results = _claim_in_parallel(rt, 16, attempts)
    statuses = Counter(status for _, status, _ in results)
    assert set(statuses) <= {200, 400, 404, 409}, statuses  # 400: a user out of credits
    assert statuses[200] == 50
    won = Counter(who for who, status, body in results if status == 200)
    for who, status, body in results:
        if status == 200:
            assert body["generation"]["userId"] == who
    with rt.store.begin() as s:
        assert accounts.ledger_mismatches(s) == []
        assert accounts.get_user(s, ops.id).credits == 7
        for user, _ in users:
            assert accounts.get_user(s, user.id).credits == 40 - 2 * won[user.id]
        owners = Counter(g.user_id for g in s.query(Generation).filter(Generation.id.in_(pool_ids)))
    assert owners == won
