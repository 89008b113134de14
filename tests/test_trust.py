"""Issue 13's trust rules on both databases: staff act for test accounts only (ops for any
account through the API, audited), idempotency keys bound to the request, a claimed item is its
new owner's (createdAt, creditsCharged), balances never below zero, and the audit trail — one
row per audited action, read through the API, the CLI and the domain."""
from __future__ import annotations

import random
import threading
from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from delula import audit, auth, claims, generations, queue_actions, recipes, schedule, sign_in
from delula.storage import SYSTEM_BACKLOG_USER_ID, accounts, stats
from delula.storage.models import AuditEvent, ClaimEvent, CreditTransaction, Generation
from tests.support.api import bearer
from tests.support.db import db_snapshot, events
from tests.support.factories import add_pool_items


def _instant(env, token, headers=None, **body):
    payload = {"recipeId": env.recipe.id, **body}
    return env.client.post("/api/generate/instant", json=payload, headers={**bearer(token), **(headers or {})})


def _audit_rows(rt) -> list[AuditEvent]:
    with rt.store.begin() as s:
        return list(s.query(AuditEvent).order_by(AuditEvent.id))


# --- staff act for test accounts only -----------------------------------------------------------

def test_product_staff_are_refused_for_a_real_account_and_only_the_attempt_is_recorded(env):
    """``other`` is a real customer: product staff may not spend their credits (403 with a message);
    the attempt is a ``forbidden`` claim event naming the actor, and nothing else changes."""
    before = db_snapshot(env.rt)
    r = _instant(env, env.product_token, targetUserId=env.other.id)
    assert r.status_code == 403 and "test accounts" in r.get_json()["message"]
    after = db_snapshot(env.rt)
    assert after.pop("events") == before.pop("events") + 1 and after == before
    with env.rt.store.begin() as s:
        event = s.query(ClaimEvent).one()
    assert (event.outcome, event.user_id, event.actor_id) == ("forbidden", env.other.id, env.product.id)
    assert _audit_rows(env.rt) == []
    # with an idempotency key too (the claim inside a transaction of its own)
    r = _instant(env, env.product_token, headers={"Idempotency-Key": "k-1"}, targetUserId=env.other.id)
    assert r.status_code == 403 and events(env.rt) == ["forbidden", "forbidden"]
    # the test account is fine
    assert _instant(env, env.product_token, targetUserId=env.user.id).status_code == 200


def test_ops_may_claim_for_a_real_account_and_it_is_audited(env):
    r = _instant(env, env.ops_token, targetUserId=env.other.id, headers={"X-Request-Id": "req-ops-1"})
    assert r.status_code == 200 and r.headers["X-Request-Id"] == "req-ops-1"
    gen = r.get_json()["generation"]
    (row,) = _audit_rows(env.rt)
    assert (row.action, row.actor_id, row.target_user_id, row.target_job_id, row.target_recipe_id) == \
        ("claim_for_user", env.ops.id, env.other.id, gen["id"], env.recipe.id)
    assert row.details == {"credits": 2} and row.request_id == "req-ops-1"
    with env.rt.store.begin() as s:
        charge = s.query(CreditTransaction).filter_by(kind="instant_claim").one()
        event = s.query(ClaimEvent).one()
    assert (charge.user_id, charge.actor_id) == (env.other.id, env.ops.id)
    assert (event.user_id, event.actor_id) == (env.other.id, env.ops.id)
    # a claim for oneself is not audited (nobody acted for anyone)
    assert _instant(env, env.user_token).status_code == 200 and len(_audit_rows(env.rt)) == 1


# --- idempotency bound to the request --------------------------------------------------------------

def test_an_idempotency_key_reused_for_another_request_is_422_and_changes_nothing(env):
    key = {"Idempotency-Key": "bound-1"}
    first = _instant(env, env.user_token, headers=key)
    assert first.status_code == 200
    before = db_snapshot(env.rt)
    for body in ({"recipeId": env.empty.id}, {"targetUserId": env.other.id}):
        r = env.client.post("/api/generate/instant", json={"recipeId": env.recipe.id, **body},
                            headers={**bearer(env.user_token), **key})
        assert r.status_code == 422 and r.get_json() == {"message": claims.KEY_REUSED_MESSAGE}
    assert db_snapshot(env.rt) == before
    again = _instant(env, env.user_token, headers=key)   # the same body: the first answer again
    assert (again.status_code, again.get_json()) == (200, first.get_json())
    assert db_snapshot(env.rt) == before


