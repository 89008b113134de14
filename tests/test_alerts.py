"""Alerts: the rules and for-durations (pure, table-driven), fire-once and resolve-once with
evaluators racing on real PostgreSQL connections, delivery with retries to a local webhook, the
no-leader watchdog, the overview's panel, docs/alerts.yml against a real /metrics scrape, and
the issue's demonstration with a real worker process."""
from __future__ import annotations

import os
import re
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from delula import alerts, auth, breaker, pauses, recipes, scheduler
from delula.clock import ManualClock
from delula.storage import alerts as store
from delula.storage import counters, jobs
from delula.storage import schedule as store_schedule
from delula.storage.models import SYSTEM_BACKLOG_USER_ID, AlertNotification
from tests.support.api import bearer, make_app
from tests.support.db import test_settings, wait_for_a_lock_wait
from tests.support.factories import add_pool_items, world
from tests.support.processes import ROOT, spawn, stop_processes, worker_env
from tests.support.waiting import wait_for
from tests.support.webhook import Receiver

T0 = datetime(2026, 3, 10, 12, 0, tzinfo=timezone.utc)
SETTINGS = test_settings("sqlite://", alert_below_min_minutes=10, alert_hit_rate=0.9, alert_failure_rate=0.25)


# --- the rules (pure) ---------------------------------------------------------------------------

def _row(rid=1, completed=0, minimum=2, **kw):
    return {"recipeId": rid, "name": f"Recipe {rid}", "completed": completed, "minimum": minimum, "inFlight": 0, **kw}


def _breaker(state):
    return {"provider": "simulator", "state": state, "failures": 5, "threshold": 5, "lastError": "HTTP 503"}


@pytest.mark.parametrize("obs, expected", [
    (alerts.Observations(), {}),
    (alerts.Observations(backlog=(_row(1, 0, 2), _row(2, 2, 2), _row(3, 0, 0), _row(4, 1, 3))),
     {"below_minimum:1": (0, 2), "below_minimum:4": (1, 3)}),
    # the hit rate: judged from MIN_ATTEMPTS attempts on, strictly below the threshold
    (alerts.Observations(hit_rate={"attempts": 19, "hits": 0, "hitRate": 0.0}), {}),
    (alerts.Observations(hit_rate={"attempts": 20, "hits": 17, "hitRate": 0.85}), {"hit_rate": (0.85, 0.9)}),
    (alerts.Observations(hit_rate={"attempts": 20, "hits": 18, "hitRate": 0.9}), {}),
    (alerts.Observations(hit_rate={"attempts": 0, "hits": 0, "hitRate": None}), {}),
    # the breaker: anything but closed
    (alerts.Observations(breaker=_breaker("closed")), {}),
    (alerts.Observations(breaker=_breaker("open")), {"breaker_open": (5, 5)}),
    (alerts.Observations(breaker=_breaker("half_open")), {"breaker_open": (5, 5)}),
    # the failure rate: failed / (completed + failed), from MIN_FINISHED jobs on, strictly above
    (alerts.Observations(finished={"completed": 5, "failed": 4}), {}),
    (alerts.Observations(finished={"completed": 7, "failed": 3, "cancelled": 20}), {"failure_rate": (0.3, 0.25)}),
    (alerts.Observations(finished={"completed": 30, "failed": 10}), {}),
    (alerts.Observations(finished={"failed": 10}), {"failure_rate": (1.0, 0.25)}),
    # the leader: over a minute without a heartbeat
    (alerts.Observations(leaderless_s=60.0), {}),
    (alerts.Observations(leaderless_s=60.5), {"no_leader": (60.5, 60.0)}),
])
def test_the_rules_hold_where_their_thresholds_say(obs, expected):
    held = alerts.conditions(obs, SETTINGS)
    assert {k: (c.value, c.threshold) for k, c in held.items()} == {
        k: (pytest.approx(v), t) for k, (v, t) in expected.items()}
    for key, c in held.items():
        assert c.key == key and c.rule in alerts.RULES and c.summary


