"""Bulk actions on the queue (issue 16): ``queue_actions.bulk`` on real databases, its batches,
its rules, two operators racing over the same jobs, ``POST /api/jobs/retry`` and ``/cancel``, and
the queue page's bulk callbacks.

The browser test (select rows, Retry selected, the confirmation, the result) is in
``test_browser_queue.py``.
"""
from __future__ import annotations

import threading

import pytest
from sqlalchemy import event, select

from delula import audit, auth, generations, queue_actions, recipes
from delula.queue_actions import CANCEL, RETRY, JobFilter
from delula.storage import SYSTEM_BACKLOG_USER_ID, accounts, jobs
from delula.storage.models import CreditTransaction
from tests.support.api import bearer, make_app
from tests.support.dash import callback_body, signed_in
from tests.support.db import db_snapshot

EVERY_STATUS = ("pending", "processing", "completed", "failed", "cancelled", "expired")


class CancelRecorder:
    """A provider that only records the submissions it is asked to cancel."""

    name = "recorder"

    def __init__(self):
        self.cancels: list[str] = []
        self._lock = threading.Lock()

    def cancel(self, sub) -> None:
        with self._lock:
            self.cancels.append(sub.request_id)


# --- helpers ---------------------------------------------------------------------------------

def _recipe(rt, name="Bulk recipe", cost=2):
    return recipes.create_recipe(rt, name=name, credit_cost=cost)


def _job(rt, recipe_id: int, status: str, *, user_id: str = SYSTEM_BACKLOG_USER_ID, submitted: bool = False) -> int:
    """A job as the queue service leaves it; ``submitted``: with a provider request."""
    source = "backlog" if user_id == SYSTEM_BACKLOG_USER_ID else "user"
    meta = {"source": source}
    with rt.store.begin() as s:
        gen = jobs.add_generation(s, user_id=user_id, recipe_id=recipe_id, form_data={}, meta=meta, priority=10,
                                  credits_charged=0, now=rt.now(), status=status)
        if submitted:
            rid = f"req-{gen.id}"
            gen.provider_request_id = rid
            gen.meta = {**meta, "provider": {"request_id": rid, "status_url": f"x://{rid}/status",
                                             "response_url": f"x://{rid}", "cancel_url": f"x://{rid}/cancel"}}
        if status == "failed":
            gen.attempts, gen.error = 3, "provider: timed out"
        return gen.id


def _every_status(rt, recipe_id: int, n: int = 2) -> dict[str, list[int]]:
    return {st: [_job(rt, recipe_id, st) for _ in range(n)] for st in EVERY_STATUS}


def _user_jobs(rt, recipe_id: int, user, n: int) -> list[int]:
    """``n`` charged user generations (pending) of ``user``."""
    ids = []
    for _ in range(n):
        result = generations.create_user_generation(rt, user_id=user.id, recipe_id=recipe_id, form_data={})
        assert result.status_code == 202, result.body
        ids.append(result.generation["id"])
    return ids


def _statuses(rt, ids) -> dict[int, str]:
    with rt.store.begin() as s:
        return jobs.statuses_of(s, list(ids))


def _refunds(rt) -> list[int]:
    """The generation of every refund row."""
    with rt.store.begin() as s:
        return sorted(s.scalars(select(CreditTransaction.generation_id).where(CreditTransaction.kind == "refund")))


def _credits(rt, user_id: str) -> int:
    with rt.store.begin() as s:
        assert accounts.ledger_mismatches(s) == []
        return accounts.get_user(s, user_id).credits


def _bulk_events(rt) -> list[dict]:
    return [e for e in reversed(audit.events(rt)) if e["action"].startswith("bulk_")]


