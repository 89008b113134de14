"""Alerts that reach a person: five rules, each alert fired once and resolved once, notified to
a Slack-compatible webhook.

**Rules** (:func:`conditions`, a pure function of :class:`Observations` and the settings), each
giving the alerts that hold now with their value, threshold and a sentence:

- ``below_minimum:<recipe id>`` — an active recipe has fewer ready items than its minimum;
- ``hit_rate`` — the instant hit rate over the last :data:`WINDOW` is below
  ``DELULA_ALERT_HIT_RATE``, judged once :data:`MIN_ATTEMPTS` attempts reached the pool in it
  (below that one unlucky minute would page somebody);
- ``breaker_open`` — the provider circuit breaker is not closed (open, or half-open: a probe
  is out, nothing else is sent);
- ``no_leader`` — no scheduler leader has heartbeated for over :data:`NO_LEADER_AFTER_S`;
- ``failure_rate`` — of the jobs that completed or failed over the last :data:`WINDOW`, the
  share that failed is above ``DELULA_ALERT_FAILURE_RATE``, judged from :data:`MIN_FINISHED`
  jobs on (cancelled and expired ones are an operator's or the pool's doing, not failures).

**For-durations** (:func:`hold_for`): a below-minimum alert fires once its condition has held
``DELULA_ALERT_BELOW_MIN_MINUTES`` (after a burst of claims a pool refills within minutes; a pool
that stays short is the news). The other four fire at the first evaluation that sees them: each
has its duration built in already — a 15-minute window with a minimum count, the breaker's run
of consecutive provider errors, the leader's minute of silence.

**States** (``alerts`` rows; :func:`transition`, pure): a condition that starts to hold makes its
alert ``pending`` (or ``firing`` at once without a for-duration); a pending alert fires when
it has held its for-duration, or goes back to ``resolved`` silently if it stops holding first;
a firing alert is ``resolved`` at the first evaluation where its condition no longer holds.
Each transition is one conditional statement (``storage.alerts``) with the notification
inserted in its transaction, so processes evaluating at once fire and resolve each alert once.

**Who evaluates**: the scheduler leader's ``alerts`` job (:func:`check`, every
``DELULA_ALERT_INTERVAL_S``) all five rules; every web process's watchdog
(``delula.scheduler.Watchdog``, :func:`watch`) ``no_leader`` alone — with no leader, nobody else
would — and it delivers the notifications too.

**Delivery** (:func:`deliver`: the ``alert-delivery`` job every :data:`DELIVERY_INTERVAL_S`,
and the watchdog): each due outbox row is leased, POSTed as JSON (:func:`payload`) with a short
timeout, and settled: sent on a 2xx; retried after :func:`retry_delay_s` (5 s doubling, at most
10 min, a longer ``Retry-After`` obeyed) on a transport error, 408, 425, 429 or 5xx, up to
:data:`MAX_DELIVERY_ATTEMPTS` attempts; given up at once on any other answer (a 3xx or 4xx
will not change by asking again). A run takes at most :data:`DELIVERY_BATCH` rows and stops
taking more after :data:`DELIVERY_BUDGET_S`, so it never holds a scheduler thread for long.
A notification not sent within :data:`STALE_AFTER` of its transition is given up as stale (a
page about the night before helps nobody). Without ``DELULA_ALERT_WEBHOOK_URL`` alerts are
recorded and shown all the same and the process sends nothing, leaving the outbox to processes
that have one (a web process configured without it must not settle the worker's notifications).
The URL carries the webhook's token: it is never logged, and errors are stored with it cut out.
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import requests

from . import backlog, breaker, demand, jobruns
from .clock import isoformat
from .storage import alerts as store
from .storage import stats
from .storage.models import NOTIFICATION_KINDS

log = logging.getLogger(__name__)

BELOW_MINIMUM, HIT_RATE, BREAKER_OPEN, NO_LEADER, FAILURE_RATE = (
    "below_minimum", "hit_rate", "breaker_open", "no_leader", "failure_rate")
RULES = (BELOW_MINIMUM, HIT_RATE, BREAKER_OPEN, NO_LEADER, FAILURE_RATE)
TITLES = {BELOW_MINIMUM: "Backlog below minimum", HIT_RATE: "Instant hit rate low",
          BREAKER_OPEN: "Provider circuit breaker open", NO_LEADER: "No scheduler leader",
          FAILURE_RATE: "Job failure rate high"}
PENDING, FIRING, RESOLVED = store.PENDING, store.FIRING, store.RESOLVED
KIND_FIRING, KIND_RESOLVED = NOTIFICATION_KINDS

WINDOW = timedelta(minutes=15)       # the hit rate and the failure rate are over this
MIN_ATTEMPTS = 20                    # instant attempts (hits and misses) in the window before the hit rate is judged
MIN_FINISHED = 10                    # completed + failed jobs in the window before the failure rate is judged
NO_LEADER_AFTER_S = 60.0             # seconds without a leader heartbeat
PANEL_RESOLVED = timedelta(hours=24)  # the overview lists alerts resolved this recently

DELIVERY_INTERVAL_S = 5.0
DELIVERY_TIMEOUT_S = (3.05, 5.0)     # connect, read
DELIVERY_LEASE_S = 60.0              # a leased row is due again after this (its delivery died)
DELIVERY_BATCH = 20                  # rows one run sends at most ...
DELIVERY_BUDGET_S = 20.0             # ... and it takes no new row after this long
MAX_DELIVERY_ATTEMPTS = 8            # 5 + 10 + 20 + … + 320 s: about 10 minutes of trying
RETRY_BASE_S, RETRY_MAX_S = 5.0, 600.0
RETRYABLE_STATUSES = frozenset({408, 425, 429})   # and every 5xx
STALE_AFTER = timedelta(hours=1)     # a notification not sent this long after its transition is given up


# --- the rules (pure) ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Observations:
    """What the rules look at; a rule whose observation is ``None`` is not evaluated."""
    backlog: tuple[dict, ...] | None = None   # ``backlog.status`` rows
    hit_rate: dict | None = None              # ``demand.hit_rates`` over WINDOW: attempts, hits, hitRate
    breaker: dict | None = None               # ``breaker.current``
    finished: dict | None = None              # jobs finished over WINDOW by status (``stats.finished_since``)
    leaderless_s: float | None = None         # seconds without a leader heartbeat


@dataclass(frozen=True)
class Condition:
    """An alert that holds now."""
    key: str
    rule: str
    summary: str
    value: float | None = None
    threshold: float | None = None
    recipe_id: int | None = None


def key_of(rule: str, recipe_id: int | None = None) -> str:
    return rule if recipe_id is None else f"{rule}:{recipe_id}"


def percent(share: float) -> str:
    return f"{share * 100:.0f} %"


def conditions(obs: Observations, settings, rules: tuple[str, ...] = RULES) -> dict[str, Condition]:
    """``{key: Condition}`` of the alerts of ``rules`` that hold now."""
    held: list[Condition] = []
    if BELOW_MINIMUM in rules and obs.backlog is not None:
        for r in obs.backlog:
            if r["completed"] < r["minimum"]:
                paused = "; its backlog generation is paused" if r.get("paused") else ""
                held.append(Condition(
                    key_of(BELOW_MINIMUM, r["recipeId"]), BELOW_MINIMUM,
                    f"{r['name']} has {r['completed']} ready, below its minimum of {r['minimum']} "
                    f"({r.get('inFlight', 0)} in flight{paused})",
                    float(r["completed"]), float(r["minimum"]), r["recipeId"]))
    h = obs.hit_rate
    if HIT_RATE in rules and h is not None and h["attempts"] >= MIN_ATTEMPTS and h["hitRate"] < settings.alert_hit_rate:
        held.append(Condition(HIT_RATE, HIT_RATE,
                              f"the instant hit rate over the last {_minutes(WINDOW)} is {percent(h['hitRate'])} "
                              f"({h['hits']} of {h['attempts']} attempts served), below {percent(settings.alert_hit_rate)}",
                              h["hitRate"], settings.alert_hit_rate))
    b = obs.breaker
    if BREAKER_OPEN in rules and b is not None and b["state"] != breaker.CLOSED:
        state = "open" if b["state"] == breaker.OPEN else "half-open (one probe out)"
        last = f"; last error: {b['lastError']}" if b.get("lastError") else ""
        held.append(Condition(BREAKER_OPEN, BREAKER_OPEN,
                              f"the {b['provider']} circuit breaker is {state}: nothing is sent to the provider "
                              f"after {b['failures']} provider errors in a row{last}",
                              float(b["failures"]), float(b["threshold"])))
    f = obs.finished
    if FAILURE_RATE in rules and f is not None:
        failed, n = f.get("failed", 0), f.get("failed", 0) + f.get("completed", 0)
        if n >= MIN_FINISHED and failed / n > settings.alert_failure_rate:
            held.append(Condition(FAILURE_RATE, FAILURE_RATE,
                                  f"{failed} of {n} jobs finished in the last {_minutes(WINDOW)} failed "
                                  f"({percent(failed / n)}), above {percent(settings.alert_failure_rate)}",
                                  failed / n, settings.alert_failure_rate))
    age = obs.leaderless_s
    if NO_LEADER in rules and age is not None and age > NO_LEADER_AFTER_S:
        held.append(Condition(NO_LEADER, NO_LEADER,
                              f"the scheduler has had no leader for {_duration(age)}: backlog maintenance and the queue are not "
                              f"running (start `python -m delula worker`)", round(age, 1), NO_LEADER_AFTER_S))
    return {c.key: c for c in held}


def hold_for(rule: str, settings) -> timedelta:
    """How long ``rule``'s condition must hold before its alert fires."""
    if rule == BELOW_MINIMUM:
        return timedelta(minutes=settings.alert_below_min_minutes)
    return timedelta(0)