def test_rules_not_asked_for_are_not_evaluated():
    obs = alerts.Observations(backlog=(_row(),), leaderless_s=600.0, breaker=_breaker("open"))
    assert set(alerts.conditions(obs, SETTINGS, rules=(alerts.NO_LEADER,))) == {"no_leader"}
    held = alerts.conditions(obs, SETTINGS)
    assert held["below_minimum:1"].recipe_id == 1 and held["below_minimum:1"].summary == (
        "Recipe 1 has 0 ready, below its minimum of 2 (0 in flight)")
    assert "paused" in alerts.conditions(alerts.Observations(backlog=(_row(paused=True),)), SETTINGS)[
        "below_minimum:1"].summary


def test_only_below_minimum_waits():
    assert alerts.hold_for(alerts.BELOW_MINIMUM, SETTINGS) == timedelta(minutes=10)
    assert alerts.hold_for(alerts.BELOW_MINIMUM, SETTINGS.replace(alert_below_min_minutes=0.05)) == timedelta(seconds=3)
    for rule in (alerts.HIT_RATE, alerts.BREAKER_OPEN, alerts.NO_LEADER, alerts.FAILURE_RATE):
        assert alerts.hold_for(rule, SETTINGS) == timedelta(0)


TEN = timedelta(minutes=10)


@pytest.mark.parametrize("state, pending_for, holds, hold, step", [
    (None, None, True, TEN, alerts.START),
    (None, None, True, timedelta(0), alerts.FIRE),
    (None, None, False, TEN, None),
    ("resolved", None, True, TEN, alerts.START),
    ("resolved", None, True, timedelta(0), alerts.FIRE),
    ("resolved", None, False, TEN, None),
    ("pending", timedelta(minutes=9), True, TEN, alerts.REFRESH),
    ("pending", timedelta(minutes=10), True, TEN, alerts.FIRE),
    ("pending", timedelta(minutes=9), False, TEN, alerts.CLEAR),
    ("firing", timedelta(minutes=30), True, TEN, alerts.REFRESH),
    ("firing", timedelta(minutes=30), False, TEN, alerts.RESOLVE),
])
def test_transitions(state, pending_for, holds, hold, step):
    since = T0 - pending_for if pending_for is not None else None
    assert alerts.transition(state, since, holds, now=T0, hold=hold) == step


@pytest.mark.parametrize("status, verdict", [
    (200, "sent"), (204, "sent"), (None, "retry"), (500, "retry"), (503, "retry"), (429, "retry"), (408, "retry"),
    (425, "retry"), (301, "give_up"), (400, "give_up"), (403, "give_up"), (404, "give_up"), (410, "give_up"),
])
def test_what_an_answer_of_the_webhook_means(status, verdict):
    assert alerts.verdict(status) == verdict


def test_retries_back_off_exponentially_within_bounds():
    assert [alerts.retry_delay_s(n) for n in range(1, 9)] == [5, 10, 20, 40, 80, 160, 320, 600]
    assert alerts.retry_delay_s(1, retry_after=30) == 30          # a longer Retry-After is obeyed ...
    assert alerts.retry_delay_s(3, retry_after=1) == 20           # ... a shorter one is not
    assert alerts.retry_delay_s(2, retry_after=86400) == alerts.RETRY_MAX_S


def test_the_payload_is_what_a_slack_webhook_takes():
    alert = {"key": "below_minimum:3", "rule": "below_minimum", "title": "Backlog below minimum", "state": "resolved",
             "summary": "Calm Sea has 0 ready, below its minimum of 2 (1 in flight)", "value": 0.0, "threshold": 2.0,
             "recipeId": 3, "pendingSince": None, "startsAt": "2026-03-10T12:00:00Z", "endsAt": "2026-03-10T12:14:00Z"}
    fired = alerts.payload({**alert, "state": "firing", "endsAt": None}, kind="firing")
    assert fired["text"] == ("Delula alert FIRING — Backlog below minimum: Calm Sea has 0 ready, below its minimum "
                             "of 2 (1 in flight).")
    assert fired["alert"] == {"key": "below_minimum:3", "rule": "below_minimum", "state": "firing",
                              "summary": alert["summary"], "value": 0.0, "threshold": 2.0, "recipeId": 3,
                              "startsAt": "2026-03-10T12:00:00Z", "endsAt": None}
    resolved = alerts.payload(alert, kind="resolved")
    assert resolved["text"].startswith("Delula alert RESOLVED — Backlog below minimum, after 14 min. It was: Calm Sea")
    assert resolved["alert"]["state"] == "resolved" and resolved["alert"]["endsAt"] == "2026-03-10T12:14:00Z"
    for body in (fired, resolved):
        (attachment,) = body["attachments"]
        assert attachment["color"].startswith("#") and attachment["fallback"] == body["text"]
        assert all(set(f) == {"title", "value", "short"} and isinstance(f["value"], str) and f["value"]
                   for f in attachment["fields"])
    assert alerts.shown("hit_rate", 0.853) == "85 %" and alerts.shown("no_leader", 75) == "75 s"
    assert alerts.shown("below_minimum", 2.0) == "2" and alerts.shown("breaker_open", None) == "—"