# --- a claimed item is its new owner's ---------------------------------------------------------------

def test_a_claimed_item_is_created_at_its_claim_and_charged(db_url, make_runtime):
    from delula.clock import ManualClock

    clock = ManualClock()
    rt = make_runtime(db_url, clock=clock)
    auth.ensure_system_user(rt)
    recipe = recipes.create_recipe(rt, name="Owned", credit_cost=3)
    made = rt.now()
    older = add_pool_items(rt, recipe.id, 1)
    user, _ = auth.create_user(rt, "owner", credits=10)
    clock.advance(60)
    with rt.store.begin() as s:   # a generation of the user's own, made after the item
        from delula.storage import jobs

        own = jobs.add_generation(s, user_id=user.id, recipe_id=recipe.id, form_data={}, meta={"source": "user"},
                                  priority=0, credits_charged=3, now=rt.now()).id
    clock.advance(60)
    result = claims.instant_claim(rt, recipe_id=recipe.id, user_id=user.id)
    gen = result.generation
    assert gen["id"] == older[0]
    assert gen["createdAt"] == rt.now().isoformat().replace("+00:00", "Z")
    assert gen["generatedAt"].startswith(made.strftime("%Y-%m-%dT%H:%M:%S"))
    assert gen["metadata"]["generatedAt"] == gen["generatedAt"]
    with rt.store.begin() as s:
        assert s.get(Generation, gen["id"]).credits_charged == 3
    # newest first by createdAt: the claim, then the user's own job
    listed = generations.list_generations(rt, user.id)
    assert [g.id for g in listed] == [gen["id"], own]
    assert generations.generation_json(listed[1])["generatedAt"] == generations.generation_json(listed[1])["createdAt"]


def test_backlog_lead_times_ignore_claimed_items(db_url, make_runtime):
    """A claimed item's createdAt is after its completion: it must not count (a negative lead)."""
    from delula.clock import ManualClock

    clock = ManualClock()
    rt = make_runtime(db_url, clock=clock)
    auth.ensure_system_user(rt)
    recipe = recipes.create_recipe(rt, name="Lead", credit_cost=1)
    start = rt.now()
    with rt.store.begin() as s:
        from delula.storage import jobs

        jobs.add_generations(s, [dict(user_id=SYSTEM_BACKLOG_USER_ID, recipe_id=recipe.id, status="completed",
                                      form_data={}, meta={"source": "backlog"}, created_at=start,
                                      completed_at=start + timedelta(minutes=m)) for m in (4, 6)], start)
    clock.advance(600)
    user, _ = auth.create_user(rt, "lead", credits=5)
    assert claims.instant_claim(rt, recipe_id=recipe.id, user_id=user.id).ok
    with rt.store.begin() as s:
        per_recipe, overall = stats.backlog_lead_times(s, start - timedelta(hours=1))
    assert per_recipe == {recipe.id: pytest.approx(6.0, abs=1e-3)} and overall == pytest.approx(6.0, abs=1e-3)


def test_no_balance_but_the_system_users_goes_below_zero(rt):
    user, _ = auth.create_user(rt, "floor", credits=1)
    with pytest.raises(IntegrityError), rt.store.begin() as s:
        s.execute(text("UPDATE users SET credits = -1 WHERE id = :id"), {"id": user.id})
    with rt.store.begin() as s:
        s.execute(text("UPDATE users SET credits = -5 WHERE id = :id"), {"id": SYSTEM_BACKLOG_USER_ID})
        assert accounts.get_user(s, user.id).credits == 1


# --- under parallel load -------------------------------------------------------------------------