START, FIRE, REFRESH, RESOLVE, CLEAR = "start", "fire", "refresh", "resolve", "clear"


def transition(state: str | None, pending_since: datetime | None, holds: bool, *, now: datetime,
               hold: timedelta) -> str | None:
    """What an alert in ``state`` (``None``: no row yet) does when its condition ``holds`` or
    not at ``now``: ``START`` (pending from now), ``FIRE``, ``REFRESH`` (still holding: its
    latest value), ``RESOLVE`` (a firing one no longer holds), ``CLEAR`` (a pending one stopped
    holding before its for-duration ``hold``), or ``None``."""
    if holds:
        if state == FIRING:
            return REFRESH
        if state == PENDING:
            return FIRE if now - pending_since >= hold else REFRESH
        return FIRE if hold <= timedelta(0) else START
    if state == FIRING:
        return RESOLVE
    if state == PENDING:
        return CLEAR
    return None


# --- notifications (pure) ------------------------------------------------------------------------------

def view(a) -> dict:
    """An ``alerts`` row as the panel and the payload show it."""
    return {"key": a.key, "rule": a.rule, "title": TITLES.get(a.rule, a.rule), "state": a.state,
            "summary": a.summary, "value": a.value, "threshold": a.threshold, "recipeId": a.recipe_id,
            "pendingSince": isoformat(a.pending_since), "startsAt": isoformat(a.fired_at),
            "endsAt": isoformat(a.resolved_at)}


