"""Discrete-event simulation of the backlog under a policy from :mod:`delula.policies`.

Model. Each recipe keeps a pool of pre-generated items. An instant attempt is a **hit** if the
pool holds an item (the oldest is taken), else a **miss**; a miss falls back (with probability
``fallback_rate``) to a *user* job for that recipe. At most ``concurrency`` jobs run at once;
the queue serves user jobs first (FIFO), then backlog jobs (FIFO). A job's run time is uniform in
``lead_time`` seconds; it fails with probability ``failure_rate`` at its end and is put back at
the head of its queue (every run counts as work). Every ``maintenance_interval_s`` the policy
plans every recipe at once, each on a :class:`~delula.policies.RecipeState` — pool size, backlog jobs pending or
processing, attempts in the last hour / 60, and the median lead time (creation to completion,
minutes) of backlog jobs completed in the last day (the recipe's own, else all recipes', else
2.0), the forecast's inputs and the pass's context — and creates the jobs
:func:`delula.policies.plan` orders. A delivered item older than ``max_age_h`` (from its
completion) is never handed out: it is removed as expired at the next attempt or pass. The
oldest item is taken first.

Choices. On a trace with choices (``trace.has_choices``), every backlog job is given form data
when it is ordered, drawn from the choices its recipe's attempts asked for over the last
``choice_window_h`` hours (misses included) by ``choice_sampler``: ``"joint"``, what the
maintenance pass does (``delula.choices.draw_forms``, with an ``exploration`` share drawn from the
recipe's schema), or ``"marginal"``, the per-field baseline (``delula.choices.marginal_forms``).
An attempt with choices is a hit only if an item has them all (``forms.matches``; the oldest such
item is taken), and the result adds ``choiceAttempts``, ``choiceHits`` and ``choiceHitRate``
(matched ÷ attempts with choices). An attempt without choices takes the oldest item, as before.
A miss's fallback job is the same demand and is not counted again as an observation.

Events (attempts from the trace, job completions, maintenance passes) are taken in time order
from the sorted trace and a heap; nothing ticks per second. Only the last ``days_scored`` days
(after ``warmup_days``) are scored.
"""
from __future__ import annotations

import heapq
import json
import random
from bisect import bisect_left, insort
from collections import deque
from collections.abc import Callable

import numpy as np

from delula import choices as choice_forms
from delula import forecast, forms, policies
from delula.config import Settings

from .traces import Trace

DAY = 86400.0
RATE_WINDOW_S = 3600.0
LEAD_WINDOW_S = DAY

_USER, _BACKLOG = 0, 1
SAMPLERS = ("joint", "marginal")