@pytest.mark.postgres
def test_parallel_staff_claims_for_test_and_real_accounts_keep_every_invariant(pg_rt):
    """Product staff claim in 16 threads for test accounts and try real ones: every real attempt is
    refused (recorded, nothing charged), no item goes twice, credits and the ledger reconcile, and
    each claim for a test account has exactly one audit row."""
    rt = pg_rt
    recipe = recipes.create_recipe(rt, name="Parallel trust", credit_cost=1)
    pool_ids = set(add_pool_items(rt, recipe.id, 40))
    staff = [auth.create_user(rt, f"pm{i}", role="product")[0] for i in range(4)]
    testers = [auth.create_user(rt, f"tester{i}", credits=5, is_test=True)[0].id for i in range(8)]
    reals = [auth.create_user(rt, f"real{i}", credits=5)[0].id for i in range(8)]
    rng, lock, start = random.Random(13), threading.Lock(), threading.Barrier(16)
    results = []

    def worker():
        start.wait()
        for _ in range(20):
            with lock:
                actor, target = rng.choice(staff), rng.choice(testers + reals)
            r = claims.instant_claim(rt, recipe_id=recipe.id, user_id=target, actor_id=actor.id)
            with lock:
                results.append((actor.id, target, r))

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(results) == 320
    for _, target, r in results:
        if target in reals:
            assert r.outcome is claims.Outcome.FORBIDDEN
        else:
            assert r.outcome in (claims.Outcome.CLAIMED, claims.Outcome.INSUFFICIENT_CREDITS,
                                 claims.Outcome.NO_BACKLOG, claims.Outcome.RACE)
    won = [(actor, target, r.generation["id"]) for actor, target, r in results if r.ok]
    assert len(won) == 40                            # 8 testers x 5 credits = pool of 40
    assert len({gid for _, _, gid in won}) == len(won) and {gid for _, _, gid in won} == pool_ids
    wins = Counter(target for _, target, _ in won)
    with rt.store.begin() as s:
        assert accounts.ledger_mismatches(s) == []
        for uid in testers:
            assert accounts.get_user(s, uid).credits == 5 - wins[uid]
        for uid in reals:
            assert accounts.get_user(s, uid).credits == 5
        owners = {g.id: g.user_id for g in s.query(Generation).filter(Generation.id.in_(pool_ids))}
        charges = {t.generation_id: t.actor_id for t in s.query(CreditTransaction).filter_by(kind="instant_claim")}
        audited = {(e.actor_id, e.target_user_id, e.target_job_id) for e in s.query(AuditEvent)}
        outcomes = Counter(e.outcome for e in s.query(ClaimEvent))
        n_audit = s.query(AuditEvent).count()
    assert outcomes["forbidden"] == sum(1 for _, t, _ in results if t in reals)
    assert sum(outcomes.values()) == 320
    for actor, target, gid in won:
        assert owners[gid] == target and charges[gid] == actor
    assert audited == {(a, t, g) for a, t, g in won} and n_audit == 40


# --- the audit trail: one row per action ------------------------------------------------------------

def _setup_for_actions(rt):
    recipe = recipes.create_recipe(rt, name="Audited", credit_cost=2)
    add_pool_items(rt, recipe.id, 2)
    ops, _ = auth.create_user(rt, "op", role="ops", password=OPS_PASSWORD)
    pm, _ = auth.create_user(rt, "pm", role="product")
    tester, _ = auth.create_user(rt, "tess", credits=20, is_test=True)
    with rt.store.begin() as s:
        from delula.storage import jobs

        failed = jobs.add_generation(s, user_id=tester.id, recipe_id=recipe.id, form_data={}, meta={}, priority=0,
                                     credits_charged=0, now=rt.now(), status="failed").id
        pending = jobs.add_generation(s, user_id=tester.id, recipe_id=recipe.id, form_data={}, meta={},
                                      priority=0, credits_charged=0, now=rt.now(), status="pending").id
    return recipe, ops, pm, tester, failed, pending


