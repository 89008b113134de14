"""Load through the production servers: gunicorn and granian serving ``app:server`` in their own
processes (several workers, each with its own connection pool) against PostgreSQL, 64 client
threads over HTTP. Every test runs under each server.

``test_load.py`` runs the same numbers through a threaded server inside the test process, with
credits as the limit (150 affordable < 200 items). Here the **pool** is the limit (260
affordable > 200 items), so the last items are fought over by several processes at once, and a
fifth of the attempts are client retries that repeat an ``Idempotency-Key`` (often at the same
moment as the first send). Every invariant is checked on the data afterwards; the figures go
to ``test-artifacts/load_<server>.json`` (and ``docs/reliability.md``), nothing here asserts a
timing.
"""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import requests

from delula import auth, recipes
from delula.config import Settings
from delula.runtime import Runtime
from delula.storage import SYSTEM_BACKLOG_USER_ID, accounts
from delula.storage.models import ClaimEvent, CreditTransaction, Generation
from tests.support.api import claim_concurrently, percentile
from tests.support.db import admin_exec, database_url, free_port
from tests.support.factories import add_pool_items
from tests.support.waiting import wait_for

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
THREADS, ATTEMPTS, POOL, COST, USERS, KEYS = 64, 1000, 200, 2, 50, 100
AFFORDABLE = 260
WORKERS, WORKER_THREADS = 3, 8

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


# the servers, each with WORKERS processes of WORKER_THREADS request threads
SERVERS = {
    "gunicorn": lambda port: ["gunicorn", "app:server", "-w", str(WORKERS), "--threads", str(WORKER_THREADS),
                              "-b", f"127.0.0.1:{port}", "--timeout", "120"],
    "granian": lambda port: ["granian", "--interface", "wsgi", "app:server", "--workers", str(WORKERS),
                             "--blocking-threads", str(WORKER_THREADS), "--host", "127.0.0.1", "--port", str(port),
                             "--no-ws"],
}


