"""The queue service: generation jobs run against the provider, a bounded number at a time.

One :func:`tick` (SPEC §5, about every second from the scheduler) does three steps:

1. **time out** jobs processing longer than ``DELULA_JOB_TIMEOUT_S`` -- a failed attempt,
   cancelled at the provider (a last status check first, so a job that finished while no
   poller ran is completed rather than wasted);
2. **poll** submitted jobs whose ``next_poll_at`` is due. The n-th poll of a submission
   (``poll_count`` n, from 0) comes ``schedule[n mod len]`` seconds after the previous one, the
   first one after the submit. COMPLETED stores the asset; FAILED, UNKNOWN or a non-retryable
   provider error is a failed attempt; a retryable provider error is recorded in
   ``metadata.lastError`` and the job is polled again at its next slot;
3. **start** pending jobs -- user jobs before backlog refills, then oldest first -- while fewer
   than ``DELULA_MAX_CONCURRENT_JOBS`` are processing.

Steps 1 and 2 talk to the provider for several jobs side by side (:data:`PROVIDER_THREADS`), so
a provider that hangs for some jobs delays the others by no more than one call's timeout.

A failed attempt goes back to ``pending`` with exponential backoff (``next_attempt_at``) while
``attempts < DELULA_MAX_ATTEMPTS``, else the job is ``failed`` with a readable error and a
charged user generation is refunded, exactly once.

Concurrency and crashes: every transition is a short transaction whose statement is conditional
on the job's status and attempt number (see ``storage.jobs``), so pollers in several processes,
timeouts and ops actions never apply twice. Provider calls happen between transactions, never
inside one: a job is marked ``processing`` and committed *before* it is submitted, and its
request id is stored after. A crash in between leaves a processing job without request id,
which :func:`recover` (run by the scheduler when it becomes leader) submits again; submitted
jobs are simply polled again. The concurrency cap holds across processes because counting and
claiming run under one lock (a transaction-level advisory lock on PostgreSQL, the write lock on
SQLite) and pending rows are claimed with ``FOR UPDATE SKIP LOCKED``.

Time comes from ``rt.clock``, so tests drive schedules, timeouts and backoff with a ManualClock.
"""
from __future__ import annotations

import logging
import random
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from . import forms
from .generations import BACKLOG_PRIORITY, generation_json, isoformat
from .providers import ProviderError, Submission
from .storage import SYSTEM_BACKLOG_USER_ID, DatabaseUnavailable, accounts, catalog, jobs
from .storage import stats as store_stats

log = logging.getLogger(__name__)

POLL_BATCH = 50            # polls per tick (the rest are due next tick)
TIMEOUT_BATCH = 50
PROVIDER_THREADS = 8       # a tick's polls (and timeouts) talk to the provider side by side
POLL_LEASE_S = 60.0        # a due poll is leased this long: no second poller takes it meanwhile
MAX_RETRY_DELAY_S = 600.0
STATS_TTL_S = 10.0         # GET /api/queue/stats is cached at most this long (SPEC: <= 30 s)
NEXT_POLLS_SHOWN = 5
FINISHED_COUNT_WINDOW = timedelta(hours=24)   # status counts: finished jobs of the last day only
PREFILL_MAX_SLEEP_S = 1.0
TERMINAL = ("completed", "failed", "cancelled")
SUMMARY_KEYS = ("timedOut", "polled", "completed", "retried", "failed", "started", "errors")


class QueueError(ValueError):
    """An ops action on a job was refused; the message says why."""


class JobNotFound(QueueError):
    """No generation has that id."""


# --------------------------------------------------------------------------------------------
# timing
# --------------------------------------------------------------------------------------------
def poll_delay(settings, n: int) -> float:
    """Seconds between poll ``n - 1`` (or the submit, for n = 0) and poll ``n``."""
    schedule = settings.poll_schedule
    return float(schedule[n % len(schedule)])


def retry_delay(settings, attempts: int) -> float:
    """Backoff before the next attempt after ``attempts`` failed ones: the first poll interval,
    doubled per attempt (15, 30, 60 … s by default, capped at 10 minutes). Tied to the poll
    schedule so a fast test schedule retries fast too."""
    return min(float(settings.poll_schedule[0]) * 2 ** max(0, attempts - 1), MAX_RETRY_DELAY_S)