class Transactions:
    """Counts the commits of ``rt``'s engine and the statements run, by kind."""

    def __init__(self, rt):
        self.commits = 0
        self.statements: list[str] = []
        event.listen(rt.store.engine, "commit", self._commit)
        event.listen(rt.store.engine, "before_cursor_execute", self._statement)

    def _commit(self, conn):
        self.commits += 1

    def _statement(self, conn, cursor, statement, parameters, context, executemany):
        self.statements.append(" ".join(statement.split()))

    def count(self, fragment: str) -> int:
        return sum(1 for st in self.statements if fragment in st.upper())


# --- the rules -------------------------------------------------------------------------------

def test_bulk_retry_by_ids_retries_only_failed_jobs(rt):
    recipe = _recipe(rt)
    by_status = _every_status(rt, recipe.id)
    everything = [gid for ids in by_status.values() for gid in ids]
    result = queue_actions.bulk(rt, RETRY, ids=everything + [everything[0], 987654], actor_id=None)
    assert result == {"done": 2, "skipped": len(everything) - 2 + 1}   # the repeated id counts once
    after = _statuses(rt, everything)
    for status, ids in by_status.items():
        expected = "pending" if status == "failed" else status
        assert [after[gid] for gid in ids] == [expected] * len(ids), status
    retried = generations.get_generation(rt, by_status["failed"][0])
    assert (retried.attempts, retried.error, retried.meta["retriedAt"]) == (0, None, retried.updated_at.isoformat())
    assert [(e["action"], e["details"]) for e in _bulk_events(rt)] == [
        ("bulk_retry", {"done": 2, "skipped": len(everything) - 1, "ids": len(everything) + 1})]


def test_bulk_cancel_by_filter_cancels_pending_and_processing_refunds_once_and_stops_the_provider(db_url,
                                                                                                  make_runtime):
    rt = make_runtime(db_url, provider=CancelRecorder())
    auth.ensure_system_user(rt)
    recipe = _recipe(rt, cost=3)
    user, _ = auth.create_user(rt, "bulk_ana", credits=30)
    charged = _user_jobs(rt, recipe.id, user, 4)
    assert _credits(rt, user.id) == 18
    submitted = _job(rt, recipe.id, "processing", submitted=True)
    unsubmitted = _job(rt, recipe.id, "processing")
    left = [_job(rt, recipe.id, st) for st in ("completed", "failed", "cancelled", "expired")]
    ops, _ = auth.create_user(rt, "bulk_ops", role="ops")

    result = queue_actions.bulk(rt, CANCEL, filter=JobFilter(), actor_id=ops.id)
    assert result == {"done": 6, "skipped": 0}
    assert set(_statuses(rt, charged + [submitted, unsubmitted]).values()) == {"cancelled"}
    assert [_statuses(rt, left)[gid] for gid in left] == ["completed", "failed", "cancelled", "expired"]
    assert generations.get_generation(rt, charged[0]).error == queue_actions.CANCEL_ERROR
    assert _refunds(rt) == sorted(charged) and _credits(rt, user.id) == 30
    assert rt.provider.cancels == [f"req-{submitted}"]           # only what was submitted
    [e] = _bulk_events(rt)
    assert (e["action"], e["actorId"], e["details"]) == ("bulk_cancel", ops.id, {"done": 6, "skipped": 0,
                                                                                "filter": {}})
    # a second pass finds nothing to do and refunds nothing more; a cancelled job stays cancelled
    assert queue_actions.bulk(rt, CANCEL, ids=charged) == {"done": 0, "skipped": 4}
    assert queue_actions.bulk(rt, RETRY, ids=charged) == {"done": 0, "skipped": 4}
    assert _refunds(rt) == sorted(charged) and _credits(rt, user.id) == 30


