"""Housekeeping: the tables that only grow are kept bounded (the scheduler's ``housekeeping`` job).

- ``scheduler_runs``: the last :data:`KEEP_RUNS_PER_JOB` runs of each job;
- ``queue_samples``: :data:`KEEP_SAMPLES` of them (the overview's longest range is a week);
- idempotency keys: :data:`KEEP_IDEMPOTENCY_KEYS`, so a retried request is answered alike for a day;
- sign-in attempt counts: those of windows that have passed (``sign_in.prune``);
- refused claim events (every outcome but ``claimed``): ``DELULA_EVENT_RETENTION_DAYS`` (they
  name who tried what; successful claims stay, the backlog's demand and the history need them),
  in batches of :data:`EVENT_BATCH`, at most :data:`EVENT_BATCHES` per run (the rest next run),
  after the instant claims counter has added up what is settled, and never one it has not
  (``counters.prunable_before``).
- alert notifications: those created more than :data:`KEEP_NOTIFICATIONS` ago.

Each table is pruned in short transactions of its own, so no lock is held across them.
"""
from __future__ import annotations

from datetime import timedelta

from . import counters, sign_in
from .storage import alerts, pool, stats
from .storage import schedule as store_schedule

KEEP_RUNS_PER_JOB = 500
KEEP_SAMPLES = timedelta(days=30)
KEEP_IDEMPOTENCY_KEYS = timedelta(hours=24)
KEEP_NOTIFICATIONS = timedelta(days=30)
EVENT_BATCH = 5000
EVENT_BATCHES = 20


def prune(rt) -> dict:
    """Delete what is beyond keeping; returns how many rows of each kind went."""
    with rt.store.begin() as s:
        runs = store_schedule.prune_runs(s, KEEP_RUNS_PER_JOB)
    with rt.store.begin() as s:
        samples = stats.prune_queue_samples(s, rt.now() - KEEP_SAMPLES)
    with rt.store.begin() as s:
        keys = pool.prune_keys(s, rt.now() - KEEP_IDEMPOTENCY_KEYS)
    counts = sign_in.prune(rt)
    with rt.store.begin() as s:
        notifications = alerts.prune_notifications(s, rt.now() - KEEP_NOTIFICATIONS)
    events = 0
    counters.roll_up(rt)   # what is pruned must be in the claims counter's stored total first
    before = counters.prunable_before(rt, rt.now() - timedelta(days=rt.settings.event_retention_days))
    for _ in range(EVENT_BATCHES):
        with rt.store.begin() as s:
            n = stats.prune_refused_claim_events(s, before, EVENT_BATCH)
        events += n
        if n < EVENT_BATCH:
            break
    return {"runsDeleted": runs, "samplesDeleted": samples, "idempotencyKeysDeleted": keys,
            "signInCountsDeleted": counts, "claimEventsDeleted": events, "notificationsDeleted": notifications}
