"""Load: 64 client threads over real HTTP against a real PostgreSQL, every invariant checked.

1,000 instant-claim attempts by 40 users with limited credits on a pool of 200 items (cost 2):
the users can afford 150 claims, so exactly 150 succeed; the rest are 400 insufficient credits or,
once a user is out, nothing else. The figures (claims/s, latency) are written to
``test-artifacts/load.json`` for ``docs/reliability.md``; nothing here asserts a timing.
"""
from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest

from delula import auth, recipes
from delula.storage import SYSTEM_BACKLOG_USER_ID, accounts
from delula.storage.models import ClaimEvent, CreditTransaction, Generation
from tests.support.api import bearer, claim_concurrently, make_app, percentile, serve
from tests.support.factories import add_pool_items

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
THREADS, ATTEMPTS, POOL, COST, USERS = 64, 1000, 200, 2, 40


@pytest.mark.slow
@pytest.mark.postgres
def test_64_threads_1000_attempts_keep_every_invariant(pg_rt):
    rt = pg_rt
    recipe = recipes.create_recipe(rt, name="Load", credit_cost=COST)
    pool_ids = set(add_pool_items(rt, recipe.id, POOL))
    rng = random.Random(8)
    budget = [rng.randint(0, 7) for _ in range(USERS)]
    # top up the budget so that exactly 150 claims are affordable (fewer than the pool)
    while sum(b // COST for b in budget) < 150:
        budget[rng.randrange(USERS)] += COST
    while sum(b // COST for b in budget) > 150:
        i = rng.randrange(USERS)
        if budget[i] >= COST:
            budget[i] -= COST
    affordable = sum(b // COST for b in budget)
    users = [(*auth.create_user(rt, f"load_{i}", credits=budget[i]), budget[i]) for i in range(USERS)]
    with serve(make_app(rt)) as base:   # every user tries 25 times: more than they can afford
        sent, elapsed = claim_concurrently(base, recipe.id, list(range(ATTEMPTS)),
                                           lambda n: bearer(users[n % USERS][1]))
    results = [(users[n % USERS][0].id, status, body, ms) for n, status, body, ms in sent]

    statuses = Counter(status for _, status, _, _ in results)
    assert len(results) == ATTEMPTS
    assert not [s for s in statuses if s >= 500], statuses                # zero 5xx
    assert set(statuses) <= {200, 400, 409}, statuses
    assert statuses[200] == min(POOL, affordable) == 150
    for _, status, body, _ in results:
        if status == 400:
            assert body["message"] == "Insufficient credits" and body["required"] == COST
            assert 0 <= body["available"] < COST
    won = Counter(uid for uid, status, _, _ in results if status == 200)
    ids = [body["generation"]["id"] for _, status, body, _ in results if status == 200]
    assert len(ids) == len(set(ids)) and set(ids) <= pool_ids              # no generation owned twice
    with rt.store.begin() as s:
        assert accounts.ledger_mismatches(s) == []                         # the ledger reconciles
        for user, _, initial in users:
            assert accounts.get_user(s, user.id).credits == initial - COST * won[user.id]
            assert won[user.id] == initial // COST                          # everyone got what they paid for
        owners = {g.id: g.user_id for g in s.query(Generation).filter(Generation.id.in_(pool_ids))}
        charges = Counter(t.generation_id for t in s.query(CreditTransaction)
                          .filter(CreditTransaction.kind == "instant_claim"))
        outcomes = Counter(e.outcome for e in s.query(ClaimEvent).filter(ClaimEvent.recipe_id == recipe.id))
    assert sorted(charges) == sorted(ids) and set(charges.values()) == {1}
    assert sum(1 for o in owners.values() if o != SYSTEM_BACKLOG_USER_ID) == 150
    # every attempt is one claim event, by outcome
    assert outcomes == Counter({"claimed": statuses[200], "insufficient_credits": statuses[400],
                                "race": statuses[409]}) - Counter()
    assert sum(outcomes.values()) == ATTEMPTS

    ok_ms = [ms for _, status, _, ms in results if status == 200]
    all_ms = [ms for *_, ms in results]
    figures = {"threads": THREADS, "attempts": ATTEMPTS, "pool": POOL, "affordable": affordable,
               "statuses": {str(k): v for k, v in sorted(statuses.items())},
               "attemptsPerSecond": round(ATTEMPTS / elapsed, 1), "seconds": round(elapsed, 2),
               "latencyMs": {"p50": round(percentile(all_ms, 50), 1), "p99": round(percentile(all_ms, 99), 1),
                             "claimedP50": round(percentile(ok_ms, 50), 1)}}
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "load.json").write_text(json.dumps(figures, indent=2))
    print("load test:", json.dumps(figures))