# --- evaluation on the databases ------------------------------------------------------------------

@pytest.fixture
def clock():
    return ManualClock(T0)


def _runtime(make_runtime, url, clock, **settings):
    rt = make_runtime(url, clock=clock, pool_size=4, **settings)
    auth.ensure_system_user(rt)
    with rt.store.begin() as s:   # a leader that heartbeats now, so that no_leader keeps quiet
        store_schedule.claim_leadership(s, "scheduler", host="test", pid=1, now=clock.now())
    return rt


def _heartbeat(rt):
    with rt.store.begin() as s:
        store_schedule.heartbeat(s, "scheduler", host="test", pid=1, now=rt.now())


def _sent(rt, key=None) -> list[tuple[str, str]]:
    return [(n["key"], n["kind"]) for n in reversed(alerts.notifications(rt, key))]


def test_below_minimum_fires_after_its_duration_once_and_resolves_once(db_url, make_runtime, clock):
    rt = _runtime(make_runtime, db_url, clock, alert_below_min_minutes=10)
    recipe = recipes.create_recipe(rt, name="Calm Sea", credit_cost=1, min_backlog=2)
    key = f"below_minimum:{recipe.id}"

    assert alerts.check(rt)["started"] == 1
    clock.advance(9 * 60)
    _heartbeat(rt)
    assert alerts.check(rt) == {"started": 0, "fired": 0, "resolved": 0, "cleared": 0}
    clock.advance(60)
    _heartbeat(rt)
    assert alerts.check(rt)["fired"] == 1
    for _ in range(3):
        clock.advance(60)
        _heartbeat(rt)
        assert alerts.check(rt) == {"started": 0, "fired": 0, "resolved": 0, "cleared": 0}
    assert _sent(rt) == [(key, "firing")]
    (shown,) = alerts.panel(rt)["firing"]
    assert shown["key"] == key and shown["startsAt"] == "2026-03-10T12:10:00Z" and "Calm Sea has 0 ready" in shown["summary"]

    add_pool_items(rt, recipe.id, 2)
    clock.advance(60)
    _heartbeat(rt)
    assert alerts.check(rt)["resolved"] == 1
    assert alerts.check(rt)["resolved"] == 0
    assert _sent(rt) == [(key, "firing"), (key, "resolved")]
    panel = alerts.panel(rt)
    assert panel["firing"] == [] and [a["endsAt"] for a in panel["resolved"]] == ["2026-03-10T12:14:00Z"]
    body = alerts.notifications(rt, key)[0]["payload"]
    assert body["alert"]["state"] == "resolved" and "after 4 min" in body["text"]

    # a dip shorter than the duration clears silently, and the last firing stays on the panel
    _set_ready(rt, recipe.id, 1)
    assert alerts.check(rt)["started"] == 1
    _set_ready(rt, recipe.id, 2)
    clock.advance(60)
    _heartbeat(rt)
    assert alerts.check(rt)["cleared"] == 1
    assert len(_sent(rt)) == 2 and alerts.panel(rt)["resolved"][0]["key"] == key
    # a day later the resolved alert has left the panel
    clock.advance(25 * 3600)
    _heartbeat(rt)
    assert alerts.panel(rt) == {"firing": [], "resolved": []}