def shown(rule: str, x: float | None) -> str:
    """A value or threshold of ``rule`` for people."""
    if x is None:
        return "—"
    if rule in (HIT_RATE, FAILURE_RATE):
        return percent(x)
    if rule == NO_LEADER:
        return _duration(x)
    return f"{x:g}"


def payload(alert: dict, *, kind: str) -> dict:
    """The JSON a Slack-compatible incoming webhook takes for a firing or a resolution of
    ``alert`` (:func:`view`): ``text`` (a sentence), ``attachments`` (colour and fields), and
    ``alert`` (key, rule, state, summary, value, threshold, recipeId, startsAt, endsAt)."""
    firing = kind == KIND_FIRING
    title, summary, rule = alert["title"], alert["summary"], alert["rule"]
    if firing:
        text = f"Delula alert FIRING — {title}: {summary}."
    else:
        lasted = _between(alert["startsAt"], alert["endsAt"])
        text = f"Delula alert RESOLVED — {title}{f', after {lasted}' if lasted else ''}. It was: {summary}."
    fields = [{"title": "State", "value": "firing" if firing else "resolved", "short": True},
              {"title": "Alert", "value": alert["key"], "short": True},
              {"title": "Value", "value": shown(rule, alert["value"]), "short": True},
              {"title": "Threshold", "value": shown(rule, alert["threshold"]), "short": True},
              {"title": "Firing since", "value": alert["startsAt"] or "—", "short": True}]
    if not firing:
        fields.append({"title": "Resolved at", "value": alert["endsAt"] or "—", "short": True})
    if alert["recipeId"] is not None:
        fields.append({"title": "Recipe", "value": str(alert["recipeId"]), "short": True})
    return {"text": text,
            "attachments": [{"color": "#dc3545" if firing else "#16a34a", "fallback": text, "title": title,
                             "text": summary, "fields": fields}],
            "alert": {"key": alert["key"], "rule": rule, "state": FIRING if firing else RESOLVED, "summary": summary,
                      "value": alert["value"], "threshold": alert["threshold"], "recipeId": alert["recipeId"],
                      "startsAt": alert["startsAt"], "endsAt": None if firing else alert["endsAt"]}}