def test_a_filter_narrows_by_status_recipe_and_source(rt):
    one, two = _recipe(rt, "One"), _recipe(rt, "Two")
    user, _ = auth.create_user(rt, "bulk_bo", credits=10)
    backlog_failed = _job(rt, one.id, "failed")
    users_failed = _job(rt, one.id, "failed", user_id=user.id)
    users_cancelled = _job(rt, one.id, "cancelled", user_id=user.id)
    other_recipe = _job(rt, two.id, "failed")
    assert queue_actions.matching(rt, RETRY, JobFilter(recipe_id=one.id)) == (2, False)   # not the cancelled
    assert queue_actions.matching(rt, RETRY, JobFilter(source="user")) == (1, False)
    assert queue_actions.bulk(rt, RETRY, filter=JobFilter(statuses=("failed",), recipe_id=one.id,
                                                          source="user")) == {"done": 1, "skipped": 0}
    assert _statuses(rt, [backlog_failed, users_failed, users_cancelled, other_recipe]) == {
        backlog_failed: "failed", users_failed: "pending", users_cancelled: "cancelled", other_recipe: "failed"}
    assert queue_actions.bulk(rt, RETRY, filter=JobFilter(source="backlog")) == {"done": 2, "skipped": 0}
    assert queue_actions.bulk(rt, RETRY, filter=JobFilter(recipe_id=424242)) == {"done": 0, "skipped": 0}
    [*_, last] = _bulk_events(rt)
    assert last["details"] == {"done": 0, "skipped": 0, "filter": {"recipeId": 424242}}
    assert last["targetRecipeId"] == 424242


def test_the_matching_count_is_bounded(rt, monkeypatch):
    recipe = _recipe(rt)
    for _ in range(7):
        _job(rt, recipe.id, "failed")
    _job(rt, recipe.id, "pending")
    monkeypatch.setattr(queue_actions, "COUNT_LIMIT", 5)
    assert queue_actions.matching(rt, RETRY, JobFilter()) == (5, True)
    assert queue_actions.matching(rt, CANCEL, JobFilter()) == (1, False)
    monkeypatch.setattr(queue_actions, "COUNT_LIMIT", 7)
    assert queue_actions.matching(rt, RETRY, JobFilter()) == (7, False)


def test_narrow_keeps_the_statuses_an_action_applies_to():
    assert queue_actions.narrow(RETRY, ["failed", "pending"]) == JobFilter(statuses=("failed",))
    assert queue_actions.narrow(CANCEL, ["failed", "pending"], 3, "user") == JobFilter(("pending",), 3, "user")
    assert queue_actions.narrow(RETRY, []) == JobFilter()
    assert queue_actions.narrow(RETRY, ["completed"]) is None    # chosen statuses, none retryable


@pytest.mark.parametrize("ids, where, errors", [
    (None, None, {"body": "send either ids or filter"}),
    ([1], JobFilter(), {"body": "send either ids or filter, not both"}),
    ([], None, {"ids": queue_actions.IDS_RULE}),
    ([1, "2"], None, {"ids": queue_actions.IDS_RULE}),
    ([1, True], None, {"ids": queue_actions.IDS_RULE}),
    ([-1], None, {"ids": queue_actions.IDS_RULE}),
    ([2**63], None, {"ids": queue_actions.IDS_RULE}),
    (list(range(queue_actions.MAX_IDS + 1)), None, {"ids": queue_actions.IDS_RULE}),
    (None, {"status": "failed"}, {"filter": queue_actions.FILTER_RULE}),
    (None, JobFilter(statuses=("completed",)),
     {"filter.status": "completed jobs are never retried; only failed jobs can be retried"}),
    (None, JobFilter(statuses=("failed", "pending")),
     {"filter.status": "pending jobs are never retried; only failed jobs can be retried"}),
    (None, JobFilter(statuses=("bogus",)),
     {"filter.status": "is not a job status (pending, processing, completed, failed, cancelled, expired, rejected)"}),
    (None, JobFilter(statuses="failed"),
     {"filter.status": "is not a job status (pending, processing, completed, failed, cancelled, expired, rejected)"}),
    (None, JobFilter(recipe_id="3", source="nobody"),
     {"filter.recipeId": queue_actions.RECIPE_RULE, "filter.source": "must be user or backlog"}),
])
def test_bad_requests_are_refused_before_anything_changes(rt, ids, where, errors):
    recipe = _recipe(rt)
    _every_status(rt, recipe.id, 1)
    before = db_snapshot(rt)
    with pytest.raises(queue_actions.BulkRefused) as refused:
        queue_actions.bulk(rt, RETRY, ids=ids, filter=where)
    assert refused.value.errors == errors
    assert db_snapshot(rt) == before and _bulk_events(rt) == []


