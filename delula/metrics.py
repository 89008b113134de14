"""Prometheus metrics, computed from the database at scrape time.

Every number comes from the shared database, never from process-local counters, so each gunicorn
worker (and each host) reports the same values and a restart loses nothing. The windowed series
(claims, finished jobs, job durations) cover the last hour on indexed timestamps, so a scrape
stays cheap however long the history grows; the rendered text is cached for a few seconds.

Scrapes need ``Authorization: Bearer`` with an ops token or ``DELULA_METRICS_TOKEN`` (the API
checks, :func:`is_metrics_token` compares in constant time). The cache is the runtime's ``keep``
kind: claims and other writes do not empty it (under traffic every scrape would recompute), and
concurrent misses share one computation.

Counters (monotonic, kept in the database by ``delula.counters``: they survive restarts and add
up across processes, so ``rate()`` and ``increase()`` work on them):

- ``delula_instant_claims_total{outcome,recipe_id}`` instant attempts by outcome
- ``delula_jobs_finished_total{result,source}`` jobs that completed, failed for good, were cancelled
  or were rejected by the quality gate
- ``delula_provider_calls_total{kind,result}`` provider calls (submit, status, result, cancel) that
  went ``ok``, hit a provider ``error`` or were ``refused`` for their job
- ``delula_provider_breaker_opened_total{provider}`` times the circuit breaker opened

Gauges of now:

- ``delula_provider_breaker_state{provider,state}`` 1 for the breaker's state (closed, open,
  half_open), 0 for the others
- ``delula_scheduler_heartbeat_age_seconds`` since the scheduler leader last heartbeated (+Inf:
  never); ``delula_scheduler_leader`` 1 while a leader is fresh
- ``delula_paused{scope,recipe_id}`` 1 for each pause in force (``recipe_id`` 0: every recipe)

Gauges over the last hour (the durations are a gauge histogram over the window):

- ``delula_backlog_ready{recipe_id,recipe}`` claimable generations; ``delula_backlog_in_flight``,
  ``delula_backlog_target``, ``delula_backlog_minimum``, ``delula_backlog_deficit`` alike
- ``delula_queue_jobs{status}`` generations pending / processing now
- ``delula_jobs_finished_last_hour{status}`` completed / failed / cancelled / expired / rejected in
  the window
- ``delula_instant_claims_last_hour{outcome}`` instant attempts by outcome in the window
- ``delula_job_duration_seconds{source}`` processing time (start → completion) of jobs completed
  in the window, by ``source`` (user / backlog)
"""
from __future__ import annotations

import hmac
from datetime import timedelta

from prometheus_client import CollectorRegistry, exposition, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeHistogramMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from . import backlog, breaker, counters, jobruns, pauses
from .storage import CLAIM_OUTCOMES, JobSource, JobStatus, stats
from .storage import counters as counter_names

# The classic text format that ``generate_latest`` writes (every Prometheus version reads it).
CONTENT_TYPE = getattr(exposition, "CONTENT_TYPE_PLAIN_0_0_4", "text/plain; version=0.0.4; charset=utf-8")
WINDOW = timedelta(hours=1)
CACHE_TTL_S = 5.0
DURATION_BUCKETS = (5.0, 10.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 300.0, 480.0)
MAX_DURATION_SAMPLES = 20_000


def snapshot(rt) -> dict:
    """Everything the metrics show, in short transactions: the backlog, the windowed figures
    with the pauses, the counters, the breaker and the leader's heartbeat."""
    since = rt.now() - WINDOW
    backlog_rows = backlog.status(rt)
    with rt.store.begin() as s:
        live = stats.status_counts(s, JobStatus.LIVE)
        finished = stats.finished_since(s, since)
        outcomes = stats.claim_outcomes_since(s, since)
        durations = stats.processing_durations_since(s, since, limit=MAX_DURATION_SAMPLES)
        paused = pauses.read(s)
    return {"backlog": backlog_rows, "queue": live, "finished": finished, "claims": outcomes,
            "durations": durations, "counters": counters.totals(rt), "breaker": breaker.current(rt),
            "heartbeatAge": jobruns.heartbeat_age_s(rt), "paused": paused}


# name in the database -> (Prometheus name without _total, help, label names in order)
COUNTERS = {
    counter_names.CLAIMS: ("delula_instant_claims", "Instant claim attempts by outcome and recipe",
                           ("outcome", "recipe_id")),
    counter_names.JOBS_FINISHED: ("delula_jobs_finished", "Generation jobs that completed, failed for good, "
                                  "were cancelled or were rejected", ("result", "source")),
    counter_names.PROVIDER_CALLS: ("delula_provider_calls", "Calls to the generation provider by kind and result "
                                   "(ok, error: the provider is in trouble, refused: about its job)",
                                   ("kind", "result")),
    counter_names.BREAKER_OPENED: ("delula_provider_breaker_opened", "Times the provider circuit breaker opened",
                                   ("provider",)),
}