def _minutes(span: timedelta) -> str:
    return f"{span.total_seconds() / 60:g} min"


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 120:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 120:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min"


def _between(start: str | None, end: str | None) -> str | None:
    if not start or not end:
        return None
    parse = lambda t: datetime.fromisoformat(t.replace("Z", "+00:00"))   # noqa: E731
    return _duration((parse(end) - parse(start)).total_seconds())


# --- evaluation ------------------------------------------------------------------------------------

def observe(rt, now: datetime) -> Observations:
    """Everything the five rules look at, now."""
    since = now - WINDOW
    with rt.store.begin() as s:
        finished = stats.finished_since(s, since)
    return Observations(backlog=tuple(backlog.status(rt)), hit_rate=demand.hit_rates(rt, since, now),
                        breaker=breaker.current(rt), finished=finished, leaderless_s=leaderless_s(rt, now))


def leaderless_s(rt, now: datetime) -> float:
    """Seconds without a leader heartbeat: the leader row's age; with no row at all (no leader
    ever, or the last one resigned), how long this process has seen none."""
    age = jobruns.heartbeat_age_s(rt)
    memory = rt.cache("alerts-leaderless", ttl=float("inf"), maxsize=1, keep=True)
    if age is not None:
        memory.clear()
        return age
    with memory.lock:
        first = memory.setdefault("since", now)
    return max(0.0, (now - first).total_seconds())


def check(rt) -> dict:
    """The schedule's ``alerts`` job: evaluate the five rules and move every alert."""
    now = rt.now()
    return evaluate(rt, conditions(observe(rt, now), rt.settings), RULES, now=now)


def watch(rt) -> dict:
    """One look of a process's watchdog: evaluate ``no_leader``, then deliver what is due."""
    now = rt.now()
    held = conditions(Observations(leaderless_s=leaderless_s(rt, now)), rt.settings, rules=(NO_LEADER,))
    return {**evaluate(rt, held, (NO_LEADER,), now=now), **deliver(rt)}