# --------------------------------------------------------------------------------------------
# the tick
# --------------------------------------------------------------------------------------------
def tick(rt) -> dict:
    """One round of the queue service; returns what it did (counts of SUMMARY_KEYS).

    A provider failure or a bug in one job is logged and counted in ``errors``, never raised;
    :class:`storage.DatabaseUnavailable` is raised (the scheduler records it and tries again).
    """
    summary = dict.fromkeys(SUMMARY_KEYS, 0)
    _time_out(rt, summary)
    _poll(rt, summary)
    _start(rt, summary)
    if summary["completed"] or summary["failed"] or summary["retried"]:
        rt.invalidate()
    return summary


def _guarded(rt, summary: dict, what: str, gen, step) -> None:
    """Run one job's step; a crash in it is logged and counted, never stops the tick."""
    try:
        step()
    except DatabaseUnavailable:
        raise
    except Exception:
        summary["errors"] += 1
        log.exception("queue: %s of generation %s failed", what, gen.id)


def _each_side_by_side(rt, summary: dict, what: str, gens: list, step) -> None:
    """``step(gen, counts)`` for every job, on up to :data:`PROVIDER_THREADS` threads: a provider
    slow to answer for one job (up to ``DELULA_PROVIDER_TIMEOUT_S`` per call) holds up no other.
    Each job's step is :func:`_guarded` and counts into its own dict, added to ``summary`` here;
    :class:`storage.DatabaseUnavailable` from any of them is raised once all have ended."""
    def run(gen) -> dict:
        counts = dict.fromkeys(SUMMARY_KEYS, 0)
        _guarded(rt, counts, what, gen, lambda: step(gen, counts))
        return counts

    if len(gens) <= 1:
        done = [run(gen) for gen in gens]
    else:
        with ThreadPoolExecutor(min(PROVIDER_THREADS, len(gens)), thread_name_prefix=f"delula-{what}") as pool:
            done = list(pool.map(run, gens))
    for counts in done:
        for key, n in counts.items():
            summary[key] += n


def _time_out(rt, summary: dict) -> None:
    now = rt.now()
    limit = rt.settings.job_timeout_s
    with rt.store.begin() as s:
        late = jobs.timed_out(s, started_before=now - timedelta(seconds=limit), limit=TIMEOUT_BATCH)
    _each_side_by_side(rt, summary, "timeout", late, lambda gen, counts: _time_out_one(rt, gen, limit, counts))


def _time_out_one(rt, gen, limit: float, summary: dict) -> None:
    sub = _submission(gen)
    if sub is not None and _last_look(rt, gen, sub, summary):
        return
    message = f"timed out after {limit:g} s"
    meta = gen.meta or {}
    if meta.get("lastError") and meta.get("lastErrorAttempt") == gen.attempts:  # the provider kept failing
        message += f"; last provider error: {meta['lastError']}"
    outcome = _fail_attempt(rt, gen, message)
    if outcome is None:
        return  # someone else moved it on
    summary["timedOut"] += 1
    summary[outcome] += 1
    if sub is not None:
        _cancel_at_provider(rt, sub, gen.id)


def _last_look(rt, gen, sub: Submission, summary: dict) -> bool:
    """Before timing a job out, ask once more: if it finished meanwhile (e.g. while no poller
    ran), keep its result. ``True`` when it was completed here."""
    try:
        if rt.provider.status(sub).state != "COMPLETED":
            return False
        result = rt.provider.result(sub)
    except ProviderError:
        return False
    summary["polled"] += 1
    if _complete(rt, gen, result):
        summary["completed"] += 1
    return True


def _poll(rt, summary: dict) -> None:
    now = rt.now()
    with rt.store.begin() as s:
        due = jobs.lease_due_polls(s, now=now, lease_until=now + timedelta(seconds=POLL_LEASE_S),
                                   limit=POLL_BATCH)
    _each_side_by_side(rt, summary, "poll", due, lambda gen, counts: _poll_one(rt, gen, counts))