@pytest.fixture(scope="module", params=sorted(SERVERS))
def served(request, pg_admin, pg_template, tmp_path_factory):
    """A database of its own with a recipe, 200 pool items and 50 users on a budget, served by
    gunicorn or granian (scheduler off, no cooldown). Yields ``(base_url, runtime, world)``."""
    kind = request.param
    name = f"{pg_template}_{kind}_load"
    admin_exec(pg_admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin_exec(pg_admin, f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"')
    url = database_url(pg_admin, name)
    rt = Runtime.from_settings(Settings(database_url=url, instant_cooldown_s=0, scheduler=False), pool_size=5)
    import app as app_module

    app_module.boot(rt)   # what the server does on start: migrate, system user, demo data, admin
    recipe = recipes.create_recipe(rt, name="Gunicorn Load", credit_cost=COST)
    pool_ids = set(add_pool_items(rt, recipe.id, POOL))
    rng = random.Random(88)
    budget = [COST * rng.randint(2, 8) + rng.randint(0, 1) for _ in range(USERS)]  # odd credits are left over
    while sum(b // COST for b in budget) != AFFORDABLE:
        i = rng.randrange(USERS)
        budget[i] += COST if sum(b // COST for b in budget) < AFFORDABLE else (-COST if budget[i] >= COST else 0)
    users = [(*auth.create_user(rt, f"gload_{i}", credits=budget[i], password=f"pw-gload-{i}"), budget[i])
             for i in range(USERS)]
    port = free_port()
    env = {**os.environ, "DELULA_DATABASE_URL": url, "DELULA_SCHEDULER": "off", "DELULA_INSTANT_COOLDOWN_S": "0",
           "PYTHONPATH": str(ROOT)}
    log = tmp_path_factory.mktemp(kind) / f"{kind}.log"
    server = subprocess.Popen([sys.executable, "-m", *SERVERS[kind](port)],
                              cwd=ROOT, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"

    def up():
        try:
            return requests.get(f"{base}/healthz", timeout=2).status_code == 200
        except requests.RequestException:
            return None

    try:
        wait_for(up, timeout=90, what=kind)
        yield base, rt, dict(recipe=recipe, pool_ids=pool_ids, users=users, url=url, log=log, server=kind)
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=30)
        rt.close()
        admin_exec(pg_admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_64_threads_1000_attempts_through_the_server_workers(served):
    base, rt, w = served
    recipe, pool_ids, users = w["recipe"], w["pool_ids"], w["users"]
    # 800 single sends and 100 keys sent twice (the second often while the first is running)
    todo = [(n % USERS, None) for n in range(ATTEMPTS - 2 * KEYS)]
    todo += [(k % USERS, f"retry-{k}") for k in range(KEYS) for _ in range(2)]
    random.Random(8).shuffle(todo)

    def headers(item):
        who, key = item
        return {"Authorization": f"Bearer {users[who][1]}", **({"Idempotency-Key": key} if key else {})}

    sent, elapsed = claim_concurrently(base, recipe.id, todo, headers)
    results = [(who, key, status, body, ms) for (who, key), status, body, ms in sent]

    statuses = Counter(status for _, _, status, _, _ in results)
    assert len(results) == ATTEMPTS
    assert set(statuses) <= {200, 400, 404, 409}, (   # zero 5xx or errors; the server's traceback if any
        statuses, [b for _, _, s, b, _ in results if s not in (200, 400, 404, 409)][:3], _log_summary(w["log"]))
    # a repeated key got the very same answer, whatever it was
    by_key: dict[str, list] = {}
    for _, key, status, body, _ in results:
        if key:
            by_key.setdefault(key, []).append((status, body))
    assert len(by_key) == KEYS and all(a == b for a, b in by_key.values())
    distinct = [(who, status, body) for who, key, status, body, _ in results if key is None]
    distinct += [(int(key.split("-")[1]) % USERS, *answers[0]) for key, answers in by_key.items()]
    assert len(distinct) == ATTEMPTS - KEYS

    won = Counter(who for who, status, _ in distinct if status == 200)
    ids = [body["generation"]["id"] for _, status, body in distinct if status == 200]
    assert len(ids) == min(POOL, AFFORDABLE) == 200                      # the pool was the limit
    assert len(set(ids)) == len(ids) and set(ids) == pool_ids          # no generation owned twice
    for _, status, body in distinct:
        if status == 400:
            assert body["message"] == "Insufficient credits" and 0 <= body["available"] < COST
        elif status in (404, 409):
            assert body["fallbackToModal"] is True
    with rt.store.begin() as s:
        assert accounts.ledger_mismatches(s) == []                     # the ledger reconciles
        for i, (user, _, initial) in enumerate(users):
            balance = accounts.get_user(s, user.id).credits
            assert balance == initial - COST * won[i] >= 0              # credits = initial - charged
        owners = {g.id: g.user_id for g in s.query(Generation).filter(Generation.id.in_(pool_ids))}
        charges = Counter(t.generation_id for t in s.query(CreditTransaction)
                          .filter(CreditTransaction.kind == "instant_claim"))
        outcomes = Counter(e.outcome for e in s.query(ClaimEvent).filter(ClaimEvent.recipe_id == recipe.id))
    by_id = {body["generation"]["id"]: users[who][0].id for who, status, body in distinct if status == 200}
    assert owners == by_id and SYSTEM_BACKLOG_USER_ID not in owners.values()
    assert charges == Counter(ids)                                      # one charge per claimed item
    assert recipes.available_count(rt, recipe.id) == 0
    # one claim event per distinct attempt (a replayed key is not a new attempt), by outcome
    expected = Counter({200: "claimed", 400: "insufficient_credits", 404: "no_backlog", 409: "race"}[status]
                       for _, status, _ in distinct)
    assert outcomes == expected

    all_ms = [ms for *_, ms in results]
    ok_ms = [ms for _, _, status, _, ms in results if status == 200]
    figures = {"server": " ".join(SERVERS[w["server"]]("PORT")), "threads": THREADS,
               "attempts": ATTEMPTS, "repeatedKeys": KEYS, "pool": POOL, "affordable": AFFORDABLE,
               "statuses": {str(k): v for k, v in sorted(statuses.items())},
               "outcomes": dict(sorted(outcomes.items())),
               "seconds": round(elapsed, 2), "attemptsPerSecond": round(ATTEMPTS / elapsed, 1),
               "claimsPerSecond": round(len(ids) / elapsed, 1),
               "latencyMs": {"p50": round(percentile(all_ms, 50), 1), "p99": round(percentile(all_ms, 99), 1),
                             "claimedP50": round(percentile(ok_ms, 50), 1)}}
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / f"load_{w['server']}.json").write_text(json.dumps(figures, indent=2))
    print(f"{w['server']} load test:", json.dumps(figures))


def _log_summary(log: Path, lines: int = 25) -> str:
    """The server log without the frames of its tracebacks: the server's own lines and each
    exception's message, short enough to survive pytest's truncation of a failure message."""
    kept = [ln for ln in log.read_text().splitlines()
            if ln.strip() and not ln.startswith(" ") and not ln.startswith("Traceback")]
    return "\n".join(kept[-lines:])


def test_the_server_processes_honour_revocation_and_cookie_flags(served):
    """Across processes: a token revoked with the CLI is refused by every server worker at
    once (no token cache), and the session cookie the server sets is HttpOnly and SameSite."""
    base, rt, w = served
    user, token, _ = w["users"][0]
    with requests.Session() as http:
        for _ in range(WORKERS * 2):     # new connections: spread over the workers
            assert requests.get(f"{base}/api/me", headers={"Authorization": f"Bearer {token}"},
                                timeout=30).status_code == 200
        env = {**os.environ, "DELULA_DATABASE_URL": w["url"], "PYTHONPATH": str(ROOT)}
        out = subprocess.run([sys.executable, "-m", "delula", "users", "revoke-token", user.username],
                             env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0 and json.loads(out.stdout)["revoked"] == 1
        for _ in range(WORKERS * 2):
            r = requests.get(f"{base}/api/me", headers={"Authorization": f"Bearer {token}"}, timeout=30)
            assert r.status_code == 401 and r.json()["message"]

        staff, _ = auth.create_user(rt, "gload_ops", role="ops", password="pw-gload-ops", with_token=False)
        page = http.get(f"{base}/login", timeout=30).text
        csrf = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        r = http.post(f"{base}/login", data={"username": "gload_ops", "password": "pw-gload-ops", "csrf": csrf},
                      allow_redirects=False, timeout=30)
        assert r.status_code == 302
        cookie = r.headers["Set-Cookie"]
        assert cookie.startswith("delula_session=") and "HttpOnly" in cookie and "SameSite=Lax" in cookie
        assert http.get(f"{base}/_dash-layout", timeout=30).status_code == 200
    with rt.store.begin() as s:
        assert accounts.ledger_mismatches(s) == []