def _set_ready(rt, recipe_id: int, n: int) -> None:
    """Make exactly ``n`` of the recipe's pool items claimable (the rest cancelled)."""
    from sqlalchemy import update

    from delula.storage.models import Generation

    with rt.store.begin() as s:
        ids = sorted(g.id for g in jobs.list_for_user(s, SYSTEM_BACKLOG_USER_ID, limit=1000)
                     if g.recipe_id == recipe_id and g.status in ("completed", "cancelled"))
        s.execute(update(Generation).where(Generation.id.in_(ids[:n])).values(status="completed"))
        s.execute(update(Generation).where(Generation.id.in_(ids[n:])).values(status="cancelled"))


def test_the_other_rules_fire_at_once_from_what_the_runtime_observes(db_url, make_runtime, clock):
    rt = _runtime(make_runtime, db_url, clock)
    account, _ = auth.create_user(rt, "alerted", credits=0)
    recipe = recipes.create_recipe(rt, name="Dry", credit_cost=1, min_backlog=0)
    from delula.storage import pool as store_pool

    now = clock.now()
    with rt.store.begin() as s:
        for i in range(25):   # 5 hits, 20 misses: a hit rate of 20 %
            store_pool.record_event(s, user_id=account.id, recipe_id=recipe.id, outcome="claimed" if i < 5 else "no_backlog",
                                    generation_id=None, latency_ms=1.0, now=now - timedelta(minutes=1))
        jobs.add_generations(s, [dict(user_id=account.id, recipe_id=recipe.id, status="failed" if i < 6 else "completed",
                                      form_data={}, meta={"source": "user"}, completed_at=now, updated_at=now)
                                 for i in range(12)], now)
    gate = breaker.gate(rt)
    for _ in range(rt.settings.breaker_threshold):
        gate.record("submit", ConnectionError("down"))

    assert alerts.check(rt)["fired"] == 3
    held = {a["key"]: a for a in alerts.panel(rt)["firing"]}
    assert set(held) == {"hit_rate", "breaker_open", "failure_rate"}
    assert held["hit_rate"]["value"] == pytest.approx(0.2) and held["failure_rate"]["value"] == pytest.approx(0.5)
    assert "5 of 25 attempts" in held["hit_rate"]["summary"] and "6 of 12 jobs" in held["failure_rate"]["summary"]
    clock.advance(16 * 60)   # the window has passed them by; the breaker is still open
    _heartbeat(rt)
    assert alerts.check(rt) == {"started": 0, "fired": 0, "resolved": 2, "cleared": 0}
    assert [a["key"] for a in alerts.panel(rt)["firing"]] == ["breaker_open"]


@pytest.mark.postgres
def test_a_transition_another_transaction_is_making_waits_for_it_and_does_nothing(pg_url, make_runtime, clock):
    rt = _runtime(make_runtime, pg_url, clock)
    cond = {"rule": "breaker_open", "recipe_id": None, "summary": "open", "value": 5.0, "threshold": 5.0}
    now = clock.now()
    second: list = []
    with rt.store.begin() as s:
        assert store.fire_at_once(s, "breaker_open", cond, now=now) is not None
        store.add_notification(s, "breaker_open", "firing", {"text": "x"}, now=now)

        def other():
            with rt.store.begin() as s2:
                second.append(store.fire_at_once(s2, "breaker_open", cond, now=now))

        t = threading.Thread(target=other)
        t.start()
        wait_for_a_lock_wait(rt)   # the second waits on the first's row ...
    t.join(10)
    assert second == [None]        # ... and, the row firing once the first committed, does nothing
    with rt.store.begin() as s:
        assert store.resolve(s, "breaker_open", now=now) is not None
        assert store.resolve(s, "breaker_open", now=now) is None