def _poll_one(rt, gen, summary: dict) -> None:
    summary["polled"] += 1
    sub = _submission(gen)
    if sub is None:
        message = "the provider's submission details are missing; submitting again"
    else:
        try:
            state = rt.provider.status(sub)
            if state.state in ("IN_QUEUE", "IN_PROGRESS"):
                _schedule_next_poll(rt, gen, {"providerState": state.state})
                return
            if state.state == "COMPLETED":
                if _complete(rt, gen, rt.provider.result(sub)):
                    summary["completed"] += 1
                return
            if state.state == "UNKNOWN":
                _cancel_at_provider(rt, sub, gen.id)  # it may still run: stop paying for it
            message = state.error or f"the provider reported {state.state}"
        except ProviderError as e:
            if e.retryable:
                summary["errors"] += 1
                log.warning("queue: poll of generation %s: %s (polling again later)", gen.id, e.message)
                _schedule_next_poll(rt, gen, {"lastError": e.message, "lastErrorAttempt": gen.attempts})
                return
            message = e.message
    outcome = _fail_attempt(rt, gen, message)
    if outcome is not None:
        summary[outcome] += 1


def _start(rt, summary: dict) -> None:
    now = rt.now()
    with rt.store.begin() as s:
        jobs.lock_queue_start(s)
        free = rt.settings.max_concurrent_jobs - jobs.count_processing(s)
        claimed = jobs.claim_pending(s, limit=free, now=now)
        recipes = {gen.recipe_id: catalog.get_recipe(s, gen.recipe_id) for gen in claimed}
    # committed: these jobs hold their slots before the provider hears of them
    for gen in claimed:
        def submit(gen=gen):
            outcome = _submit(rt, gen, recipes[gen.recipe_id])
            if outcome is not None:
                summary[outcome] += 1
        _guarded(rt, summary, "submit", gen, submit)


def submit_arguments(recipe, form_data: dict) -> dict:
    """What the provider receives: the recipe's name, a prompt, then the form values."""
    values = ", ".join(f"{k}: {v}" for k, v in (form_data or {}).items() if not str(k).startswith("_"))
    prompt = recipe.description or recipe.name
    if values:
        prompt = f"{prompt} ({values})"
    return {"recipe": recipe.name, "prompt": prompt, **(form_data or {})}


def _submit(rt, gen, recipe) -> str | None:
    """Submit a job marked processing; ``"started"``, ``"retried"``/``"failed"`` (the submit
    failed) or ``None`` when the job moved on meanwhile."""
    try:
        sub = rt.provider.submit(recipe.model_id, submit_arguments(recipe, gen.form_data))
    except ProviderError as e:
        log.warning("queue: submit of generation %s failed: %s", gen.id, e.message)
        return _fail_attempt(rt, gen, f"submit failed: {e.message}")
    now = rt.now()
    with rt.store.begin() as s:
        stored = jobs.store_submission(s, gen.id, gen.attempts, request_id=sub.request_id, provider=sub.to_dict(),
                                       next_poll_at=now + timedelta(seconds=poll_delay(rt.settings, 0)), now=now)
    if not stored:  # cancelled or timed out while we submitted: stop the provider's work
        _cancel_at_provider(rt, sub, gen.id)
        return None
    return "started"


# --------------------------------------------------------------------------------------------
# transitions
# --------------------------------------------------------------------------------------------
def _submission(gen) -> Submission | None:
    if not gen.provider_request_id:
        return None
    try:
        return Submission.from_dict((gen.meta or {}).get("provider"))
    except ValueError:
        return None


def _schedule_next_poll(rt, gen, meta_patch: dict) -> None:
    now = rt.now()
    delay = poll_delay(rt.settings, gen.poll_count + 1)
    with rt.store.begin() as s:
        jobs.record_poll(s, gen.id, gen.attempts, gen.poll_count, next_poll_at=now + timedelta(seconds=delay),
                         meta_patch=meta_patch, now=now)


def _complete(rt, gen, result) -> bool:
    now = rt.now()
    with rt.store.begin() as s:
        return jobs.complete(s, gen.id, gen.attempts, asset_url=result.video_url, thumbnail_url=result.thumbnail_url,
                             meta_patch={"contentType": result.content_type}, now=now)


