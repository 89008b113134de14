"""The overview's data: health now and over a time range, aggregated in SQL, cached briefly.

:func:`snapshot` answers everything the dashboard's overview shows — tiles, per-recipe backlog,
the time series and the processing-time distribution — in a handful of bounded queries
(``storage.dashboard``), plus ``backlog.status``, the scheduler's leader (``jobruns``) and the
Alerts panel (``alerts.panel``: one read of the small ``alerts`` table). Series
are aligned on one list of bucket starts with gaps filled (counts with 0; queue samples with
``None``, so a chart shows a gap where no scheduler was sampling rather than an invented value).
Results are cached for :data:`CACHE_TTL_S` seconds per (range, recipe), so any number of open
dashboards costs the database one snapshot per few seconds.

The day and the week read ``stat_counts``, which :func:`roll_up` (a job of ``schedule``) fills
for every closed hour, and the raw tables only for the hours since: their totals start at the hour
holding the range's start, and their processing-time percentiles are read from duration buckets
(to the second below 16 s, within 12 % above; ``dashboard.DURATION_EDGES``).
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from . import alerts, backlog, breaker, demand, jobruns
from .clock import isoformat
from .storage import dashboard

CACHE_TTL_S = 5.0
CLAIMS_WINDOW = timedelta(hours=1)
HIT_RATE_DAY = timedelta(days=1)       # the hit-rate chart: per hour over the last day
HIT_RATE_TOP = 4                       # recipes drawn beside the total (the most attempted of the day)
# Processing-time histogram edges in seconds; the last bin holds everything above.
PROCESSING_EDGES = (0, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 480)
assert set(PROCESSING_EDGES) <= set(dashboard.DURATION_EDGES)   # the rolled-up histogram bins exactly
FAILED_CLAIM_OUTCOMES = ("no_backlog", "race", "insufficient_credits", "rate_limited", "invalid")


@dataclass(frozen=True)
class Range:
    key: str
    label: str
    span: timedelta
    bucket_s: int


RANGES: dict[str, Range] = {
    "1h": Range("1h", "last hour", timedelta(hours=1), 60),
    "24h": Range("24h", "last 24 hours", timedelta(hours=24), 15 * 60),
    "7d": Range("7d", "last 7 days", timedelta(days=7), 2 * 3600),
}
DEFAULT_RANGE = "1h"


class OverviewError(ValueError):
    """An unknown time range or recipe filter."""


def get_range(key: str | None) -> Range:
    try:
        return RANGES[key or DEFAULT_RANGE]
    except KeyError:
        raise OverviewError(f"unknown time range {key!r}; one of {', '.join(RANGES)}") from None


def bucket_starts(now: datetime, rng: Range) -> list[int]:
    """Epoch seconds of every bucket from the one holding ``now - span`` to the one holding ``now``."""
    width = rng.bucket_s
    end = int(now.timestamp()) // width * width
    start = int((now - rng.span).timestamp()) // width * width
    return list(range(start, end + 1, width))


def _iso(epoch: int) -> str:
    return isoformat(datetime.fromtimestamp(epoch, tz=timezone.utc))


def snapshot(rt, range_key: str | None = None, recipe_id: int | None = None) -> dict:
    """Everything the overview shows for the time range ``range_key`` ("1h", "24h", "7d") and,
    optionally, one recipe (tiles, series and distribution narrow to it; the health banner and
    the queue-length samples stay global)."""
    rng = get_range(range_key)
    if recipe_id is not None and (not isinstance(recipe_id, int) or isinstance(recipe_id, bool)):
        raise OverviewError("recipe filter must be a recipe id")
    return rt.cache("overview", ttl=CACHE_TTL_S).get_or_compute(
        (rng.key, recipe_id), lambda: _compute(rt, rng, recipe_id))


def _compute(rt, rng: Range, recipe_id: int | None) -> dict:
    now = rt.now()
    since = now - rng.span
    buckets = bucket_starts(now, rng)
    first = datetime.fromtimestamp(buckets[0], tz=timezone.utc)  # whole first bucket
    edges = list(PROCESSING_EDGES)
    with rt.store.begin() as s:
        live = dashboard.live_counts(s, recipe_id)
        queue_rows = dashboard.queue_series(s, first, rng.bucket_s)
        claims_hour = dashboard.claim_outcomes(s, now - CLAIMS_WINDOW, recipe_id)
        if rng.bucket_s % dashboard.SLOT == 0:   # whole quarter hours: from the roll-up
            series, totals = _counts(s, _floor_hour(first), _floor_hour(since), rng.bucket_s, recipe_id)
            claim_rows, normal_rows, failure_rows, finished, histogram, n_processed, (p50, p95) = \
                _from_counts(series, totals, edges)
        else:
            claim_rows = dashboard.claim_series(s, first, rng.bucket_s, recipe_id)
            normal_rows = dashboard.user_generation_series(s, first, rng.bucket_s, recipe_id)
            failure_rows = dashboard.failure_series(s, first, rng.bucket_s, recipe_id)
            finished = dashboard.finished_counts(s, since, recipe_id)
            histogram = dashboard.processing_histogram(s, since, edges, recipe_id)
            n_processed, (p50, p95) = dashboard.processing_percentiles(s, since, (0.5, 0.95), recipe_id)
    all_recipes = backlog.status(rt)
    leader = jobruns.leader(rt)
    provider = breaker.current(rt)
    alert_panel = alerts.panel(rt)
    hit_rate = _hit_rate(rt, now, recipe_id, {r["recipeId"]: r["name"] for r in all_recipes})

    index = {b: i for i, b in enumerate(buckets)}

    def counts(rows, key_of=lambda r: None) -> dict:
        series: dict = {}
        for row in rows:
            bucket, key, n = row[0], key_of(row), row[-1]
            if bucket in index:
                series.setdefault(key, [0] * len(buckets))[index[bucket]] += n
        return series

    queue = {"pending": [None] * len(buckets), "processing": [None] * len(buckets), "backlog": [None] * len(buckets),
             "backlogInFlight": [None] * len(buckets)}
    for bucket, pending, processing, ready, in_flight in queue_rows:
        if bucket in index:
            i = index[bucket]
            queue["pending"][i], queue["processing"][i] = round(pending, 2), round(processing, 2)
            queue["backlog"][i], queue["backlogInFlight"][i] = round(ready, 2), round(in_flight, 2)

    claims = counts(claim_rows, lambda r: r[1])
    zeros = [0] * len(buckets)
    failed_claims = [sum(claims.get(o, zeros)[i] for o in FAILED_CLAIM_OUTCOMES) for i in range(len(buckets))]
    failures = counts(failure_rows, lambda r: r[1])
    normal = counts(normal_rows).get(None, list(zeros))

    recipes = [r for r in all_recipes if recipe_id is None or r["recipeId"] == recipe_id]
    below = [r for r in all_recipes if r.get("belowMinimum", r["completed"] < r["minimum"])]
    unsuccessful = finished["failed"] + finished["rejected"]
    n_finished = finished["completed"] + unsuccessful
    claimed_hour = claims_hour.get("claimed", 0)
    attempts_hour = sum(claims_hour.values())

    bins = []
    for i, low in enumerate(edges):
        high = edges[i + 1] if i + 1 < len(edges) else None
        bins.append({"from": low, "to": high, "count": histogram.get(i, 0)})

    problems = []
    if leader is None:
        problems.append({"kind": "no_leader",
                         "message": "No scheduler holds the leader lock: backlog maintenance and the queue "
                                    "are not running. Start `python -m delula worker` (or a web process with "
                                    "the scheduler on)."})
    if provider["state"] != breaker.CLOSED:
        problems.append({"kind": "breaker_open", "message": breaker.sentence(provider),
                         "nextProbeAt": provider["nextProbeAt"]})
    for r in below:
        problems.append({"kind": "below_minimum", "recipeId": r["recipeId"],
                         "message": f"{r['name']}: {r['completed']} ready, minimum {r['minimum']}"
                                    f" ({r['inFlight']} in flight)"})

    return {
        "generatedAt": isoformat(now),
        "range": {"key": rng.key, "label": rng.label, "since": isoformat(since), "until": isoformat(now),
                  "bucketSeconds": rng.bucket_s},
        "recipeId": recipe_id,
        "buckets": [_iso(b) for b in buckets],
        "kpis": {
            "backlogTotal": sum(r["completed"] for r in recipes),
            "inFlightTotal": sum(r["inFlight"] for r in recipes),
            "recipesBelowMinimum": sum(1 for r in below if recipe_id is None or r["recipeId"] == recipe_id),
            "recipesTotal": len(recipes),
            "pending": live["pending"],
            "processing": live["processing"],
            "claimsLastHour": claimed_hour,
            "claimAttemptsLastHour": attempts_hour,
            "failedClaimsLastHour": attempts_hour - claimed_hour,
            "completedInRange": finished["completed"],
            "failedInRange": finished["failed"],
            "rejectedInRange": finished["rejected"],
            "errorRate": (unsuccessful / n_finished) if n_finished else None,
        },
        "recipes": recipes,
        "queue": queue,
        "claims": claims,
        "generations": {"instant": claims.get("claimed", list(zeros)), "normal": normal},
        "failures": {"backlog": failures.get("backlog", list(zeros)), "user": failures.get("user", list(zeros)),
                     "rejected": failures.get(dashboard.REJECTED_KEY, list(zeros)), "claims": failed_claims},
        "processing": {"bins": bins, "count": n_processed,
                       "p50": round(p50, 2) if p50 is not None else None,
                       "p95": round(p95, 2) if p95 is not None else None},
        "hitRate": hit_rate,
        "leader": leader,
        "alerts": alert_panel,
        "health": {"ok": not problems, "problems": problems, "belowMinimum": len(below),
                   "hasLeader": leader is not None},
    }


def _hit_rate(rt, now: datetime, recipe_id: int | None, names: dict[int, str]) -> dict:
    """The instant hit rate (hits over attempts that reached the pool) over the last hour and day,
    and per hour over the last day: in total and for the most attempted recipes, or for the
    filtered recipe only. From ``demand_minutes`` and the raw tail (``demand.hit_rates``)."""
    def narrowed(rates: dict) -> dict:
        if recipe_id is None:
            return {k: rates[k] for k in ("attempts", "hits", "hitRate")}
        return rates["recipes"].get(recipe_id, {"attempts": 0, "hits": 0, "hitRate": None})

    hour = demand.hit_rates(rt, now - CLAIMS_WINDOW, now)
    day = demand.hit_rates(rt, now - HIT_RATE_DAY, now)
    series = demand.hit_rate_series(rt, now - HIT_RATE_DAY, 3600, now)
    if recipe_id is None:
        lines = [{"recipeId": None, "name": "all recipes", **series["total"]}]
        top = sorted(series["recipes"].items(), key=lambda kv: (-sum(kv[1]["attempts"]), kv[0]))[:HIT_RATE_TOP]
    else:
        lines = []
        top = [(recipe_id, series["recipes"][recipe_id])] if recipe_id in series["recipes"] else []
    lines += [{"recipeId": rid, "name": names.get(rid, f"recipe {rid}"), **counts} for rid, counts in top]
    return {"lastHour": narrowed(hour), "lastDay": narrowed(day),
            "series": {"buckets": series["buckets"], "since": isoformat(now - HIT_RATE_DAY), "until": isoformat(now),
                       "lines": lines}}


# --- long ranges from the roll-up ----------------------------------------------------------------

ROLL_UP_LAG = timedelta(minutes=2)     # an hour is rolled up this long after it ends (late commits)
ROLL_UP_CHUNK = timedelta(hours=24)    # hours per run: a first roll-up of a busy week takes a few runs
KEEP_ROLLED = timedelta(days=35)


def _floor_hour(t: datetime) -> datetime:
    return t.replace(minute=0, second=0, microsecond=0)


def roll_up(rt) -> dict:
    """Add the hours closed since the last run to ``stat_counts`` (the schedule's ``stats-rollup``
    job). The first run starts a week and two hours back, enough for the longest range."""
    now = rt.now()
    with rt.store.begin() as s:
        start = dashboard.rolled_until(s, lock=True) or _floor_hour(now - max(r.span for r in RANGES.values())
                                                                    - timedelta(hours=2))
        end = min(_floor_hour(now - ROLL_UP_LAG), start + ROLL_UP_CHUNK)
        if end <= start:
            return {"hoursRolled": 0}
        stored = dashboard.add_rolled(s, dashboard.raw_counts(s, start, end), end)
        pruned = dashboard.prune_rolled(s, now - KEEP_ROLLED)
    return {"hoursRolled": int((end - start) / timedelta(hours=1)), "rows": stored, "until": isoformat(end),
            "rowsPruned": pruned}


def _counts(s, start: datetime, totals_from: datetime, width: int, recipe_id: int | None):
    """The series metrics per bucket from ``start`` and the totals from ``totals_from`` (both
    whole hours, ``start <= totals_from``): rolled-up hours summed in SQL, then the raw tables for the rest (the open hour
    and any the roll-up has not reached, e.g. with no scheduler running)."""
    until = dashboard.rolled_until(s)
    cut = max(until, start) if until is not None else start
    series: list = []
    totals: list = []
    if cut > start:
        series += dashboard.rolled_series(s, start, cut, width, recipe_id)
        totals += dashboard.rolled_totals(s, min(totals_from, cut), cut, recipe_id)
    tail_from = int(totals_from.timestamp())
    for at, _, metric, key, n in dashboard.raw_counts(s, cut, None, recipe_id):
        if metric in dashboard.SERIES_METRICS:
            series.append((at // width * width, metric, key, n))
        if metric in dashboard.TOTAL_METRICS and at >= tail_from:
            totals.append((metric, key, n))
    return series, totals


def _from_counts(series: list, totals: list, edges: list[float]):
    """The range's claim, normal and failure series, its completed, failed and rejected totals, the
    histogram and percentiles of processing times. Completions are counted per duration bucket
    (``dashboard.DURATION_EDGES``), whose edges include the histogram's, so the histogram is
    exact; percentiles are placed within their bucket (within their second below 16 s, within
    12 % above: see ``DURATION_EDGES``)."""
    claims = [(bucket, key, n) for bucket, metric, key, n in series if metric == "claim"]
    normal = [(bucket, n) for bucket, metric, _, n in series if metric == "normal"]
    failures = [(bucket, key, n) for bucket, metric, key, n in series if metric == "failed"]
    finished = {"completed": 0, "failed": 0, "rejected": 0}
    durations: dict[tuple[int, int | None], int] = {}
    for metric, key, n in totals:
        finished["rejected" if metric == "failed" and key == dashboard.REJECTED_KEY else metric] += n
        bounds = dashboard.duration_bounds(key) if metric == "completed" else None
        if bounds is not None:
            durations[bounds] = durations.get(bounds, 0) + n
    histogram: dict[int, int] = {}
    for (low, _), n in durations.items():
        i = bisect.bisect_right(edges, low) - 1   # the bin whose lower edge is the last <= the bucket's
        if i >= 0:
            histogram[i] = histogram.get(i, 0) + n
    n_processed, percentiles = _percentiles_of_buckets(durations, (0.5, 0.95))
    return claims, normal, failures, finished, histogram, n_processed, percentiles


def _percentiles_of_buckets(counts: dict[tuple[int, int | None], int], fractions) -> tuple[int, list[float | None]]:
    """Percentiles (ranked like ``percentile_cont``) of durations known to their bucket
    ``(lower, upper)`` seconds, each bucket's durations placed evenly within it (the open last
    bucket's at its lower edge). The value returned lies in the bucket of the duration at rank
    ``⌊f·(n-1)⌋``, so it is within one bucket's width of it (12 % from 16 s up, a second below);
    ``percentile_cont`` lies between that duration and the next."""
    n = sum(counts.values())
    if n == 0:
        return 0, [None for _ in fractions]
    ordered = sorted(counts.items())
    out = []
    for f in fractions:
        rank, seen = f * (n - 1), 0
        for (low, high), c in ordered:
            if rank < seen + c:
                within = min(1.0, (rank - seen + 0.5) / c)
                out.append(low + (high - low) * within if high is not None else float(low))
                break
            seen += c
    return n, out