@pytest.mark.postgres
def test_evaluators_racing_fire_and_resolve_each_alert_once(pg_url, make_runtime, clock):
    n = 6
    first = _runtime(make_runtime, pg_url, clock, alert_below_min_minutes=1)
    rts = [first] + [make_runtime(pg_url, clock=clock, pool_size=2, alert_below_min_minutes=1) for _ in range(n - 1)]
    made = [recipes.create_recipe(first, name=f"Race {i}", credit_cost=1, min_backlog=1) for i in range(4)]
    gate = breaker.gate(first)
    for _ in range(first.settings.breaker_threshold):
        gate.record("submit", ConnectionError("down"))

    def race():
        barrier, errors = threading.Barrier(n), []

        def run(rt):
            try:
                barrier.wait()
                for _ in range(3):
                    alerts.check(rt)
            except Exception as e:  # pragma: no cover - shown by the assertion below
                errors.append(e)

        threads = [threading.Thread(target=run, args=(rt,)) for rt in rts]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []

    race()                      # below minimum: pending; the breaker fires at once
    clock.advance(61)
    _heartbeat(first)
    race()                      # below minimum fires
    for r in made:
        add_pool_items(first, r.id, 1)
    with first.store.begin() as s:   # the breaker closes, as a probe's success closes it
        from delula.storage import breaker as store_breaker

        row = store_breaker.locked(s, first.settings.provider, now=clock.now())
        store_breaker.write(s, row, {"state": "closed", "failures": 0, "trips": 0}, now=clock.now())
    clock.advance(60)
    _heartbeat(first)
    race()                      # everything resolves
    sent = _sent(first)
    keys = [f"below_minimum:{r.id}" for r in made] + ["breaker_open"]
    assert sorted(sent) == sorted([(k, "firing") for k in keys] + [(k, "resolved") for k in keys])


# --- delivery ---------------------------------------------------------------------------------------

def _fire(rt, key="breaker_open"):
    cond = {"rule": key.split(":")[0], "recipe_id": None, "summary": f"{key} holds", "value": 1.0, "threshold": 1.0}
    with rt.store.begin() as s:
        row = store.fire_at_once(s, key, cond, now=rt.now())
        store.add_notification(s, key, "firing", alerts.payload(alerts.view(row), kind="firing"), now=rt.now())


def test_a_failed_delivery_is_retried_after_its_backoff_and_delivered_once(db_url, make_runtime, clock):
    with Receiver(statuses=[500]) as hook:
        rt = _runtime(make_runtime, db_url, clock, alert_webhook_url=hook.url)
        _fire(rt)
        assert alerts.deliver(rt) == {"sent": 0, "retried": 1, "gaveUp": 0}
        (row,) = alerts.notifications(rt)
        assert row["attempts"] == 1 and row["sentAt"] is None and row["lastError"].startswith("HTTP 500")
        assert row["nextAttemptAt"] == "2026-03-10T12:00:05Z"
        assert alerts.deliver(rt)["sent"] == 0 and len(hook.bodies) == 1      # not due yet
        clock.advance(5)
        assert alerts.deliver(rt) == {"sent": 1, "retried": 0, "gaveUp": 0}
        clock.advance(600)
        assert alerts.deliver(rt)["sent"] == 0
    assert hook.answered == [500, 200]
    (delivered,) = hook.delivered()
    assert delivered["alert"]["key"] == "breaker_open" and delivered["text"].startswith("Delula alert FIRING")
    assert all(ct == "application/json" for ct in hook.content_types)
    (row,) = alerts.notifications(rt)
    assert row["sentAt"] == "2026-03-10T12:00:05Z" and row["nextAttemptAt"] is None and row["attempts"] == 2


def test_delivery_gives_up_after_its_attempts_or_at_once_on_a_refusal(db_url, make_runtime, clock):
    with Receiver(statuses=[503] * alerts.MAX_DELIVERY_ATTEMPTS + [404]) as hook:
        rt = _runtime(make_runtime, db_url, clock, alert_webhook_url=hook.url)
        _fire(rt)
        for attempt in range(1, alerts.MAX_DELIVERY_ATTEMPTS + 1):
            alerts.deliver(rt)
            clock.advance(alerts.retry_delay_s(attempt))
        (row,) = alerts.notifications(rt)
        assert row["attempts"] == alerts.MAX_DELIVERY_ATTEMPTS and row["nextAttemptAt"] is None
        assert row["lastError"].startswith(f"gave up after {alerts.MAX_DELIVERY_ATTEMPTS} attempt(s): HTTP 503")
        _fire(rt, "no_leader")
        assert alerts.deliver(rt) == {"sent": 0, "retried": 0, "gaveUp": 1}   # 404: no retry
        assert alerts.deliver(rt)["gaveUp"] == 0
    assert hook.answered == [503] * alerts.MAX_DELIVERY_ATTEMPTS + [404] and hook.delivered() == []