def _fail_attempt(rt, gen, message: str) -> str | None:
    """The current attempt failed: ``"retried"`` (pending again after a backoff), ``"failed"``
    (for good, refunded if charged) or ``None`` when the job had moved on already."""
    now = rt.now()
    final = gen.attempts >= rt.settings.max_attempts
    retry_at = None if final else now + timedelta(seconds=retry_delay(rt.settings, gen.attempts))
    with rt.store.begin() as s:
        row = jobs.fail_attempt(s, gen.id, gen.attempts, error=message, retry_at=retry_at, now=now)
        if row is None:
            return None
        if final:
            _refund(s, row, now)
    if final:
        log.warning("queue: generation %s failed after %d attempt(s): %s", gen.id, gen.attempts, message)
    return "failed" if final else "retried"


def _refund(s, gen, now) -> int:
    """Give a charged user generation its credits back, once: the ``refunded`` flag flips for
    one transaction only (and a partial unique index allows one refund row per generation)."""
    if gen.credits_charged <= 0 or gen.user_id == SYSTEM_BACKLOG_USER_ID:
        return 0
    if not jobs.mark_refunded(s, gen.id):
        return 0
    accounts.change_credits(s, gen.user_id, gen.credits_charged, kind="refund", now=now, generation_id=gen.id)
    return gen.credits_charged


def _cancel_at_provider(rt, sub: Submission, generation_id: int) -> bool:
    try:
        rt.provider.cancel(sub)
        return True
    except Exception as e:  # best effort: the job is already settled on our side
        log.warning("queue: cancelling generation %s at the provider failed: %s", generation_id, e)
        return False


# --------------------------------------------------------------------------------------------
# recovery and ops actions
# --------------------------------------------------------------------------------------------
def recover(rt) -> dict:
    """On start-up (or when taking over as scheduler leader): submitted processing jobs are
    polled at once; processing jobs without a request id are submitted again, same attempt."""
    now = rt.now()
    with rt.store.begin() as s:
        repolled = jobs.repoll_submitted(s, now)
        orphans = jobs.restart_unsubmitted(s, now)
        recipes = {gen.recipe_id: catalog.get_recipe(s, gen.recipe_id) for gen in orphans}
    summary = {"repolled": repolled, "resubmitted": 0, "retried": 0, "failed": 0, "errors": 0}
    for gen in orphans:
        def resubmit(gen=gen):
            outcome = _submit(rt, gen, recipes[gen.recipe_id])
            if outcome is not None:
                summary["resubmitted" if outcome == "started" else outcome] += 1
        _guarded(rt, summary, "resubmit", gen, resubmit)
    if repolled or orphans:
        log.info("queue: recovery: %d job(s) to poll again, %d resubmitted", repolled, summary["resubmitted"])
    return summary


def _changed_or_refuse(row, current, generation_id: int, rule: str) -> None:
    """After an ops action's conditional update: raise unless it changed the job (``row``)."""
    if current is None:
        raise JobNotFound(f"generation {generation_id} does not exist")
    if row is None:
        raise QueueError(f"generation {generation_id} is {current.status}; {rule}")


def retry(rt, generation_id: int) -> dict:
    """Ops: put a failed or cancelled job back to ``pending`` with fresh attempts and no error.

    A user generation refunded before is not charged again, and cannot be refunded twice.
    Raises :class:`QueueError` for any other status, :class:`JobNotFound` for an unknown id.
    """
    now = rt.now()
    with rt.store.begin() as s:
        row = jobs.reset_for_retry(s, generation_id, now)
        current = row or jobs.get_generation(s, generation_id)
    _changed_or_refuse(row, current, generation_id, "only failed or cancelled jobs can be retried")
    log.info("queue: generation %s put back to pending by an operator", generation_id)
    rt.invalidate()
    return generation_json(row)