# action: (do it, (actor, target user, job, recipe) expected; names resolved from the set-up)
AUDITED = {
    "claim_for_user": lambda rt, r, ops, pm, t, failed, pending: (
        claims.instant_claim(rt, recipe_id=r.id, user_id=t.id, actor_id=pm.id).generation["id"],
        (pm.id, t.id, "result", r.id)),
    "generate_for_user": lambda rt, r, ops, pm, t, failed, pending: (
        generations.create_user_generation(rt, user_id=t.id, recipe_id=r.id, form_data={},
                                           actor_id=pm.id).generation["id"],
        (pm.id, t.id, "result", r.id)),
    "top_up": lambda rt, r, ops, pm, t, failed, pending: (
        auth.top_up(rt, pm, t.id, 10), (pm.id, t.id, None, None)),
    "retry": lambda rt, r, ops, pm, t, failed, pending: (
        queue_actions.retry(rt, failed, actor_id=ops.id), (ops.id, t.id, failed, r.id)),
    "cancel": lambda rt, r, ops, pm, t, failed, pending: (
        queue_actions.cancel(rt, pending, actor_id=ops.id), (ops.id, t.id, pending, r.id)),
    "set_minimum": lambda rt, r, ops, pm, t, failed, pending: (
        recipes.set_min_backlog(rt, r.id, 7, actor_id=ops.id), (ops.id, None, None, r.id)),
    "run_now": lambda rt, r, ops, pm, t, failed, pending: (
        schedule.run_now(rt, "backlog-maintenance", actor_id=ops.id), (ops.id, None, None, None)),
    # accounts and sessions (the CLI acts with no actor; here ops act, as a future face would)
    "sign_in": lambda rt, r, ops, pm, t, failed, pending: (
        sign_in.attempt(rt, "op", OPS_PASSWORD, "10.0.0.1"), (ops.id, ops.id, None, None)),
    "sign_in_failed": lambda rt, r, ops, pm, t, failed, pending: (
        sign_in.attempt(rt, "op", "not-the-password", "10.0.0.1"), (None, ops.id, None, None)),
    "sign_out": lambda rt, r, ops, pm, t, failed, pending: (
        auth.sign_out(rt, pm.id, pm.session_epoch), (pm.id, pm.id, None, None)),
    "password_change": lambda rt, r, ops, pm, t, failed, pending: (
        auth.set_password(rt, "tess", "a-new-password", actor_id=ops.id), (ops.id, t.id, None, None)),
    "role_change": lambda rt, r, ops, pm, t, failed, pending: (
        auth.set_role(rt, "pm", "ops", actor_id=ops.id), (ops.id, pm.id, None, None)),
    "token_issue": lambda rt, r, ops, pm, t, failed, pending: (
        auth.issue_token(rt, "tess", actor_id=ops.id), (ops.id, t.id, None, None)),
    "token_revoke": lambda rt, r, ops, pm, t, failed, pending: (
        auth.revoke_tokens(rt, "tess", actor_id=ops.id), (ops.id, t.id, None, None)),
    "deactivate": lambda rt, r, ops, pm, t, failed, pending: (
        auth.deactivate(rt, "tess", actor_id=ops.id), (ops.id, t.id, None, None)),
}
OPS_PASSWORD = "op-password-1"


@pytest.mark.parametrize("action", sorted(AUDITED))
def test_every_audited_action_writes_exactly_one_row(rt, action):
    recipe, ops, pm, tester, failed, pending = _setup_for_actions(rt)
    with audit.request_context("req-" + action):
        result, (actor, target, job, recipe_id) = AUDITED[action](rt, recipe, ops, pm, tester, failed, pending)
    rows = _audit_rows(rt)
    assert len(rows) == 1, [(r.action, r.actor_id) for r in rows]
    row = rows[0]
    if job == "result":
        job = result
    assert (row.action, row.actor_id, row.target_user_id, row.target_job_id, row.target_recipe_id) == \
        (action, actor, target, job, recipe_id)
    assert row.request_id == "req-" + action
    (event,) = audit.events(rt)
    assert event["actor"] == {pm.id: "pm", ops.id: "op", None: None}[actor] and event["action"] == action