def test_the_single_job_actions_still_refuse_readably(rt):
    recipe = _recipe(rt)
    done = _job(rt, recipe.id, "completed")
    with pytest.raises(queue_actions.QueueError, match=f"generation {done} is completed; only failed jobs"):
        queue_actions.retry(rt, done)
    with pytest.raises(queue_actions.QueueError, match="only pending or processing jobs can be cancelled"):
        queue_actions.cancel(rt, done)
    assert queue_actions.allowed("failed") == [RETRY] and queue_actions.allowed("processing") == [CANCEL]
    assert queue_actions.allowed("completed") == []


# --- batches ---------------------------------------------------------------------------------

def test_a_bulk_action_commits_batch_by_batch_in_set_based_statements(rt, monkeypatch):
    monkeypatch.setattr(queue_actions, "BATCH_SIZE", 7)
    recipe = _recipe(rt)
    failed = [_job(rt, recipe.id, "failed") for _ in range(30)]
    seen = Transactions(rt)
    assert queue_actions.bulk(rt, RETRY, ids=failed) == {"done": 30, "skipped": 0}
    assert seen.commits == 5                             # 7 + 7 + 7 + 7 + 2, the audit event in the last
    assert seen.count("UPDATE GENERATIONS") == 5         # one conditional statement per batch
    assert seen.count("INSERT INTO AUDIT_EVENTS ") == 1

    for _ in range(28):
        _job(rt, recipe.id, "failed")
    seen = Transactions(rt)
    assert queue_actions.bulk(rt, RETRY, filter=JobFilter(statuses=("failed",))) == {"done": 28, "skipped": 0}
    assert seen.commits == 4 and seen.count("UPDATE GENERATIONS") == 4   # 4 × 7: no empty fifth one
    pages = [st for st in seen.statements if st.upper().startswith("SELECT GENERATIONS.ID")]
    assert len(pages) == 4                               # keyset pages: id > the last one, never OFFSET
    assert all("generations.id >" in st for st in pages)
    if rt.store.is_postgres:  # SQLite's dialect writes every LIMIT as "LIMIT ? OFFSET ?", with 0
        assert not [st for st in pages if "OFFSET" in st.upper()]
    assert not [st for st in seen.statements if "count(" in st.lower()]
    assert [e["details"]["done"] for e in _bulk_events(rt)] == [30, 28]


def test_a_failing_batch_leaves_the_batches_before_it_done_and_audited(rt, monkeypatch):
    monkeypatch.setattr(queue_actions, "BATCH_SIZE", 4)
    recipe = _recipe(rt)
    failed = [_job(rt, recipe.id, "failed") for _ in range(10)]
    real = jobs.retry_jobs
    calls = []

    def third_fails(s, ids, now):
        calls.append(ids)
        if len(calls) == 3:
            raise RuntimeError("the database went away")
        return real(s, ids, now)

    monkeypatch.setattr(jobs, "retry_jobs", third_fails)
    with pytest.raises(RuntimeError):
        queue_actions.bulk(rt, RETRY, ids=failed)
    after = _statuses(rt, failed)
    assert [after[g] for g in failed] == ["pending"] * 8 + ["failed"] * 2
    [e] = _bulk_events(rt)
    assert e["details"] == {"done": 8, "skipped": 0, "ids": 10, "interrupted": True}


# --- two operators at once -------------------------------------------------------------------