def evaluate(rt, held: dict[str, Condition], rules: tuple[str, ...], *, now: datetime) -> dict:
    """Move the alerts of ``rules`` to what ``held`` says holds now: one short transaction per
    alert that changes. Returns how many were started (pending), fired, resolved and cleared."""
    with rt.store.begin() as s:
        seen = store.rows(s, rules)
    counts = Counter({START: 0, FIRE: 0, RESOLVE: 0, CLEAR: 0})
    for key in sorted(set(held) | {k for k, a in seen.items() if a.state != RESOLVED}):
        cond, row = held.get(key), seen.get(key)
        rule = cond.rule if cond is not None else row.rule
        hold = hold_for(rule, rt.settings)
        step = transition(row.state if row else None, row.pending_since if row else None, cond is not None,
                          now=now, hold=hold)
        if step == REFRESH and (row.summary, row.value, row.threshold) == (cond.summary, cond.value, cond.threshold):
            continue
        if step is not None and _apply(rt, step, key, cond, row, now=now, hold=hold) and step != REFRESH:
            counts[step] += 1
    return {"started": counts[START], "fired": counts[FIRE], "resolved": counts[RESOLVE], "cleared": counts[CLEAR]}


def _apply(rt, step: str, key: str, cond: Condition | None, row, *, now: datetime, hold: timedelta) -> bool:
    """Make ``step`` happen to alert ``key`` unless another process did first; ``True`` if this
    call did it. A firing or a resolution queues its notification in the same transaction."""
    described = {k: v for k, v in asdict(cond).items() if k != "key"} if cond is not None else None
    with rt.store.begin() as s:
        if step == START:
            return store.start_pending(s, key, described, now=now)
        if step == REFRESH:
            return store.refresh(s, key, described, now=now)
        if step == CLEAR:
            return store.clear(s, key, now=now)
        if step == FIRE:
            if row is not None and row.state == PENDING:
                changed = store.fire_pending(s, key, described, now=now, pending_since_by=now - hold)
            else:
                changed = store.fire_at_once(s, key, described, now=now)
            kind = KIND_FIRING
        else:
            changed = store.resolve(s, key, now=now)
            kind = KIND_RESOLVED
        if changed is None:
            return False
        store.add_notification(s, key, kind, payload(view(changed), kind=kind), now=now)
    log.warning("alerts: %s %s: %s", key, "fired" if kind == KIND_FIRING else "resolved", changed.summary)
    return True


# --- delivery --------------------------------------------------------------------------------------

SENT, RETRY, GIVE_UP = "sent", "retry", "give_up"


def verdict(status: int | None) -> str:
    """What an answer of the webhook (``None``: none, a transport error) means for its row."""
    if status is None or status in RETRYABLE_STATUSES or status >= 500:
        return RETRY
    return SENT if 200 <= status < 300 else GIVE_UP


def retry_delay_s(attempts: int, retry_after: float | None = None) -> float:
    """Seconds before the next attempt after ``attempts`` failed ones (5, 10, 20 … at most
    :data:`RETRY_MAX_S`), at least a ``Retry-After`` the webhook sent (within that bound)."""
    delay = min(RETRY_BASE_S * 2 ** max(0, attempts - 1), RETRY_MAX_S)
    if retry_after is not None:
        delay = min(max(delay, retry_after), RETRY_MAX_S)
    return delay