def simulate(trace: Trace, policy: str, *, days_scored: float, warmup_days: float,
             concurrency: int = 3, lead_time: tuple[float, float] = (5.0, 40.0),
             failure_rate: float = 0.05, max_age_h: float = 72.0, fallback_rate: float = 1.0,
             maintenance_interval_s: float = 60.0, minimum: int = 3, max_backlog: int = 30,
             service_level: float = 0.98, seed: int = 1,
             progress: Callable[[float], None] | None = None, series: bool = True,
             choice_sampler: str = "joint", exploration: float = Settings.exploration,
             choice_window_h: float = Settings.choice_window_h) -> dict:
    """Run ``trace`` under ``policy`` and score the last ``days_scored`` days (see module doc)."""
    if choice_sampler not in SAMPLERS:
        raise ValueError(f"unknown choice sampler {choice_sampler!r}; one of {', '.join(SAMPLERS)}")
    if not 0 <= exploration <= 1:
        raise ValueError(f"exploration must be a share from 0 to 1, got {exploration!r}")
    if not choice_window_h > 0:
        raise ValueError(f"choice_window_h must be positive, got {choice_window_h!r}")
    if policy not in policies.POLICIES:
        raise ValueError(f"unknown backlog policy {policy!r}; one of {', '.join(policies.POLICIES)}")
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    lo, hi = float(lead_time[0]), float(lead_time[1])
    if not 0 <= lo <= hi:
        raise ValueError(f"lead_time must be (lo, hi) with 0 <= lo <= hi, got {lead_time!r}")
    rng = random.Random(seed)
    rnd, unif = rng.random, rng.uniform
    n = len(trace.recipes)
    score_start = float(warmup_days) * DAY
    end = score_start + float(days_scored) * DAY
    max_age = float(max_age_h) * 3600.0
    interval = float(maintenance_interval_s)
    if interval <= 0:
        raise ValueError("maintenance_interval_s must be positive")

    times = trace.times.tolist()
    recs = trace.recipe.tolist()
    n_att = len(times)

    pools: list[deque] = [deque() for _ in range(n)]    # (completion time, form data), oldest first
    in_flight = [0] * n
    recent: list[deque] = [deque() for _ in range(n)]   # attempt times, last hour
    leads: list[deque] = [deque() for _ in range(n)]    # (completion time, lead min), last day
    all_leads: deque = deque()
    lead_sorted: list[list[float]] = [[] for _ in range(n)]  # the same lead times, sorted
    all_sorted: list[float] = []
    run_times: deque = deque()                          # (end time, minutes run), last day
    run_sum = 0.0
    n_hours = int(end // 3600.0) + 2
    hourly = np.zeros((n, n_hours))                     # attempts per recipe and hour, for the forecast
    learnt: list = [None, -1]                           # (profile, hour it was learnt at)
    user_q: deque = deque()
    backlog_q: deque = deque()
    running = 0
    events: list = []                                   # (time, seq, job)
    seq = 0

    stock = 0
    last_t = 0.0
    integral = 0.0
    attempts = hits = generations = work = expired = 0
    misses = [0] * n

    with_choices = trace.has_choices
    asked = trace.choices if with_choices else None
    schemas = [(trace.schemas or {}).get(name) or [] for name in trace.recipes]
    form_rng = random.Random(f"{seed}:forms")     # its own stream: the run's other draws stay as without choices
    window = float(choice_window_h) * 3600.0
    seen_at: list[deque] = [deque() for _ in range(n)]   # (attempt time, key) of choices, last window
    seen_n: list[dict] = [{} for _ in range(n)]          # key -> attempts that asked for it in the window
    seen_of: dict[str, dict] = {}                         # key -> the choices
    keys: dict[int, str] = {}                             # id of a trace's choices dict -> key
    choice_attempts = choice_hits = 0
    memos: list[dict] = [{} for _ in range(n)]           # per recipe, what choices.usable made of its choices

    def observe(r: int, t: float, c: dict) -> None:
        key = keys.get(id(c))
        if key is None:
            key = keys[id(c)] = json.dumps(c, sort_keys=True)
            seen_of.setdefault(key, c)
        seen_at[r].append((t, key))
        seen_n[r][key] = seen_n[r].get(key, 0) + 1

    def observations(r: int, t: float) -> list[tuple[dict, int]]:
        dq, counts = seen_at[r], seen_n[r]
        cutoff = t - window
        while dq and dq[0][0] < cutoff:
            key = dq.popleft()[1]
            counts[key] -= 1
            if not counts[key]:
                del counts[key]
        return [(seen_of[k], c) for k, c in counts.items()]

    def draw(r: int, t: float, count: int) -> list:
        if not with_choices:
            return [None] * count
        seen = observations(r, t)
        if choice_sampler == "marginal":
            return choice_forms.marginal_forms(schemas[r], seen, count, form_rng, memo=memos[r])
        return choice_forms.draw_forms(schemas[r], seen, count, exploration=exploration, rng=form_rng,
                                       memo=memos[r])
    samples: list[list[float]] = []                     # [hour, stock at it, attempts and hits in the hour before]
    hour_mark = [0, 0]
    next_sample = score_start

    def advance(t: float) -> None:
        nonlocal last_t, integral
        if t > score_start:
            a = last_t if last_t > score_start else score_start
            integral += stock * (t - a)
        last_t = t

    def start_jobs(t: float) -> None:
        nonlocal running, seq, work
        while running < concurrency and (user_q or backlog_q):
            job = user_q.popleft() if user_q else backlog_q.popleft()
            running += 1
            if score_start <= t < end:
                work += 1
            seq += 1
            heapq.heappush(events, (t + unif(lo, hi), seq, job, t))

    def purge(r: int, t: float) -> None:
        nonlocal stock, expired
        pool = pools[r]
        cutoff = t - max_age
        while pool and pool[0][0] <= cutoff:
            pool.popleft()
            stock -= 1
            if t >= score_start:
                expired += 1

    def _trim(dq: deque, sl: list, cutoff: float) -> None:
        while dq and dq[0][0] < cutoff:
            del sl[bisect_left(sl, dq.popleft()[1])]

    def _median(sl: list) -> float:
        k = len(sl)
        return sl[k // 2] if k % 2 else (sl[k // 2 - 1] + sl[k // 2]) / 2.0

    def median_lead(r: int, t: float) -> float:
        cutoff = t - LEAD_WINDOW_S
        _trim(leads[r], lead_sorted[r], cutoff)
        _trim(all_leads, all_sorted, cutoff)
        if lead_sorted[r]:
            return _median(lead_sorted[r])
        if all_sorted:
            return _median(all_sorted)
        return policies.DEFAULT_LEAD_TIME_MIN

    uses_forecast = policy == "forecast"
    ctx_base = dict(max_backlog=max_backlog, service_level=service_level, concurrency=concurrency,
                    interval_min=interval / 60.0)

    def forecasts(t: float, last: list[float]) -> list[tuple]:
        hour = int(t // 3600.0)
        if learnt[1] != hour:   # the profile learns once an hour, from complete hours
            first = max(0, hour - forecast.HISTORY_HOURS)
            learnt[0] = forecast.profile(hourly[:, first:hour], (trace.first_how + first) % forecast.HOURS_PER_WEEK)
            learnt[1] = hour
        return forecast.ahead(learnt[0], last, (t % 3600.0) / 60.0)

    def mean_run_time(t: float) -> float:
        nonlocal run_sum
        cutoff = t - LEAD_WINDOW_S
        while run_times and run_times[0][0] < cutoff:
            run_sum -= run_times.popleft()[1]
        return run_sum / len(run_times) if run_times else policies.PassContext.run_time_min

    def maintain(t: float) -> None:
        cutoff = t - RATE_WINDOW_S
        last = []
        for r in range(n):
            purge(r, t)
            dq = recent[r]
            while dq and dq[0] <= cutoff:
                dq.popleft()
            last.append(len(dq) / 60.0)
        fc = forecasts(t, last) if uses_forecast else [()] * n
        states = [policies.RecipeState(minimum=minimum, completed=len(pools[r]), in_flight=in_flight[r],
                                       rate_per_min=last[r], lead_time_min=median_lead(r, t),
                                       forecast=fc[r])
                  for r in range(n)]
        ctx = policies.PassContext(run_time_min=mean_run_time(t), **ctx_base)
        for r, order in enumerate(policies.plan(policy, states, ctx)):
            if order.jobs > 0:
                for form in draw(r, t, order.jobs):
                    backlog_q.append((_BACKLOG, r, t, form))
            in_flight[r] += order.jobs
        start_jobs(t)

    next_tick = 0.0
    i = 0
    report_every = max(1, n_att // 50)
    inf = float("inf")
    while True:
        ta = times[i] if i < n_att else inf
        tj = events[0][0] if events else inf
        t = min(ta, tj, next_tick)
        if t >= end:
            break
        while next_sample <= t and next_sample < end:
            if series:
                samples.append([round((next_sample - score_start) / 3600.0, 3), stock,
                                attempts - hour_mark[0], hits - hour_mark[1]])
                hour_mark[:] = [attempts, hits]
            next_sample += 3600.0
        if t == tj and tj <= ta and tj <= next_tick:
            _, _, job, began = heapq.heappop(events)
            running -= 1
            run_times.append((t, (t - began) / 60.0))
            run_sum += (t - began) / 60.0
            kind, r, created, form = job
            if failure_rate and rnd() < failure_rate:
                (user_q if kind == _USER else backlog_q).appendleft(job)
            elif kind == _BACKLOG:
                in_flight[r] -= 1
                advance(t)
                pools[r].append((t, form))   # completions come in time order; aged from completion
                stock += 1
                lead = (t - created) / 60.0
                leads[r].append((t, lead))
                all_leads.append((t, lead))
                insort(lead_sorted[r], lead)
                insort(all_sorted, lead)
                if t >= score_start:
                    generations += 1
            start_jobs(t)
        elif t == ta and ta <= next_tick:
            r = recs[i]
            wants = asked[i] if with_choices else None
            i += 1
            recent[r].append(t)
            hourly[r, int(t // 3600.0)] += 1
            advance(t)
            purge(r, t)
            scored = t >= score_start
            pool = pools[r]
            if wants:
                observe(r, t, wants)
                taken = next((k for k, item in enumerate(pool) if forms.matches(item[1], wants)), None)
                if scored:
                    choice_attempts += 1
            else:
                taken = 0 if pool else None
            if taken is not None:
                del pool[taken]
                stock -= 1
                if scored:
                    hits += 1
                    if wants:
                        choice_hits += 1
            else:
                if scored:
                    misses[r] += 1
                if fallback_rate >= 1.0 or rnd() < fallback_rate:
                    user_q.append((_USER, r, t, wants))
                    start_jobs(t)
            if scored:
                attempts += 1
            if progress is not None and i % report_every == 0:
                progress(min(1.0, t / end) if end > 0 else 1.0)
        else:
            advance(t)
            maintain(t)
            next_tick += interval
    advance(end)
    while series and next_sample < end:
        samples.append([round((next_sample - score_start) / 3600.0, 3), stock,
                        attempts - hour_mark[0], hits - hour_mark[1]])
        hour_mark[:] = [attempts, hits]
        next_sample += 3600.0
    if progress is not None:
        progress(1.0)
    scored_s = end - score_start
    result = {
        "attempts": attempts,
        "hits": hits,
        "hitRate": hits / attempts if attempts else 0.0,
        "generations": generations,
        "work": work,
        "expired": expired,
        "meanStock": integral / scored_s if scored_s > 0 else 0.0,
        "stockItemHours": integral / 3600.0,
        "missesByRecipe": {trace.recipes[r]: misses[r] for r in range(n)},
    }
    if with_choices:
        result.update(choiceAttempts=choice_attempts, choiceHits=choice_hits,
                      choiceHitRate=choice_hits / choice_attempts if choice_attempts else 0.0,
                      sampler=choice_sampler)
    if series:
        result["series"] = samples
    return result
