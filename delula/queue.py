"""The queue service's engine: generation jobs run against the provider, a bounded number at a time.

One :func:`tick` (SPEC §5, about every second from the scheduler) does three steps:

1. **time out** jobs processing longer than ``DELULA_JOB_TIMEOUT_S`` -- a failed attempt,
   cancelled at the provider (a last status check first, so a job that finished while no
   poller ran is completed rather than wasted);
2. **poll** submitted jobs whose ``next_poll_at`` is due. The n-th poll of a submission
   (``poll_count`` n, from 0) comes ``schedule[n mod len]`` seconds after the previous one, the
   first one after the submit. COMPLETED stores the asset -- or, for a backlog job whose
   result fails the quality gate (:mod:`delula.quality`), marks the job ``rejected`` with the
   reason, in the same transaction, so it never enters the pool; FAILED, UNKNOWN or a non-retryable
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

This module is the engine only: the tick, the job transitions it makes, and the recovery the
scheduler runs when it becomes leader (a restart of the engine's own work, through the same
submit). What people ask of the queue lives beside it: the operator actions (retry, cancel) in
``queue_actions``, which reuse :func:`refund`, :func:`submission` and :func:`cancel_at_provider`
from here, and the status read model (``queue status``, the queue page, ``GET /api/queue/stats``)
in ``queue_status``.
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from . import breaker, generations, pauses, quality
from .providers import ProviderError, Submission
from .storage import (SYSTEM_BACKLOG_USER_ID, DatabaseUnavailable, JobSource, JobStatus, accounts, catalog, counters,
                      jobs)

log = logging.getLogger(__name__)

POLL_BATCH = 50            # polls per tick (the rest are due next tick)
TIMEOUT_BATCH = 50
PROVIDER_THREADS = 8       # a tick's polls (and timeouts) talk to the provider side by side
POLL_LEASE_S = 60.0        # a due poll is leased this long: no second poller takes it meanwhile
MAX_RETRY_DELAY_S = 600.0
SUMMARY_KEYS = ("timedOut", "polled", "completed", "rejected", "retried", "failed", "started", "errors")


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
    breaker.gate(rt).refresh()
    _time_out(rt, summary)
    _poll(rt, summary)
    _start(rt, summary, pauses.state(rt))
    if summary["completed"] or summary["rejected"] or summary["failed"] or summary["retried"]:
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
    if breaker.gate(rt).is_open():
        return   # a timeout spends an attempt: none while the provider cannot be asked
    now = rt.now()
    limit = rt.settings.job_timeout_s
    with rt.store.begin() as s:
        late = jobs.timed_out(s, started_before=now - timedelta(seconds=limit), limit=TIMEOUT_BATCH)
    _each_side_by_side(rt, summary, "timeout", late, lambda gen, counts: _time_out_one(rt, gen, limit, counts))


def _time_out_one(rt, gen, limit: float, summary: dict) -> None:
    if not breaker.gate(rt).enter():
        return
    sub = submission(gen)
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
        cancel_at_provider(rt, sub, gen.id)


def _last_look(rt, gen, sub: Submission, summary: dict) -> bool:
    """Before timing a job out, ask once more: if it finished meanwhile (e.g. while no poller
    ran), keep its result. ``True`` when it was completed here."""
    try:
        if breaker.call(rt, "status", rt.provider.status, sub).state != "COMPLETED":
            return False
        result = breaker.call(rt, "result", rt.provider.result, sub)
    except ProviderError:
        return False
    summary["polled"] += 1
    if outcome := _complete(rt, gen, result):
        summary[outcome] += 1
    return True


def _poll(rt, summary: dict) -> None:
    gate = breaker.gate(rt)
    if gate.is_open():
        return   # polled again when the breaker closes
    now = rt.now()
    with rt.store.begin() as s:
        due = jobs.lease_due_polls(s, now=now, lease_until=now + timedelta(seconds=POLL_LEASE_S),
                                   limit=POLL_BATCH if gate.state.state == breaker.CLOSED else 1)
    _each_side_by_side(rt, summary, "poll", due, lambda gen, counts: _poll_one(rt, gen, counts))


def _poll_one(rt, gen, summary: dict) -> None:
    if not breaker.gate(rt).enter():
        return   # the breaker opened meanwhile: its lease ends, or the breaker's closing, make it due
    summary["polled"] += 1
    sub = submission(gen)
    if sub is None:
        message = "the provider's submission details are missing; submitting again"
    else:
        try:
            state = breaker.call(rt, "status", rt.provider.status, sub)
            if state.state in ("IN_QUEUE", "IN_PROGRESS"):
                _schedule_next_poll(rt, gen, {"providerState": state.state})
                return
            if state.state == "COMPLETED":
                if outcome := _complete(rt, gen, breaker.call(rt, "result", rt.provider.result, sub)):
                    summary[outcome] += 1
                return
            if state.state == "UNKNOWN":
                cancel_at_provider(rt, sub, gen.id)  # it may still run: stop paying for it
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


def _start(rt, summary: dict, paused: pauses.Paused) -> None:
    """Start pending jobs into the free slots: none while the queue is paused or the breaker
    open (one, the probe, while it is half-open); no backlog job whose backlog is paused."""
    gate = breaker.gate(rt)
    if paused.queue_paused or gate.is_open():
        return
    now = rt.now()
    with rt.store.begin() as s:
        jobs.lock_queue_start(s)
        free = rt.settings.max_concurrent_jobs - jobs.count_processing(s)
        if gate.state.state != breaker.CLOSED:
            free = min(free, 1)
        claimed = jobs.claim_pending(s, limit=free, now=now, skip_backlog=paused.backlog_paused,
                                     skip_backlog_of=paused.recipes)
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
    failed) or ``None`` when the job moved on meanwhile, or went back to pending with its
    attempt given back because the breaker is open (the provider never heard of it)."""
    if not breaker.gate(rt).enter():
        with rt.store.begin() as s:
            jobs.release_unsubmitted(s, gen.id, gen.attempts, now=rt.now())
        return None
    try:
        sub = breaker.call(rt, "submit", rt.provider.submit, recipe.model_id, submit_arguments(recipe, gen.form_data))
    except ProviderError as e:
        log.warning("queue: submit of generation %s failed: %s", gen.id, e.message)
        return _fail_attempt(rt, gen, f"submit failed: {e.message}")
    now = rt.now()
    with rt.store.begin() as s:
        stored = jobs.store_submission(s, gen.id, gen.attempts, request_id=sub.request_id, provider=sub.to_dict(),
                                       next_poll_at=now + timedelta(seconds=poll_delay(rt.settings, 0)), now=now)
    if not stored:  # cancelled or timed out while we submitted: stop the provider's work
        cancel_at_provider(rt, sub, gen.id)
        return None
    return "started"