def histogram(values: list[float], buckets: tuple[float, ...] = DURATION_BUCKETS) -> list[tuple[str, int]]:
    """Cumulative ``(le, count)`` pairs for ``values``, ending with ``+Inf``."""
    out = [(_le(b), sum(1 for v in values if v <= b)) for b in buckets]
    out.append(("+Inf", len(values)))
    return out


def _le(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else str(bound)


class DelulaCollector(Collector):
    """Turns one :func:`snapshot` into metric families."""

    def __init__(self, snap: dict):
        self.snap = snap

    def collect(self):
        snap = self.snap
        labels = ["recipe_id", "recipe"]
        per_recipe = {
            "ready": ("completed", "Claimable finished backlog generations"),
            "in_flight": ("inFlight", "Backlog generations pending or processing"),
            "target": ("target", "Backlog target (dynamic, at least the minimum)"),
            "minimum": ("minimum", "Backlog minimum (recipe override or DELULA_MIN_BACKLOG)"),
            "deficit": ("deficit", "Backlog generations still to be created to reach the target"),
        }
        for suffix, (key, doc) in per_recipe.items():
            family = GaugeMetricFamily(f"delula_backlog_{suffix}", doc, labels=labels)
            for row in snap["backlog"]:
                if key in row:
                    family.add_metric([str(row["recipeId"]), str(row["name"])], float(row[key]))
            yield family

        family = GaugeMetricFamily("delula_queue_jobs", "Generations pending or processing now", labels=["status"])
        for status, n in sorted(snap["queue"].items()):
            family.add_metric([status], float(n))
        yield family

        family = GaugeMetricFamily("delula_jobs_finished_last_hour",
                                   "Generations that completed, failed, were cancelled, expired or were rejected "
                                   "in the last hour",
                                   labels=["status"])
        for status in JobStatus.FINISHED:
            family.add_metric([status], float(snap["finished"].get(status, 0)))
        yield family

        family = GaugeMetricFamily("delula_instant_claims_last_hour",
                                   "Instant claim attempts in the last hour by outcome", labels=["outcome"])
        for outcome in CLAIM_OUTCOMES:
            family.add_metric([outcome], float(snap["claims"].get(outcome, 0)))
        yield family

        family = GaugeHistogramMetricFamily(
            "delula_job_duration_seconds",
            "Processing time (start to completion) of generations completed in the last hour",
            labels=["source"])
        for source in (JobSource.BACKLOG, JobSource.USER):
            values = [secs for src, secs in snap["durations"] if src == source]
            family.add_metric([source], histogram(values), gsum_value=float(sum(values)))
        yield family

        for name, (metric, doc, labels) in COUNTERS.items():
            family = CounterMetricFamily(metric, doc, labels=list(labels))
            for series, n in snap["counters"].get(name, []):
                family.add_metric([series.get(label, "") for label in labels], float(n))
            yield family

        state = snap["breaker"]
        family = GaugeMetricFamily("delula_provider_breaker_state",
                                   "1 for the provider circuit breaker's state, 0 for the others",
                                   labels=["provider", "state"])
        for name in (breaker.CLOSED, breaker.OPEN, breaker.HALF_OPEN):
            family.add_metric([state["provider"], name], 1.0 if state["state"] == name else 0.0)
        yield family

        age = snap["heartbeatAge"]
        yield GaugeMetricFamily("delula_scheduler_heartbeat_age_seconds",
                                "Seconds since the scheduler leader last heartbeated (+Inf: never)",
                                value=float("inf") if age is None else age)
        yield GaugeMetricFamily("delula_scheduler_leader", "1 while a scheduler leader heartbeats",
                                value=1.0 if age is not None and age <= jobruns.LEADER_STALE_S else 0.0)

        family = GaugeMetricFamily("delula_paused", "1 for each pause in force (recipe_id 0: every recipe)",
                                   labels=["scope", "recipe_id"])
        paused = snap["paused"]
        for scope, held in ((pauses.QUEUE, paused.queue), (pauses.BACKLOG, paused.backlog)):
            for rid in sorted(held):
                family.add_metric([scope, str(rid)], 1.0)
        yield family


def is_metrics_token(settings, token: str) -> bool:
    """Is ``token`` the configured ``DELULA_METRICS_TOKEN``? (Constant time; never when unset.)"""
    configured = settings.metrics_token
    return bool(configured) and hmac.compare_digest(token.encode(), configured.encode())


def render(rt) -> bytes:
    """The Prometheus text exposition, cached for :data:`CACHE_TTL_S` seconds (writes do not
    empty the cache; concurrent misses compute once).

    Raises :class:`delula.storage.DatabaseUnavailable` when the database is down.
    """
    def build() -> bytes:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(DelulaCollector(snapshot(rt)))
        return generate_latest(registry)

    return rt.cache("metrics", ttl=CACHE_TTL_S, maxsize=1, keep=True).get_or_compute("text", build)