def cancel(rt, generation_id: int) -> dict:
    """Ops: a pending or processing job becomes ``cancelled`` (also at the provider when it was
    submitted); a charged user generation is refunded, once. Raises :class:`QueueError` for any
    other status, :class:`JobNotFound` for an unknown id."""
    now = rt.now()
    with rt.store.begin() as s:
        row = jobs.cancel_job(s, generation_id, error="cancelled by an operator", now=now)
        if row is not None:
            _refund(s, row, now)
        current = row or jobs.get_generation(s, generation_id)
    _changed_or_refuse(row, current, generation_id, "only pending or processing jobs can be cancelled")
    sub = _submission(row)
    if sub is not None:
        _cancel_at_provider(rt, sub, generation_id)
    log.info("queue: generation %s cancelled by an operator", generation_id)
    rt.invalidate()
    return generation_json(row)


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------
def status(rt) -> dict:
    """The queue at a glance (``queue status --json``)::

        {"counts": {status: n}, "countsSince", "oldestPending": {"id", "recipeId", "ageSeconds", "createdAt"} | None,
         "slots": {"inUse", "max"}, "nextPolls": [{"id", "recipeId", "recipe", "at", "inSeconds", "pollCount",
         "attempts"}], "claimable": {"total", "byRecipe": {recipe_id: n}}, "at"}
    """
    now = rt.now()
    since = now - FINISHED_COUNT_WINDOW
    with rt.store.begin() as s:
        counts = jobs.count_by_status(s, finished_since=since)
        oldest = jobs.oldest_pending(s)
        polls = jobs.next_polls(s, NEXT_POLLS_SHOWN)
        backlog = store_stats.backlog_counts(s)
    claimable = {str(rid): c["completed"] for rid, c in sorted(backlog.items()) if c["completed"]}
    return {
        "counts": counts,
        "countsSince": isoformat(since),
        "oldestPending": None if oldest is None else {
            "id": oldest.id, "recipeId": oldest.recipe_id, "createdAt": isoformat(oldest.created_at),
            "ageSeconds": round((now - oldest.created_at).total_seconds(), 1)},
        "slots": {"inUse": counts["processing"], "max": rt.settings.max_concurrent_jobs},
        "nextPolls": [{"id": g.id, "recipeId": g.recipe_id, "recipe": name, "at": isoformat(g.next_poll_at),
                       "inSeconds": round((g.next_poll_at - now).total_seconds(), 1),
                       "pollCount": g.poll_count, "attempts": g.attempts} for g, name in polls],
        "claimable": {"total": sum(claimable.values()), "byRecipe": claimable},
        "at": isoformat(now),
    }


def format_status(data: dict) -> str:
    """Human text of :func:`status` for ``queue status``."""
    counts = data["counts"]
    lines = ["jobs:      " + "  ".join(f"{k} {v}" for k, v in counts.items()) + "  (finished: last 24 h)",
             f"slots:     {data['slots']['inUse']} of {data['slots']['max']} in use"]
    oldest = data["oldestPending"]
    lines.append("oldest:    " + ("no pending job" if oldest is None else
                                  f"#{oldest['id']} (recipe {oldest['recipeId']}), "
                                  f"pending for {_age(oldest['ageSeconds'])}"))
    claimable = data["claimable"]
    by_recipe = ", ".join(f"recipe {rid}: {n}" for rid, n in claimable["byRecipe"].items())
    lines.append(f"claimable: {claimable['total']}" + (f" ({by_recipe})" if by_recipe else ""))
    if data["nextPolls"]:
        lines.append("next polls:")
        for p in data["nextPolls"]:
            when = "due now" if p["inSeconds"] <= 0 else f"in {_age(p['inSeconds'])}"
            lines.append(f"  #{p['id']:<6} {p['recipe'][:30]:<30} {when:<12} poll {p['pollCount'] + 1}, "
                         f"attempt {p['attempts']}")
    else:
        lines.append("next polls: none")
    return "\n".join(lines)


def _age(seconds: float) -> str:
    seconds = max(0.0, float(seconds))
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def stats(rt) -> dict:
    """The body of ``GET /api/queue/stats``, cached for up to STATS_TTL_S seconds per process.

    Bounded queries only: live counts through the partial indexes, the last hour through the
    ``completed_at`` / ``(status, updated_at)`` indexes. PostgreSQL computes the percentile in
    SQL (``percentile_cont``); SQLite in Python over the same window.
    """
    def load() -> dict:
        now = rt.now()
        since = now - timedelta(hours=1)
        with rt.store.begin() as s:
            live = store_stats.status_counts(s)
            finished = store_stats.finished_since(s, since)
            avg, p95 = jobs.processing_seconds(s, since)
        return {
            "pending": live["pending"],
            "processing": live["processing"],
            "completedLastHour": finished.get("completed", 0),
            "failedLastHour": finished.get("failed", 0),
            "avgProcessingSeconds": None if avg is None else round(avg, 2),
            "p95ProcessingSeconds": None if p95 is None else round(p95, 2),
            "cachedAt": isoformat(now),
        }

    return dict(rt.cache("queue_stats", ttl=STATS_TTL_S).get_or_compute("stats", load))