# --------------------------------------------------------------------------------------------
# transitions
# --------------------------------------------------------------------------------------------
def submission(gen) -> Submission | None:
    """The provider's handle of a job's current submission, ``None`` when it has none (yet)."""
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


def result_facts(result) -> dict:
    """What the provider said about a result, as the job's metadata keeps it (reported facts only)."""
    facts = {"contentType": result.content_type, "fileSize": result.file_size, "durationS": result.duration_s,
             "qualityScore": result.quality_score}
    return {key: value for key, value in facts.items() if value is not None}


def _complete(rt, gen, result) -> str | None:
    """Store a finished job's result: ``"completed"``; ``"rejected"`` when it is a backlog job whose
    result the quality gate (:mod:`delula.quality`) refuses -- decided and stored in the one
    transaction, so it never enters the pool; ``None`` when the job had moved on already.

    Only backlog jobs are gated: a user's own job is theirs, whatever it looks like. A rejected
    job is not refunded, as a failed backlog job is not (its credits are the system user's)."""
    now = rt.now()
    facts = result_facts(result)
    with rt.store.begin() as s:
        reason = None
        if generations.source(gen) == JobSource.BACKLOG:
            recipe = catalog.get_recipe(s, gen.recipe_id)
            reason = quality.rejection(result, quality.limits(rt.settings, recipe.variables if recipe else [],
                                                              rt.provider.asset_locations))
        if reason is None:
            done = jobs.complete(s, gen.id, gen.attempts, asset_url=result.video_url,
                                 thumbnail_url=result.thumbnail_url, meta_patch=facts, now=now)
            status = JobStatus.COMPLETED
        else:
            done = jobs.reject(s, gen.id, gen.attempts, reason=reason,
                               meta_patch={**facts, "resultUrl": result.video_url}, now=now)
            status = JobStatus.REJECTED
        if not done:
            return None
        count_finished(s, [gen], status)
    if reason is not None:
        log.warning("queue: backlog generation %s rejected by the quality gate: %s", gen.id, reason)
    return str(status)


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
            refund(s, row, now)
            count_finished(s, [row], JobStatus.FAILED)
    if final:
        log.warning("queue: generation %s failed after %d attempt(s): %s", gen.id, gen.attempts, message)
    return "failed" if final else "retried"


def count_finished(s, gens, result: str) -> None:
    """Count jobs that ended as ``result`` into ``jobs_finished{result, source}``, in the
    transaction that ended them."""
    per: dict = {}
    for gen in gens:
        key = (counters.JOBS_FINISHED, counters.labels_text({"result": result, "source": generations.source(gen)}))
        per[key] = per.get(key, 0) + 1
    counters.add(s, per)


def refund(s, gen, now) -> int:
    """Give a charged user generation its credits back, once: the ``refunded`` flag flips for
    one transaction only (and a partial unique index allows one refund row per generation)."""
    if gen.credits_charged <= 0 or gen.user_id == SYSTEM_BACKLOG_USER_ID:
        return 0
    if not jobs.mark_refunded(s, gen.id):
        return 0
    accounts.change_credits(s, gen.user_id, gen.credits_charged, kind="refund", now=now, generation_id=gen.id)
    return gen.credits_charged


def cancel_at_provider(rt, sub: Submission, generation_id: int) -> bool:
    """Ask the provider to stop a submission, best effort: ``False`` (logged) when it failed or
    the breaker is open (nothing is sent then)."""
    if not breaker.gate(rt).enter():
        log.warning("queue: generation %s not cancelled at the provider: the circuit breaker is open",
                    generation_id)
        return False
    try:
        breaker.call(rt, "cancel", rt.provider.cancel, sub)
        return True
    except Exception as e:  # best effort: the job is already settled on our side
        log.warning("queue: cancelling generation %s at the provider failed: %s", generation_id, e)
        return False


def cancel_submitted(rt, gens) -> int:
    """:func:`cancel_at_provider` for each of ``gens`` that was submitted (:func:`submission`),
    side by side on up to :data:`PROVIDER_THREADS` threads, as a tick's polls are; how many the
    provider accepted."""
    subs = [(sub, gen.id) for gen in gens if (sub := submission(gen)) is not None]
    if len(subs) <= 1:
        return sum(cancel_at_provider(rt, sub, gid) for sub, gid in subs)
    with ThreadPoolExecutor(min(PROVIDER_THREADS, len(subs)), thread_name_prefix="delula-cancel") as pool:
        return sum(pool.map(lambda item: cancel_at_provider(rt, *item), subs))


# --------------------------------------------------------------------------------------------
# recovery
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