def deliver(rt) -> dict:
    """Send the due notifications (the ``alert-delivery`` job): at most :data:`DELIVERY_BATCH`,
    taking none after :data:`DELIVERY_BUDGET_S`. Returns how many were sent, will be retried,
    or were given up. Without a webhook URL it does nothing."""
    url = rt.settings.alert_webhook_url
    counts = {"sent": 0, "retried": 0, "gaveUp": 0}
    if url is None:
        return counts
    started = time.monotonic()
    for _ in range(DELIVERY_BATCH):
        if time.monotonic() - started > DELIVERY_BUDGET_S:
            break
        now = rt.now()
        with rt.store.begin() as s:
            row = store.lease_due(s, now=now, lease_until=now + timedelta(seconds=DELIVERY_LEASE_S))
        if row is None:
            break
        if now - row.created_at > STALE_AFTER:
            with rt.store.begin() as s:
                store.give_up(s, row.id, row.attempts,
                              error=f"stale: not sent within {_minutes(STALE_AFTER)} of the transition")
            counts["gaveUp"] += 1
            continue
        status, error, retry_after = _post(url, row.payload)
        outcome = verdict(status)
        now = rt.now()
        with rt.store.begin() as s:
            if outcome == SENT:
                store.mark_sent(s, row.id, row.attempts, now=now)
                counts["sent"] += 1
            elif outcome == RETRY and row.attempts < MAX_DELIVERY_ATTEMPTS:
                delay = retry_delay_s(row.attempts, retry_after)
                store.retry_at(s, row.id, row.attempts, when=now + timedelta(seconds=delay), error=error)
                counts["retried"] += 1
                log.warning("alerts: notification %s (%s %s) not delivered, attempt %d, again in %g s: %s",
                            row.id, row.alert_key, row.kind, row.attempts, delay, error)
            else:
                store.give_up(s, row.id, row.attempts, error=f"gave up after {row.attempts} attempt(s): {error}")
                counts["gaveUp"] += 1
                log.error("alerts: notification %s (%s %s) given up after %d attempt(s): %s",
                          row.id, row.alert_key, row.kind, row.attempts, error)
    return counts


def _post(url: str, body: dict) -> tuple[int | None, str | None, float | None]:
    """POST ``body`` to the webhook: ``(status or None, error or None, Retry-After seconds or None)``."""
    try:
        r = requests.post(url, json=body, timeout=DELIVERY_TIMEOUT_S, allow_redirects=False,
                          headers={"User-Agent": "delula-alerts"})
    except requests.RequestException as e:
        return None, _scrubbed(f"{type(e).__name__}: {e}", url), None
    if 200 <= r.status_code < 300:
        return r.status_code, None, None
    try:
        retry_after = float(r.headers.get("Retry-After", ""))
    except ValueError:
        retry_after = None
    return r.status_code, _scrubbed(f"HTTP {r.status_code}: {r.text[:200]}".strip(), url), retry_after


def _scrubbed(message: str, url: str) -> str:
    """``message`` without the webhook's URL or its path (the token of most webhooks)."""
    path = urlsplit(url).path
    message = message.replace(url, "<webhook>")
    if len(path) > 1:
        message = message.replace(path, "/<webhook path>")
    return message[:500]


# --- reading -----------------------------------------------------------------------------------------

def panel(rt) -> dict:
    """The overview's Alerts panel: ``{"firing": [...], "resolved": [...]}`` (:func:`view`),
    firing ones newest first, then those resolved in the last :data:`PANEL_RESOLVED`."""
    with rt.store.begin() as s:
        rows = store.panel(s, rt.now() - PANEL_RESOLVED)
    views = [view(a) for a in rows]
    return {"firing": [v for v in views if v["state"] == FIRING],
            "resolved": [v for v in views if v["state"] != FIRING]}


def notifications(rt, key: str | None = None, limit: int = 100) -> list[dict]:
    """The newest outbox rows (of alert ``key``): what was, or will be, sent."""
    with rt.store.begin() as s:
        rows = store.notifications(s, key, limit)
    return [{"id": n.id, "key": n.alert_key, "kind": n.kind, "payload": n.payload, "attempts": n.attempts,
             "nextAttemptAt": isoformat(n.next_attempt_at), "sentAt": isoformat(n.sent_at),
             "lastError": n.last_error, "createdAt": isoformat(n.created_at)} for n in rows]