def test_without_a_webhook_alerts_are_recorded_and_the_outbox_left_to_processes_with_one(db_url, make_runtime,
                                                                                         clock):
    rt = _runtime(make_runtime, db_url, clock)
    _fire(rt)
    assert alerts.deliver(rt) == {"sent": 0, "retried": 0, "gaveUp": 0}
    (row,) = alerts.notifications(rt)
    assert row["attempts"] == 0 and row["nextAttemptAt"] == "2026-03-10T12:00:00Z" and row["lastError"] is None
    assert [a["key"] for a in alerts.panel(rt)["firing"]] == ["breaker_open"]
    with Receiver() as hook:   # a process that has the URL sends it
        other = make_runtime(db_url, clock=clock, alert_webhook_url=hook.url)
        assert alerts.deliver(other)["sent"] == 1
    assert [b["alert"]["key"] for b in hook.delivered()] == ["breaker_open"]


def test_a_notification_left_unsent_for_an_hour_is_given_up_as_stale(db_url, make_runtime, clock):
    with Receiver() as hook:
        rt = _runtime(make_runtime, db_url, clock, alert_webhook_url=hook.url)
        _fire(rt)
        clock.advance(alerts.STALE_AFTER.total_seconds() + 1)
        assert alerts.deliver(rt) == {"sent": 0, "retried": 0, "gaveUp": 1}
    assert hook.bodies == []
    (row,) = alerts.notifications(rt)
    assert row["lastError"] == "stale: not sent within 60 min of the transition" and row["nextAttemptAt"] is None


def test_a_transport_error_is_stored_without_the_webhooks_token(sqlite_url, make_runtime, clock):
    from tests.support.db import free_port

    url = f"http://127.0.0.1:{free_port()}/services/T000/B000/s3cret-token"
    rt = _runtime(make_runtime, sqlite_url, clock, alert_webhook_url=url)
    _fire(rt)
    assert alerts.deliver(rt)["retried"] == 1
    (row,) = alerts.notifications(rt)
    assert row["lastError"].startswith("ConnectionError") and "s3cret" not in row["lastError"]
    assert "s3cret" not in repr(rt.settings)


@pytest.mark.postgres
def test_deliveries_at_once_send_each_notification_once(pg_url, make_runtime, clock):
    with Receiver(delay_s=0.05) as hook:
        rts = [_runtime(make_runtime, pg_url, clock, alert_webhook_url=hook.url)]
        rts += [make_runtime(pg_url, clock=clock, pool_size=2, alert_webhook_url=hook.url) for _ in range(3)]
        for i in range(12):
            _fire(rts[0], f"below_minimum:{i}")
        barrier = threading.Barrier(len(rts))
        results = []

        def run(rt):
            barrier.wait()
            results.append(alerts.deliver(rt))

        threads = [threading.Thread(target=run, args=(rt,)) for rt in rts]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert sum(r["sent"] for r in results) == 12 and sum(1 for r in results if r["sent"]) > 1   # shared out
    assert sorted(b["alert"]["key"] for b in hook.bodies) == sorted(f"below_minimum:{i}" for i in range(12))


def test_a_lease_that_ran_out_makes_the_row_due_again(db_url, make_runtime, clock):
    rt = _runtime(make_runtime, db_url, clock)
    _fire(rt)
    now = clock.now()
    with rt.store.begin() as s:   # a delivery took it and died
        taken = store.lease_due(s, now=now, lease_until=now + timedelta(seconds=alerts.DELIVERY_LEASE_S))
        assert taken is not None and store.lease_due(s, now=now, lease_until=now) is None
    clock.advance(alerts.DELIVERY_LEASE_S)
    with rt.store.begin() as s:
        again = store.lease_due(s, now=clock.now(), lease_until=clock.now())
        assert again.id == taken.id and again.attempts == 2
        assert not store.mark_sent(s, taken.id, taken.attempts, now=clock.now())   # the dead lease writes nothing


# --- the no-leader watchdog --------------------------------------------------------------------------