def test_users_grant_is_a_top_up_by_nobody_in_particular(rt):
    auth.create_user(rt, "granted")
    auth.grant(rt, "granted", 500)   # the command line: beyond DELULA_TOPUP_MAX, no actor
    (row,) = _audit_rows(rt)
    assert (row.action, row.actor_id, row.details) == ("top_up", None, {"credits": 500, "balance": 500})


def test_dashboard_top_ups_are_bounded_and_for_test_accounts_only(rt):
    pm, _ = auth.create_user(rt, "pm", role="product")
    ops, _ = auth.create_user(rt, "op", role="ops", password=OPS_PASSWORD)
    tester, _ = auth.create_user(rt, "tess", is_test=True)
    real, _ = auth.create_user(rt, "real")
    assert auth.top_up(rt, pm, tester.id, rt.settings.topup_max)[1] == 100
    for actor, target, amount in [(pm, tester.id, 101), (pm, tester.id, 0), (pm, real.id, 10), (ops, real.id, 10),
                                  (pm, ops.id, 10), (pm, SYSTEM_BACKLOG_USER_ID, 10), (pm, "u_nobody", 10)]:
        with pytest.raises(auth.AuthError) as refused:
            auth.top_up(rt, actor, target, amount)
        assert "DELULA_TOPUP_MAX" in str(refused.value) or "test accounts only" in str(refused.value)
    assert [u.username for u in auth.test_users(rt)] == ["tess"]
    assert [u.username for u in auth.test_users(rt, keep=real.id)] == ["tess"]
    assert len(_audit_rows(rt)) == 1


# --- readers -------------------------------------------------------------------------------------------

def test_the_api_serves_the_audit_trail_to_ops_only(env):
    assert _instant(env, env.ops_token, targetUserId=env.other.id).status_code == 200
    assert _instant(env, env.product_token, targetUserId=env.user.id).status_code == 200
    c = env.client
    r = c.get("/api/audit", headers=bearer(env.ops_token))
    assert r.status_code == 200
    rows = r.get_json()["events"]
    assert [(e["actor"], e["action"], e["targetUser"]) for e in rows] == \
        [("api_product", "claim_for_user", "api_user"), ("api_ops", "claim_for_user", "api_other")]
    assert set(rows[0]) == set(audit.FIELDS)
    got = c.get("/api/audit?actor=api_ops&action=claim_for_user&limit=5", headers=bearer(env.ops_token))
    assert [e["targetUser"] for e in got.get_json()["events"]] == ["api_other"]
    assert c.get("/api/audit?actor=nobody", headers=bearer(env.ops_token)).get_json() == {"events": []}
    future = (env.rt.now() + timedelta(hours=1)).isoformat()
    assert c.get("/api/audit", query_string={"since": future}, headers=bearer(env.ops_token)).get_json() == \
        {"events": []}
    for query in ("since=yesterday", "limit=0", "limit=1001", "limit=x", "action=steal", "colour=red"):
        r = c.get(f"/api/audit?{query}", headers=bearer(env.ops_token))
        assert r.status_code == 400 and r.is_json and r.get_json()["message"], query
    for token in (env.product_token, env.user_token):
        assert c.get("/api/audit", headers=bearer(token)).status_code == 403
    assert c.get("/api/audit").status_code == 401


def test_a_request_id_is_echoed_and_made_when_missing(env):
    r = env.client.get("/api/me", headers=bearer(env.user_token))
    assert len(r.headers["X-Request-Id"]) == 32
    r = env.client.get("/api/me", headers={**bearer(env.user_token), "X-Request-Id": "bad id with spaces"})
    assert r.headers["X-Request-Id"] != "bad id with spaces"


def test_csv_export_makes_formulas_inert():
    rows = [{"id": 1, "at": "2026-12-01T00:00:00Z", "actor": "=cmd()", "actorId": "u1", "action": "top_up",
             "targetUser": "+x", "targetUserId": "u2", "targetJobId": None, "targetRecipeId": None,
             "details": {"credits": 10}, "requestId": "@r"}]
    text_ = audit.to_csv(rows)
    header, line = text_.splitlines()
    assert header.split(",") == list(audit.FIELDS)
    assert "'=cmd()" in line and "'+x" in line and "'@r" in line and '"{""credits"":10}"' in line