# --------------------------------------------------------------------------------------------
# prefill
# --------------------------------------------------------------------------------------------
def prefill(rt, *, recipe_id: int | None, count: int, timeout: float, on_progress=None,
            sleep=time.sleep) -> dict:
    """Create ``count`` backlog jobs per recipe (every active recipe when ``recipe_id`` is None)
    and drive the queue until they are all finished or ``timeout`` seconds (of ``rt.clock``)
    have passed; ``on_progress(done, total)`` after every tick.

    Between ticks it sleeps until the next poll or retry falls due (at most a second), so the
    poll schedule is respected. Jobs unfinished at the timeout stay queued for the scheduler.
    ``sleep`` is injectable: with a ManualClock pass ``clock.advance``.
    On a database without any recipe (a fresh file) the demo data is seeded first, as
    ``python app.py`` does. Returns ``{"created", "completed", "failed", "timedOut", "ids"}``.
    """
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 10_000:
        raise QueueError("count must be a whole number from 1 to 10000")
    if not timeout or timeout <= 0:
        raise QueueError("timeout must be a positive number of seconds")
    _seed_if_empty(rt)
    ids = _create_backlog_jobs(rt, recipe_id, count)
    rt.invalidate()
    total = len(ids)
    deadline = rt.now() + timedelta(seconds=timeout)
    while True:
        tick(rt)
        with rt.store.begin() as s:
            states = jobs.statuses_of(s, ids)
            wakeup = jobs.next_wakeup(s, rt.now())
        done = sum(1 for st in states.values() if st in TERMINAL)
        if on_progress is not None:
            on_progress(done, total)
        now = rt.now()
        if done == total or now >= deadline:
            break
        wait = PREFILL_MAX_SLEEP_S if wakeup is None else (wakeup - now).total_seconds()
        sleep(min(PREFILL_MAX_SLEEP_S, max(0.01, wait), max(0.01, (deadline - now).total_seconds())))
    completed = sum(1 for st in states.values() if st == "completed")
    failed = sum(1 for st in states.values() if st in ("failed", "cancelled"))
    return {"created": total, "completed": completed, "failed": failed,
            "timedOut": total - completed - failed, "ids": ids}


def _seed_if_empty(rt) -> None:
    from . import auth, demo

    auth.ensure_system_user(rt)
    if demo.is_empty(rt):
        created = demo.seed(rt)
        log.info("queue: empty database, demo data seeded (%d recipes)", len(created["recipes"]))
        if created["adminPassword"]:
            log.warning("ops user 'admin' created with password: %s", created["adminPassword"])


def _create_backlog_jobs(rt, recipe_id: int | None, count: int) -> list[int]:
    now = rt.now()
    rng = random.Random()
    with rt.store.begin() as s:
        if recipe_id is None:
            recipes = catalog.list_recipes(s, active_only=True)
            if not recipes:
                raise QueueError("there is no active recipe to prefill")
        else:
            recipe = catalog.get_recipe(s, recipe_id)
            if recipe is None or not recipe.is_active:
                raise QueueError(f"recipe {recipe_id} does not exist or is not active")
            recipes = [recipe]
        usage = catalog.usage_statistics(s, [r.id for r in recipes])
        ids = []
        for recipe in recipes:
            for _ in range(count):
                try:
                    form_data = forms.weighted_form(recipe.variables, usage.get(recipe.id, {}), rng)
                except (forms.FormError, forms.SchemaError) as e:
                    raise QueueError(f"recipe {recipe.id} ({recipe.name}): no valid form data: {e}") from None
                gen = jobs.add_generation(s, user_id=SYSTEM_BACKLOG_USER_ID, recipe_id=recipe.id, form_data=form_data,
                                          meta={"source": "backlog", "isInstant": False, "recipeName": recipe.name},
                                          priority=BACKLOG_PRIORITY, credits_charged=0, now=now)
                ids.append(gen.id)
    return ids