def test_the_watchdog_raises_no_leader_delivers_it_and_resolves_it(db_url, make_runtime, clock):
    with Receiver() as hook:
        rt = make_runtime(db_url, clock=clock, alert_webhook_url=hook.url)
        auth.ensure_system_user(rt)
        with rt.store.begin() as s:   # the last leader heartbeated two minutes ago
            store_schedule.claim_leadership(s, "scheduler", host="gone", pid=9, now=clock.now() - timedelta(minutes=2))
        dog = scheduler.Watchdog(rt, interval_s=0.05).start()
        try:
            wait_for(lambda: hook.delivered("firing"), timeout=30, what="the firing notification")
            with rt.store.begin() as s:   # a leader is back
                store_schedule.claim_leadership(s, "scheduler", host="back", pid=10, now=clock.now())
            wait_for(lambda: hook.delivered("resolved"), timeout=30, what="the resolved notification")
            threading.Event().wait(0.3)   # a few more looks change nothing
        finally:
            dog.stop()
    assert [b["alert"]["state"] for b in hook.bodies] == ["firing", "resolved"]
    assert hook.bodies[0]["alert"]["key"] == "no_leader" and hook.bodies[0]["alert"]["value"] == 120.0
    assert "no leader for 2 min" in hook.bodies[0]["text"]


def test_with_no_leader_row_the_watchdog_counts_from_its_first_look(sqlite_url, make_runtime, clock):
    rt = make_runtime(sqlite_url, clock=clock)
    assert alerts.leaderless_s(rt, clock.now()) == 0
    clock.advance(45)
    assert alerts.watch(rt)["fired"] == 0
    clock.advance(16)
    assert alerts.watch(rt) == {"started": 0, "fired": 1, "resolved": 0, "cleared": 0,
                                "sent": 0, "retried": 0, "gaveUp": 0}
    with rt.store.begin() as s:
        store_schedule.claim_leadership(s, "scheduler", host="h", pid=1, now=clock.now())
    assert alerts.watch(rt)["resolved"] == 1
    assert alerts.leaderless_s(rt, clock.now()) == 0


def test_every_web_process_starts_one_watchdog(world, monkeypatch):
    rt, dash_app, _, _ = world
    dog = scheduler.watchdog_in_process(rt)
    assert dog is not None and dog.running and dog.rt is rt       # started by create_app, scheduler off
    assert scheduler.watch_in_process(rt) is dog
    dash_app.server.test_client().get("/healthz")                 # a request finds it running
    assert scheduler.watchdog_in_process(rt) is dog
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:   # a forked worker (gunicorn --preload) has none, and its first request starts its own
        ok = scheduler.watchdog_in_process(rt) is None
        ok = ok and scheduler.watch_in_process(rt, interval_s=3600) is not dog
        os.write(write, b"1" if ok else b"0")
        os._exit(0)
    os.close(write)
    assert os.read(read, 1) == b"1"
    os.waitpid(pid, 0)
    rt.close()
    assert scheduler.watchdog_in_process(rt) is None               # a closed runtime's watchdog stops


# --- docs/alerts.yml against /metrics ------------------------------------------------------------------

PROMQL_WORDS = {"sum", "by", "without", "increase", "rate", "irate", "vector", "and", "or", "unless", "on",
                "ignoring", "group_left", "group_right", "bool", "max", "min", "avg", "count", "absent",
                "clamp_min", "histogram_quantile", "offset"}