@pytest.mark.postgres
def test_operators_bulk_cancelling_the_same_jobs_at_once_cancel_and_refund_each_once(pg_url, make_runtime,
                                                                                    monkeypatch):
    """Three operators, each with its own connection pool, cancel the same 300 charged user jobs
    of three users at once, in batches of 50: one by all the ids, one by the upper half's ids
    (so it starts where the first one ends), one by filter. Every job is cancelled by one of
    them only, refunded once, and the credits add up; each operator accounts for what it asked."""
    runtimes = [make_runtime(pg_url, provider=CancelRecorder()) for _ in range(3)]
    rt = runtimes[0]
    auth.ensure_system_user(rt)
    recipe = _recipe(rt, cost=1)
    users = [auth.create_user(rt, f"bulk_racer{i}", credits=100)[0] for i in range(3)]
    ids = sorted(gid for user in users for gid in _user_jobs(rt, recipe.id, user, 100))
    assert len(ids) == 300 and all(_credits(rt, u.id) == 0 for u in users)
    monkeypatch.setattr(queue_actions, "BATCH_SIZE", 50)
    requests = {"all ids": {"ids": ids}, "upper half": {"ids": ids[150:]}, "filter": {"filter": JobFilter()}}
    barrier = threading.Barrier(len(requests))
    results, errors = {}, []

    def operator(name, r):
        barrier.wait()
        try:
            results[name] = queue_actions.bulk(r, CANCEL, **requests[name])
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=operator, args=(name, r)) for name, r in zip(requests, runtimes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert sum(r["done"] for r in results.values()) == 300
    assert sum(results["all ids"].values()) == 300 and sum(results["upper half"].values()) == 150
    assert sum(results["filter"].values()) <= 300          # the jobs its walk met still pending
    assert set(_statuses(rt, ids).values()) == {"cancelled"}
    assert _refunds(rt) == ids                                                # one refund per job
    assert all(_credits(rt, u.id) == 100 for u in users)
    events = _bulk_events(rt)
    assert sorted(e["details"]["done"] for e in events) == sorted(r["done"] for r in results.values())


# --- the API ---------------------------------------------------------------------------------

@pytest.fixture
def api_env(rt):
    recipe = _recipe(rt)
    tokens = {role: auth.create_user(rt, f"api_bulk_{role}", role=role, credits=5)[1]
              for role in ("user", "product", "ops")}
    return rt, make_app(rt).test_client(), recipe, tokens


def test_the_api_retries_and_cancels_in_bulk(api_env):
    rt, c, recipe, tokens = api_env
    by_status = _every_status(rt, recipe.id)
    r = c.post("/api/jobs/retry", json={"ids": by_status["failed"] + by_status["completed"] + [99999]},
               headers=bearer(tokens["ops"]))
    assert (r.status_code, r.get_json()) == (200, {"done": 2, "skipped": 3})
    r = c.post("/api/jobs/cancel", json={"filter": {"status": "pending", "recipeId": recipe.id, "source": "backlog"}},
               headers=bearer(tokens["ops"]))
    # the two pending jobs, and the two retried ones (pending again now)
    assert (r.status_code, r.get_json()) == (200, {"done": 4, "skipped": 0})
    assert set(_statuses(rt, by_status["pending"] + by_status["failed"]).values()) == {"cancelled"}
    assert _statuses(rt, by_status["processing"]) == {gid: "processing" for gid in by_status["processing"]}
    events = _bulk_events(rt)
    assert [(e["action"], e["actor"], e["details"]) for e in events] == [
        ("bulk_retry", "api_bulk_ops", {"done": 2, "skipped": 3, "ids": 5}),
        ("bulk_cancel", "api_bulk_ops", {"done": 4, "skipped": 0,
                                         "filter": {"status": "pending", "recipeId": recipe.id, "source": "backlog"}})]
    assert all(e["requestId"] for e in events)


@pytest.mark.parametrize("path, body, errors", [
    ("/api/jobs/retry", {}, {"body": "send either ids or filter"}),
    ("/api/jobs/retry", {"ids": [1], "filter": {}}, {"body": "send either ids or filter, not both"}),
    ("/api/jobs/retry", {"ids": []}, {"ids": queue_actions.IDS_RULE}),
    ("/api/jobs/cancel", {"ids": [1, "2"]}, {"ids": queue_actions.IDS_RULE}),
    ("/api/jobs/cancel", {"ids": [1.0]}, {"ids": queue_actions.IDS_RULE}),
    ("/api/jobs/cancel", {"ids": None}, {"ids": queue_actions.IDS_RULE}),
    ("/api/jobs/cancel", {"ids": list(range(queue_actions.MAX_IDS + 1))}, {"ids": queue_actions.IDS_RULE}),
    ("/api/jobs/retry", {"filter": None}, {"filter": queue_actions.FILTER_RULE}),
    ("/api/jobs/retry", {"filter": {"state": "failed"}}, {"filter.state": "is not a field of this request"}),
    ("/api/jobs/retry", {"filter": {"status": "bogus"}},
     {"filter.status": "is not a job status (pending, processing, completed, failed, cancelled, expired, rejected)"}),
    ("/api/jobs/retry", {"filter": {"status": "completed"}},
     {"filter.status": "completed jobs are never retried; only failed jobs can be retried"}),
    ("/api/jobs/cancel", {"filter": {"status": "failed"}},
     {"filter.status": "failed jobs are never cancelled; only pending or processing jobs can be cancelled"}),
    ("/api/jobs/cancel", {"filter": {"source": "robots", "recipeId": "1"}},
     {"filter.source": "must be user or backlog", "filter.recipeId": queue_actions.RECIPE_RULE}),
    ("/api/jobs/cancel", {"ids": [1], "note": "x"}, {"note": "is not a field of this request"}),
])
def test_bad_bodies_are_400_and_change_nothing(api_env, path, body, errors):
    rt, c, recipe, tokens = api_env
    _every_status(rt, recipe.id, 1)
    before = db_snapshot(rt)
    r = c.post(path, json=body, headers=bearer(tokens["ops"]))
    assert (r.status_code, r.get_json()) == (400, {"message": "Invalid request body", "errors": errors})
    assert db_snapshot(rt) == before and _bulk_events(rt) == []


def test_only_ops_may_act_in_bulk(api_env):
    rt, c, recipe, tokens = api_env
    failed = _job(rt, recipe.id, "failed")
    pending = _job(rt, recipe.id, "pending")
    before = db_snapshot(rt)
    for path, body in (("/api/jobs/retry", {"ids": [failed]}), ("/api/jobs/cancel", {"filter": {}})):
        for role in ("user", "product"):
            r = c.post(path, json=body, headers=bearer(tokens[role]))
            assert (r.status_code, r.get_json()) == (403, {"message": "This needs the role ops"})
        r = c.post(path, json=body)
        assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
        r = c.post(path, json=body, headers=bearer("not-a-token"))
        assert r.status_code == 401
    assert c.post("/api/jobs/retry", data="{}", headers={**bearer(tokens["ops"]),
                                                         "Content-Type": "text/plain"}).status_code == 415
    assert db_snapshot(rt) == before and _bulk_events(rt) == []
    assert _statuses(rt, [failed, pending]) == {failed: "failed", pending: "pending"}


# --- the queue page --------------------------------------------------------------------------

def test_the_pages_bulk_helpers(sqlite_url, make_runtime):
    import app as app_module

    app_module.create_app(make_runtime(sqlite_url), start_scheduler=False)   # pages register with an app
    from pages import queue as page

    rows = [{"id": 1, "status": "failed"}, {"id": 2, "status": "pending"}, {"id": 3, "status": "cancelled"}]
    selected = [{"id": 1, "status": "failed"}, {"id": 2, "status": "failed"}, {"id": 3, "status": "cancelled"},
                {"id": 9, "status": "failed"}, {"id": "x"}, "junk"]
    assert page.selected_ids(RETRY, selected, rows) == [1, 9]   # 2 is pending now, 3 cancelled; 9 scrolled away
    assert page.selected_ids(CANCEL, selected, rows) == [2]
    assert page.selected_label(RETRY, 2) == "Retry selected (2)"
    assert page.matching_label(CANCEL, 10_000, True) == "Cancel all 10,000+ matching"
    assert page.bulk_question(RETRY, 1, matching=False).startswith("Retry 1 job selected?")
    assert page.bulk_question(CANCEL, 12, matching=True).startswith(
        "Cancel all 12 jobs matching the filters (only pending or processing jobs can be cancelled, of any age)?")
    assert page.bulk_result(RETRY, {"done": 198, "skipped": 2}) == "Retried 198, skipped 2."
    assert page.bulk_filter(RETRY, page.parse_filters("completed")) is None
    assert page.bulk_filter(CANCEL, page.parse_filters("pending,failed", "3", "user")) == JobFilter(("pending",), 3,
                                                                                                    "user")


def _confirm(dash_app, request):
    return callback_body(dash_app, "queue-grid.deselectAll",
                         inputs=[{"id": "queue-bulk-confirm", "property": "n_clicks", "value": 1}],
                         state=[{"id": "queue-bulk-request", "property": "data", "value": request}])


def test_the_bulk_callback_checks_the_role_itself(world):
    """A product session posts the ops-only bulk confirmation directly: refused, nothing changes;
    ops may, and a hand-made bad request is refused by the domain's rules."""
    rt, dash_app, users, _ = world
    failed = [_job(rt, 3, "failed") for _ in range(3)]
    body = _confirm(dash_app, {"action": "retry", "ids": failed})
    before = db_snapshot(rt)
    for role in ("product", "user"):
        r = signed_in(dash_app, role).post("/_dash-update-component", json=body)
        assert r.status_code == 403
    assert db_snapshot(rt) == before
    ops = signed_in(dash_app, "ops")
    r = ops.post("/_dash-update-component", json=body)
    assert r.status_code == 200, r.get_data(as_text=True)[:300]
    assert "Retried 3, skipped 0." in r.get_data(as_text=True)
    assert set(_statuses(rt, failed).values()) == {"pending"}
    for bad in ({"action": "retry", "ids": ["1"]}, {"action": "retry", "filter": {"statuses": ["completed"]}},
                {"action": "retry", "ids": failed, "filter": {}}, {"action": "delete", "ids": failed}):
        before = db_snapshot(rt)
        r = ops.post("/_dash-update-component", json=_confirm(dash_app, bad))
        text = r.get_data(as_text=True)
        assert r.status_code == 200 and ("Not done" in text or "Unknown action" in text), (bad, text[:300])
        assert db_snapshot(rt) == before
    r = ops.post("/_dash-update-component", json=_confirm(dash_app, {"action": "cancel", "filter": {
        "statuses": ["pending"], "recipe": 3, "source": "backlog"}}))
    assert "Cancelled 3, skipped 0." in r.get_data(as_text=True)
    assert [e["details"]["filter"] for e in _bulk_events(rt)[-1:]] == [
        {"status": "pending", "recipeId": 3, "source": "backlog"}]


def test_a_filter_takes_every_32_bit_recipe_id_the_document_allows(rt):
    """The document's bounds are the rule's: the smallest and largest 32-bit ids are accepted (and
    match nothing), one past them is refused."""
    for recipe_id in (-2**31, 2**31 - 1):
        assert queue_actions.bulk(rt, RETRY, filter=JobFilter(statuses=("failed",), recipe_id=recipe_id)) == {
            "done": 0, "skipped": 0}
    with pytest.raises(queue_actions.BulkRefused):
        queue_actions.bulk(rt, RETRY, filter=JobFilter(statuses=("failed",), recipe_id=2**31))