def _selectors(expr: str) -> list[tuple[str, set[str]]]:
    """``(metric name, label names matched)`` of every series a PromQL expression selects."""
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)           # no string contents
    bare = re.sub(r"\[[^\]]*\]", "", bare)                    # no range durations
    bare = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", bare)   # no label lists
    found = []
    for m in re.finditer(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*(\{[^}]*\})?", bare):
        name, matchers = m.group(1), m.group(2) or ""
        if name in PROMQL_WORDS or re.fullmatch(r"\d.*", name) or bare[m.end():].lstrip().startswith("("):
            continue
        found.append((name, set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", matchers))))
    return found


def test_docs_alerts_yml_names_only_metrics_and_labels_that_metrics_exports(rt):
    w = world(rt)
    client = make_app(rt).test_client()
    for recipe_id in (w.recipe.id, w.empty.id):   # a hit and a miss: the claims counter
        client.post("/api/generate/instant", json={"recipeId": recipe_id}, headers=bearer(w.user_token))
    with rt.store.begin() as s:   # one of every other counter, as the queue and the breaker add them
        counters.add(s, {(counters.JOBS_FINISHED, counters.labels_text({"result": "failed", "source": "user"})): 1,
                         (counters.PROVIDER_CALLS, counters.labels_text({"kind": "submit", "result": "error"})): 1,
                         (counters.BREAKER_OPENED, counters.labels_text({"provider": "simulator"})): 1})
    scrape = client.get("/metrics", headers=bearer(w.ops_token)).get_data(as_text=True)
    labels: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(scrape):
        for sample in family.samples:
            labels.setdefault(sample.name, set()).update(sample.labels)
            labels.setdefault(family.name, set()).update(sample.labels)

    doc = yaml.safe_load((ROOT / "docs" / "alerts.yml").read_text())
    rules = [r for group in doc["groups"] for r in group["rules"]]
    assert sorted(r["labels"]["rule"] for r in rules) == sorted(alerts.RULES)    # the same five rules
    for r in rules:
        selected = _selectors(r["expr"])
        assert selected, r["alert"]
        for name, matched in selected:
            assert name in labels, f"{r['alert']}: {name} is not in /metrics"
            assert matched <= labels[name], f"{r['alert']}: {name} has no label {matched - labels[name]}"
    below = next(r for r in rules if r["labels"]["rule"] == "below_minimum")
    assert below["for"] == f"{test_settings('sqlite://').alert_below_min_minutes:g}m"
    assert _selectors('sum(increase(x_total{a="b",c=~"d|e"}[15m])) / y > 0.5 and z') == [
        ("x_total", {"a", "c"}), ("y", set()), ("z", set())]


# --- the demonstration: a real worker, a local webhook ------------------------------------------

@pytest.mark.slow
@pytest.mark.postgres
def test_a_worker_notifies_one_firing_and_one_resolution_of_a_recipe_below_its_minimum(pg_url, make_runtime,
                                                                                        tmp_path):
    rt = make_runtime(pg_url)
    auth.ensure_system_user(rt)
    recipe = recipes.create_recipe(rt, name="Shown By", credit_cost=1, min_backlog=2)
    pauses.pause(rt, "backlog", actor_id=None)   # nothing refills it but the test
    key = f"below_minimum:{recipe.id}"
    worker = None
    with Receiver() as hook:
        env = worker_env(pg_url, DELULA_ALERT_WEBHOOK_URL=hook.url, DELULA_ALERT_BELOW_MIN_MINUTES="0.05",
                         DELULA_ALERT_INTERVAL_S="0.5")
        try:
            worker = spawn(["-m", "delula", "worker"], env, tmp_path / "worker.log")
            wait_for(lambda: hook.delivered("firing"), timeout=90, what="the firing notification")
            firing = alerts.panel(rt)["firing"]
            assert [a["key"] for a in firing] == [key]
            add_pool_items(rt, recipe.id, 2)       # it recovers
            wait_for(lambda: hook.delivered("resolved"), timeout=60, what="the resolved notification")
            threading.Event().wait(3 * 0.5 + alerts.DELIVERY_INTERVAL_S)   # more evaluations and deliveries
        finally:
            stop_processes(worker)
    assert [(b["alert"]["key"], b["alert"]["state"]) for b in hook.bodies] == [(key, "firing"), (key, "resolved")], \
        (tmp_path / "worker.log").read_text()[-3000:]
    fired, resolved = hook.bodies
    assert "Shown By has 0 ready, below its minimum of 2" in fired["text"]
    assert fired["alert"]["recipeId"] == recipe.id and fired["alert"]["threshold"] == 2
    assert resolved["alert"]["endsAt"] and resolved["alert"]["startsAt"] == fired["alert"]["startsAt"]
    assert alerts.panel(rt)["firing"] == [] and [a["key"] for a in alerts.panel(rt)["resolved"]] == [key]
    with rt.store.begin() as s:
        rows = s.query(AlertNotification).all()
    assert sorted((n.kind, n.sent_at is not None, n.attempts) for n in rows) == [("firing", True, 1),
                                                                               ("resolved", True, 1)]
