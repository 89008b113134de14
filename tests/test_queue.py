"""The queue service on real databases: poll schedule, timeouts, retries, refunds, priority, the
concurrency cap across parallel pollers, crash recovery, ops actions, stats and prefill."""
from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from delula import auth, cli, demo, generations, queue, queue_actions, queue_status, recipes
from delula.clock import ManualClock
from delula.providers import JobResult, JobStatus, ProviderError, Submission
from delula.simulator import Simulator, SimulatorProvider
from delula.storage import SYSTEM_BACKLOG_USER_ID, accounts, jobs
from delula.storage.models import CreditTransaction, Generation

ROOT = Path(__file__).resolve().parents[1]


class FakeProvider:
    """A deterministic provider: ``script[request_id]`` (or ``default``) says what status answers.

    A script entry is a list consumed one answer per poll (the last one repeats); an answer is
    a JobStatus or an exception to raise. Records every call with the clock's time.
    """

    name = "fake"
    asset_locations = ("https://cdn.example/",)

    def __init__(self, clock=None, *, default="IN_PROGRESS", submit_delay: float = 0.0, on_submit=None):
        self.clock = clock
        self.default = default
        self.submit_delay = submit_delay
        self.on_submit = on_submit
        self.script: dict[str, list] = {}
        self.submit_errors: list[Exception] = []
        self.submits: list[tuple[str, str, dict]] = []
        self.polls: list[tuple[str, object]] = []
        self.cancels: list[str] = []
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def _now(self):
        return self.clock.now() if self.clock else None

    def submit(self, model_id: str, arguments: dict) -> Submission:
        if self.on_submit is not None:
            self.on_submit()
        if self.submit_delay:
            time.sleep(self.submit_delay)
        with self._lock:
            if self.submit_errors:
                raise self.submit_errors.pop(0)
            rid = f"req-{next(self._ids)}"
            self.submits.append((rid, model_id, arguments))
        return Submission(rid, f"fake://{rid}/status", f"fake://{rid}", f"fake://{rid}/cancel")

    def status(self, sub: Submission) -> JobStatus:
        with self._lock:
            self.polls.append((sub.request_id, self._now()))
            answers = self.script.get(sub.request_id)
            answer = (answers.pop(0) if len(answers) > 1 else answers[0]) if answers else JobStatus(self.default)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def result(self, sub: Submission) -> JobResult:
        return JobResult(f"https://cdn.example/{sub.request_id}.mp4", "video/mp4",
                         f"https://cdn.example/{sub.request_id}.jpg", file_size=1_000_000)

    def cancel(self, sub: Submission) -> None:
        with self._lock:
            self.cancels.append(sub.request_id)

    def request_id_of(self, rt, generation_id: int) -> str:
        return _gen(rt, generation_id).provider_request_id


# --- helpers ---------------------------------------------------------------------------------

def _recipe(rt, name="Recipe", cost=2):
    return recipes.create_recipe(rt, name=name, credit_cost=cost, variables=[
        {"id": "mood", "label": "Mood", "type": "dropdown", "required": True,
         "options": [{"label": "Calm", "value": "calm"}, {"label": "Wild", "value": "wild"}]}])


def _backlog_job(rt, recipe_id: int, **extra) -> int:
    with rt.store.begin() as s:
        return jobs.add_generation(s, user_id=SYSTEM_BACKLOG_USER_ID, recipe_id=recipe_id,
                                   form_data=extra.pop("form_data", {"mood": "calm"}),
                                   meta={"source": "backlog"}, priority=generations.BACKLOG_PRIORITY,
                                   credits_charged=0, now=rt.now(), **extra).id


def _user_job(rt, recipe_id: int, username="ana", credits=10) -> tuple[int, str]:
    user = auth.get_user(rt, username=username) or auth.create_user(rt, username, credits=credits)[0]
    result = generations.create_user_generation(rt, user_id=user.id, recipe_id=recipe_id, form_data={"mood": "wild"})
    assert result.status_code == 202, result.body
    return result.generation["id"], user.id


def _gen(rt, generation_id: int) -> Generation:
    with rt.store.begin() as s:
        return jobs.get_generation(s, generation_id)


def _refunds(rt, generation_id: int) -> list[CreditTransaction]:
    with rt.store.begin() as s:
        return list(s.scalars(select(CreditTransaction).where(CreditTransaction.generation_id == generation_id,
                                                              CreditTransaction.kind == "refund")))


def _credits(rt, user_id: str) -> int:
    with rt.store.begin() as s:
        assert accounts.ledger_mismatches(s) == []
        return accounts.get_user(s, user_id).credits


@pytest.fixture
def clock():
    return ManualClock()


@pytest.fixture
def queue_rt(db_url, make_runtime, clock):
    """``queue_rt(**settings)`` -> (runtime on a fresh database with a FakeProvider, provider)."""
    def make(provider=None, **settings):
        provider = provider or FakeProvider(clock)
        rt = make_runtime(db_url, clock=clock, provider=provider, **settings)
        auth.ensure_system_user(rt)
        return rt, provider
    return make


# --- the poll schedule -----------------------------------------------------------------------

def test_polls_follow_the_schedule_after_submit(queue_rt, clock):
    rt, fake = queue_rt(job_timeout_s=10_000)
    recipe = _recipe(rt)
    gid = _backlog_job(rt, recipe.id)

    assert queue.tick(rt)["started"] == 1
    submitted = clock.now()
    gen = _gen(rt, gid)
    assert gen.status == "processing" and gen.attempts == 1 and gen.provider_request_id == "req-1"
    assert gen.meta["provider"] == {"request_id": "req-1", "status_url": "fake://req-1/status",
                                    "response_url": "fake://req-1", "cancel_url": "fake://req-1/cancel"}
    assert gen.next_poll_at == submitted + timedelta(seconds=15)
    for _ in range(200):
        clock.advance(1)
        queue.tick(rt)
    offsets = [(at - submitted).total_seconds() for _, at in fake.polls]
    assert offsets == [15, 45, 105, 135, 150, 165, 195]  # 200 s of ticks
    assert _gen(rt, gid).poll_count == 7


def test_completed_job_stores_the_asset_and_frees_its_slot(queue_rt, clock):
    rt, fake = queue_rt(max_concurrent_jobs=1)
    recipe = _recipe(rt, name="Sunset")
    first, second = _backlog_job(rt, recipe.id), _backlog_job(rt, recipe.id)
    fake.default = "COMPLETED"

    assert queue.tick(rt)["started"] == 1
    model, arguments = fake.submits[0][1:]
    assert model == recipe.model_id
    assert arguments["recipe"] == "Sunset" and arguments["mood"] == "calm" and "calm" in arguments["prompt"]
    clock.advance(15)
    summary = queue.tick(rt)
    assert summary["completed"] == 1 and summary["started"] == 1  # the freed slot is used at once
    gen = _gen(rt, first)
    assert gen.status == "completed" and gen.completed_at == clock.now() and gen.error is None
    assert gen.asset_url == "https://cdn.example/req-1.mp4" and gen.thumbnail_url == "https://cdn.example/req-1.jpg"
    assert _gen(rt, second).status == "processing"
    assert recipes.available_count(rt, recipe.id) == 1


# --- timeouts, retries, refunds ------------------------------------------------------------

def test_a_job_processing_longer_than_the_timeout_is_cancelled_and_retried_then_failed(queue_rt, clock):
    rt, fake = queue_rt(max_attempts=2)
    recipe = _recipe(rt)
    gid = _backlog_job(rt, recipe.id)
    queue.tick(rt)

    clock.advance(479)
    assert queue.tick(rt)["timedOut"] == 0
    clock.advance(2)
    summary = queue.tick(rt)
    assert summary["timedOut"] == 1 and summary["retried"] == 1
    assert fake.cancels == ["req-1"]
    gen = _gen(rt, gid)
    assert gen.status == "pending" and gen.attempts == 1 and gen.error == "timed out after 480 s"
    assert gen.provider_request_id is None and gen.next_attempt_at == clock.now() + timedelta(seconds=15)

    clock.advance(15)
    assert queue.tick(rt)["started"] == 1
    clock.advance(481)
    summary = queue.tick(rt)
    assert summary["timedOut"] == 1 and summary["failed"] == 1
    assert fake.cancels == ["req-1", "req-2"]
    gen = _gen(rt, gid)
    assert (gen.status, gen.attempts, gen.error) == ("failed", 2, "timed out after 480 s")


def test_a_job_found_finished_at_its_timeout_is_completed_not_wasted(queue_rt, clock):
    rt, fake = queue_rt()
    gid = _backlog_job(rt, _recipe(rt).id)
    queue.tick(rt)
    fake.default = "COMPLETED"
    clock.advance(600)  # e.g. no poller ran for ten minutes
    summary = queue.tick(rt)
    assert summary["timedOut"] == 0 and summary["completed"] == 1 and fake.cancels == []
    assert _gen(rt, gid).status == "completed"


def test_failures_are_retried_with_backoff_then_fail_readably_and_refund_once(queue_rt, clock):
    rt, fake = queue_rt(max_attempts=3)
    recipe = _recipe(rt, cost=4)
    gid, user_id = _user_job(rt, recipe.id, credits=10)
    assert _credits(rt, user_id) == 6
    fake.default = "FAILED"
    for rid in ("req-1", "req-2", "req-3"):
        fake.script[rid] = [JobStatus("FAILED", error="content policy violation")]

    queue.tick(rt)
    backoffs = []
    for attempt in (1, 2, 3):
        clock.advance(15)
        summary = queue.tick(rt)
        gen = _gen(rt, gid)
        assert gen.attempts == attempt and gen.error == "content policy violation"
        if attempt < 3:
            assert summary["retried"] == 1 and gen.status == "pending"
            backoffs.append((gen.next_attempt_at - clock.now()).total_seconds())
            assert queue.tick(rt)["started"] == 0  # still backing off
            clock.advance(backoffs[-1])
            assert queue.tick(rt)["started"] == 1
    assert backoffs == [15, 30]
    assert summary["failed"] == 1 and gen.status == "failed" and gen.refunded
    assert [t.amount for t in _refunds(rt, gid)] == [4]
    assert _credits(rt, user_id) == 10

    # an ops retry of the refunded job that fails again refunds nothing more
    queue_actions.retry(rt, gid)
    for _ in range(10):
        queue.tick(rt)
        clock.advance(60)
    assert _gen(rt, gid).status == "failed"
    assert len(_refunds(rt, gid)) == 1 and _credits(rt, user_id) == 10


def test_unknown_status_and_non_retryable_errors_are_failed_attempts(queue_rt, clock):
    rt, fake = queue_rt(max_attempts=1)
    recipe = _recipe(rt)
    unknown, rejected = _backlog_job(rt, recipe.id), _backlog_job(rt, recipe.id)
    fake.script["req-1"] = [JobStatus("UNKNOWN", error='unknown status "WEIRD"')]
    fake.script["req-2"] = [ProviderError("fal.ai returned 422: prompt: too long", retryable=False, status_code=422)]
    queue.tick(rt)
    clock.advance(15)
    assert queue.tick(rt)["failed"] == 2
    assert _gen(rt, unknown).error == 'unknown status "WEIRD"' and fake.cancels == ["req-1"]
    assert _gen(rt, rejected).error == "fal.ai returned 422: prompt: too long"


def test_retryable_poll_errors_are_recorded_and_polled_again_next_slot(queue_rt, clock):
    rt, fake = queue_rt()
    gid = _backlog_job(rt, _recipe(rt).id)
    fake.script["req-1"] = [ProviderError("fal.ai returned 503: busy (gave up after 4 attempts)", retryable=True),
                            RuntimeError("a bug in the provider"), JobStatus("COMPLETED")]
    queue.tick(rt)
    clock.advance(15)
    summary = queue.tick(rt)
    assert summary["errors"] == 1 and summary["failed"] == summary["retried"] == 0
    gen = _gen(rt, gid)
    assert gen.status == "processing" and gen.meta["lastError"].startswith("fal.ai returned 503")
    assert gen.next_poll_at == clock.now() + timedelta(seconds=30) and gen.poll_count == 1

    clock.advance(30)
    assert queue.tick(rt)["errors"] == 1  # an unexpected exception is contained too
    assert _gen(rt, gid).status == "processing"
    clock.advance(queue.POLL_LEASE_S)  # its lease expires: polled again
    assert queue.tick(rt)["completed"] == 1


class MeetingProvider(FakeProvider):
    """Every status call but the broken job's waits until ``parties`` calls are in flight at
    once: polls made one after another would never meet (the barrier breaks after 30 s)."""

    def __init__(self, clock, parties: int, broken: str):
        super().__init__(clock)
        self.barrier = threading.Barrier(parties, timeout=30)
        self.broken = broken
        self.threads: set[str] = set()

    def status(self, sub):
        if sub.request_id == self.broken:
            raise RuntimeError("a bug while polling this one job")
        self.threads.add(threading.current_thread().name)
        self.barrier.wait()
        return JobStatus("COMPLETED")


def test_a_ticks_polls_talk_to_the_provider_side_by_side(queue_rt, clock):
    """A provider slow for one job holds up no other: the polls of a tick run on several
    threads, each job's outcome is counted once, and a crash in one poll stays its own."""
    n = 5
    rt, fake = queue_rt(provider=MeetingProvider(clock, parties=n - 1, broken="req-3"), max_concurrent_jobs=n)
    recipe = _recipe(rt)
    ids = [_backlog_job(rt, recipe.id) for _ in range(n)]
    assert queue.tick(rt)["started"] == n
    clock.advance(15)
    summary = queue.tick(rt)
    assert not fake.barrier.broken
    assert summary["polled"] == n and summary["completed"] == n - 1 and summary["errors"] == 1
    assert len(fake.threads) == n - 1
    assert [_gen(rt, gid).status for gid in ids] == ["completed", "completed", "processing", "completed", "completed"]
    assert _gen(rt, ids[2]).provider_request_id == "req-3"


def test_submit_errors_count_as_attempts(queue_rt, clock):
    rt, fake = queue_rt(max_attempts=2)
    gid = _backlog_job(rt, _recipe(rt).id)
    fake.submit_errors = [ProviderError("fal.ai returned 401: bad key", retryable=False, status_code=401)] * 2
    assert queue.tick(rt)["retried"] == 1
    assert _gen(rt, gid).error == "submit failed: fal.ai returned 401: bad key"
    clock.advance(15)
    assert queue.tick(rt)["failed"] == 1
    assert _gen(rt, gid).status == "failed" and _gen(rt, gid).attempts == 2


@pytest.mark.postgres
def test_refund_happens_once_when_pollers_and_ops_race(pg_url, make_runtime, clock):
    fake = FakeProvider(clock, default="FAILED")
    runtimes = [make_runtime(pg_url, clock=clock, provider=fake, max_attempts=1, max_concurrent_jobs=50)
                for _ in range(3)]
    rt = runtimes[0]
    auth.ensure_system_user(rt)
    recipe = _recipe(rt, cost=1)
    user, _ = auth.create_user(rt, "racer", credits=40)
    ids = [_user_job(rt, recipe.id, username="racer")[0] for _ in range(30)]
    queue.tick(rt)
    clock.advance(15)
    # the jobs both fail at the provider (two pollers) and get cancelled by ops, all at once
    barrier = threading.Barrier(3)
    errors = []

    def poller(r):
        barrier.wait()
        queue.tick(r)

    def ops(r):
        barrier.wait()
        for gid in reversed(ids):
            try:
                queue_actions.cancel(r, gid)
            except queue_actions.QueueError:
                pass
            except Exception as e:  # pragma: no cover - reported below
                errors.append(e)

    threads = [threading.Thread(target=poller, args=(runtimes[0],)), threading.Thread(target=poller, args=(runtimes[1],)),
               threading.Thread(target=ops, args=(runtimes[2],))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for gid in ids:
        gen = _gen(rt, gid)
        assert gen.status in ("failed", "cancelled") and gen.refunded
        assert len(_refunds(rt, gid)) == 1
    assert _credits(rt, user.id) == 40


def test_the_refund_flag_flips_once(rt):
    recipe = _recipe(rt)
    gid = _backlog_job(rt, recipe.id)
    with rt.store.begin() as s:
        assert jobs.mark_refunded(s, gid) is True
    with rt.store.begin() as s:
        assert jobs.mark_refunded(s, gid) is False


# --- starting: priority and the cap ----------------------------------------------------------

def test_user_jobs_start_before_backlog_then_oldest_first(queue_rt, clock):
    rt, fake = queue_rt(max_concurrent_jobs=1)
    recipe = _recipe(rt)
    old_backlog = _backlog_job(rt, recipe.id)
    clock.advance(1)
    user_a, _ = _user_job(rt, recipe.id, username="ana")
    clock.advance(1)
    new_backlog = _backlog_job(rt, recipe.id)
    clock.advance(1)
    user_b, _ = _user_job(rt, recipe.id, username="bo")
    fake.default = "COMPLETED"

    order = []
    for _ in range(6):
        queue.tick(rt)
        with rt.store.begin() as s:
            running = [g.id for g in jobs.list_jobs(s, statuses=("processing",))]
        assert len(running) <= 1
        order += [gid for gid in running if gid not in order]
        clock.advance(15)
    assert order == [user_a, user_b, old_backlog, new_backlog]


@pytest.mark.postgres
def test_the_cap_holds_with_two_pollers_in_parallel(pg_url, make_runtime):
    """Two pollers, each with its own connection pool, tick as fast as they can on real time;
    submits are slow so claims overlap. Processing is sampled at every submit and by a monitor."""
    monitor = make_runtime(pg_url)
    seen = []

    def processing_now():
        with monitor.store.begin() as s:
            seen.append(jobs.count_processing(s))

    fake = FakeProvider(default="COMPLETED", submit_delay=0.02, on_submit=processing_now)
    pollers = [make_runtime(pg_url, provider=fake, max_concurrent_jobs=3, poll_schedule=(0.01,)) for _ in range(2)]
    auth.ensure_system_user(monitor)
    recipe = _recipe(monitor)
    ids = [_backlog_job(monitor, recipe.id) for _ in range(24)]
    done = threading.Event()

    def watch():
        while not done.is_set():
            processing_now()
            time.sleep(0.001)

    def poll(rt):
        deadline = time.monotonic() + 60  # a safety net, not a measurement
        while time.monotonic() < deadline:
            queue.tick(rt)
            with rt.store.begin() as s:
                if all(st == "completed" for st in jobs.statuses_of(s, ids).values()):
                    return

    threads = [threading.Thread(target=watch)] + [threading.Thread(target=poll, args=(r,)) for r in pollers]
    for t in threads[1:]:
        t.start()
    threads[0].start()
    for t in threads[1:]:
        t.join()
    done.set()
    threads[0].join()

    with monitor.store.begin() as s:
        assert set(jobs.statuses_of(s, ids).values()) == {"completed"}
        request_ids = [g.provider_request_id for g in jobs.list_jobs(s, statuses=("completed",))]
    assert len(fake.submits) == 24 and len(set(request_ids)) == 24  # every job submitted exactly once
    assert max(seen) <= 3
    assert max(seen) == 3  # and the slots were really used


# --- recovery ----------------------------------------------------------------------------------

class Crash(BaseException):
    """The process dies (not an Exception: nothing catches it)."""


class CrashingProvider(FakeProvider):
    def submit(self, model_id, arguments):
        raise Crash()


def test_recovery_after_a_crash_polls_submitted_jobs_and_resubmits_the_others(db_url, make_runtime, clock):
    simulator = Simulator(duration=30, failure_rate=0, clock=clock, secret=b"one deployment")
    before = make_runtime(db_url, clock=clock, provider=SimulatorProvider(simulator), job_timeout_s=10_000)
    auth.ensure_system_user(before)
    recipe = _recipe(before)
    submitted = _backlog_job(before, recipe.id)
    queue.tick(before)
    crashed = _backlog_job(before, recipe.id)
    dying = make_runtime(db_url, clock=clock, provider=CrashingProvider(clock))
    with pytest.raises(Crash):
        queue.tick(dying)  # dies between marking the job processing and storing its request id
    assert _gen(before, crashed).status == "processing" and _gen(before, crashed).provider_request_id is None
    before.close()
    dying.close()

    clock.advance(5)
    after = make_runtime(db_url, clock=clock, provider=SimulatorProvider(Simulator(duration=30, failure_rate=0,
                                                                                   clock=clock, secret=b"one deployment")))
    summary = queue.recover(after)
    assert (summary["repolled"], summary["resubmitted"]) == (1, 1)
    gen = _gen(after, crashed)
    assert gen.status == "processing" and gen.provider_request_id and gen.attempts == 1
    assert gen.started_at == clock.now()
    assert _gen(after, submitted).next_poll_at == clock.now()
    assert queue.tick(after)["polled"] == 1  # polled at once, still running

    for _ in range(40):
        clock.advance(5)
        queue.tick(after)
    for gid in (submitted, crashed):
        gen = _gen(after, gid)
        assert gen.status == "completed" and gen.attempts == 1 and gen.asset_url.endswith("/video.svg")


# --- ops actions -------------------------------------------------------------------------------

def test_ops_retry_and_cancel(queue_rt, clock):
    rt, fake = queue_rt()
    recipe = _recipe(rt, cost=3)
    gid, user_id = _user_job(rt, recipe.id, credits=10)
    queue.tick(rt)

    with pytest.raises(queue_actions.QueueError, match=f"generation {gid} is processing; only failed jobs"):
        queue_actions.retry(rt, gid)
    body = queue_actions.cancel(rt, gid)
    assert body["status"] == "cancelled" and body["error"] == "cancelled by an operator"
    assert fake.cancels == ["req-1"]
    assert _credits(rt, user_id) == 10 and len(_refunds(rt, gid)) == 1
    with pytest.raises(queue_actions.QueueError, match=f"generation {gid} is cancelled; only pending or processing"):
        queue_actions.cancel(rt, gid)
    clock.advance(15)
    assert queue.tick(rt)["polled"] == 0  # a cancelled job is left alone

    with pytest.raises(queue_actions.QueueError, match=f"generation {gid} is cancelled; only failed jobs"):
        queue_actions.retry(rt, gid)   # a cancelled job stays cancelled (SPEC: ops retry a failed job)
    with pytest.raises(queue_actions.JobNotFound, match="generation 999999 does not exist"):
        queue_actions.cancel(rt, 999999)

    pending = _backlog_job(rt, recipe.id)
    assert queue_actions.cancel(rt, pending)["status"] == "cancelled"
    assert fake.cancels == ["req-1"]  # never submitted: nothing to cancel at the provider
    assert _credits(rt, user_id) == 10


def test_a_job_cancelled_while_being_submitted_is_cancelled_at_the_provider(queue_rt):
    holder = {}

    def cancel_meanwhile():
        with holder["rt"].store.begin() as s:
            gid = jobs.list_jobs(s, statuses=("processing",))[0].id
        queue_actions.cancel(holder["rt"], gid)

    rt, fake = queue_rt(provider=FakeProvider(on_submit=cancel_meanwhile))
    holder["rt"] = rt
    gid = _backlog_job(rt, _recipe(rt).id)
    assert queue.tick(rt)["started"] == 0
    assert _gen(rt, gid).status == "cancelled" and fake.cancels == ["req-1"]


def test_the_source_filter_and_the_source_of_a_row_agree(queue_rt):
    rt, fake = queue_rt()
    recipe = _recipe(rt)
    backlog_job = _backlog_job(rt, recipe.id)
    users_job, user_id = _user_job(rt, recipe.id)
    claimed = _backlog_job(rt, recipe.id)
    with rt.store.begin() as s:
        jobs.get_generation(s, claimed).user_id = user_id  # a claimed item changes owner, stays "backlog"
    by_filter = {source: {g.id for g in generations.list_jobs(rt, source=source)} for source in ("user", "backlog")}
    assert by_filter == {"user": {users_job}, "backlog": {backlog_job, claimed}}
    for source, ids in by_filter.items():
        assert all(generations.source(_gen(rt, gid)) == source for gid in ids)


def test_a_row_without_a_stored_source_takes_its_owners():
    def row(user_id, meta):
        return Generation(user_id=user_id, meta=meta)

    assert generations.source(row("u1", {"source": "backlog"})) == "backlog"
    assert generations.source(row(SYSTEM_BACKLOG_USER_ID, {})) == "backlog"
    assert generations.source(row("u1", None)) == "user"


# --- reading -----------------------------------------------------------------------------------

def test_status_and_its_text(queue_rt, clock):
    rt, fake = queue_rt(max_concurrent_jobs=2)
    recipe = _recipe(rt, name="Lantern")
    ids = [_backlog_job(rt, recipe.id) for _ in range(3)]
    queue.tick(rt)
    clock.advance(4)
    data = queue_status.status(rt)
    assert data["counts"] == {"pending": 1, "processing": 2, "completed": 0, "failed": 0, "cancelled": 0,
                              "expired": 0, "rejected": 0}
    assert data["slots"] == {"inUse": 2, "max": 2}
    assert data["oldestPending"]["id"] == ids[2] and data["oldestPending"]["ageSeconds"] == 4
    assert [p["id"] for p in data["nextPolls"]] == ids[:2]
    assert data["nextPolls"][0]["recipe"] == "Lantern" and data["nextPolls"][0]["inSeconds"] == 11
    assert data["claimable"] == {"total": 0, "byRecipe": {}}
    json.dumps(data)  # the CLI prints it
    text = cli.format_status(data)
    assert "2 of 2 in use" in text and f"#{ids[2]}" in text and "Lantern" in text and "in 11 s" in text
    assert "rejected 0" in text


def test_status_counts_finished_jobs_of_the_last_day_only(queue_rt, clock):
    rt, fake = queue_rt()
    recipe = _recipe(rt, name="Old and new")
    old = _backlog_job(rt, recipe.id)
    with rt.store.begin() as s:
        jobs.cancel_job(s, old, error="cancelled by an operator", now=rt.now())
    clock.advance(25 * 3600)
    new = _backlog_job(rt, recipe.id)
    with rt.store.begin() as s:
        jobs.cancel_job(s, new, error="cancelled by an operator", now=rt.now())
    data = queue_status.status(rt)
    assert data["counts"]["cancelled"] == 1          # the one cancelled 25 h ago is not counted
    assert data["countsSince"] == generations.isoformat(rt.now() - queue_status.FINISHED_COUNT_WINDOW)


def test_status_counts_finished_jobs_up_to_a_cap(queue_rt, clock, monkeypatch):
    """A day of finished jobs is counted up to ``FINISHED_COUNT_CAP`` index entries only: past it
    the count is the cap and ``countsAbove`` names the status (the page and the CLI add "+")."""
    rt, fake = queue_rt()
    recipe = _recipe(rt, name="Many")
    for _ in range(3):
        job = _backlog_job(rt, recipe.id)
        with rt.store.begin() as s:
            jobs.cancel_job(s, job, error="cancelled by an operator", now=rt.now())
    monkeypatch.setattr(queue_status, "FINISHED_COUNT_CAP", 2)
    data = queue_status.status(rt)
    assert data["counts"]["cancelled"] == 2 and data["countsAbove"] == {"cancelled": 2}
    assert "cancelled 2+" in cli.format_status(data)
    monkeypatch.setattr(queue_status, "FINISHED_COUNT_CAP", 3)
    data = queue_status.status(rt)
    assert data["counts"]["cancelled"] == 3 and data["countsAbove"] == {}


def test_stats_keys_values_and_cache(queue_rt, clock):
    rt, fake = queue_rt(max_concurrent_jobs=10, max_attempts=1)
    recipe = _recipe(rt)
    ids = [_backlog_job(rt, recipe.id) for _ in range(5)]
    queue.tick(rt)
    fake.script["req-5"] = [JobStatus("FAILED", error="nope")]
    # finish at the 2nd, 3rd, 4th and 5th poll: 45, 105, 135 and 150 s after submit
    for i, rid in enumerate(("req-1", "req-2", "req-3", "req-4")):
        fake.script[rid] = [JobStatus("IN_PROGRESS")] * (i + 1) + [JobStatus("COMPLETED")]
    for _ in range(200):
        clock.advance(1)
        queue.tick(rt)
    body = queue_status.stats(rt)
    assert set(body) == {"pending", "processing", "completedLastHour", "failedLastHour", "avgProcessingSeconds",
                         "p95ProcessingSeconds", "cachedAt"}
    durations = sorted((_gen(rt, gid).completed_at - _gen(rt, gid).started_at).total_seconds() for gid in ids[:4])
    assert durations == [45, 105, 135, 150]
    assert body["pending"] == 0 and body["processing"] == 0
    assert body["completedLastHour"] == 4 and body["failedLastHour"] == 1
    assert body["avgProcessingSeconds"] == 108.75
    assert body["p95ProcessingSeconds"] == 147.75  # percentile_cont(0.95): 135 + 0.85 * 15
    assert body["cachedAt"] == generations.isoformat(clock.now())

    _backlog_job(rt, recipe.id)
    assert queue_status.stats(rt)["pending"] == 0  # cached
    rt.invalidate()
    assert queue_status.stats(rt)["pending"] == 1
    clock.advance(3601)
    rt.invalidate()
    later = queue_status.stats(rt)
    assert later["completedLastHour"] == 0 and later["avgProcessingSeconds"] is None


# --- prefill -----------------------------------------------------------------------------------

def test_prefill_runs_backlog_jobs_to_the_end(db_url, make_runtime):
    rt = make_runtime(db_url, poll_schedule=(0.05,), simulator_duration=(0.0, 0.0))
    demo.seed(rt)
    progress = []
    result = demo.prefill(rt, recipe_id=1, count=4, timeout=120, on_progress=lambda d, t: progress.append((d, t)))
    assert {k: result[k] for k in ("created", "completed", "failed", "timedOut")} == {
        "created": 4, "completed": 4, "failed": 0, "timedOut": 0}
    assert progress[-1] == (4, 4) and all(t == 4 for _, t in progress)
    assert recipes.available_count(rt, 1) == 4
    gen = _gen(rt, result["ids"][0])
    assert gen.user_id == SYSTEM_BACKLOG_USER_ID and gen.meta["source"] == "backlog"
    assert gen.priority == generations.BACKLOG_PRIORITY and gen.form_data

    everywhere = demo.prefill(rt, recipe_id=None, count=1, timeout=120)
    assert everywhere["created"] == everywhere["completed"] == len(recipes.list_recipes(rt))
    with pytest.raises(queue_actions.QueueError, match="recipe 424242 does not exist"):
        demo.prefill(rt, recipe_id=424242, count=1, timeout=10)


def test_prefill_respects_the_schedule_with_a_manual_clock(queue_rt, clock):
    rt, fake = queue_rt()
    demo.seed(rt)
    fake.script = {f"req-{i}": [JobStatus("IN_PROGRESS"), JobStatus("COMPLETED")] for i in range(1, 4)}
    slept = []

    def sleep(seconds):
        slept.append(seconds)
        clock.advance(seconds)

    result = demo.prefill(rt, recipe_id=2, count=3, timeout=3600, sleep=sleep)
    assert result["completed"] == 3
    assert sum(slept) == 45  # two polls at 15 and 45 s after submit, never earlier
    assert len(fake.polls) == 6


def test_cli_prefill_on_a_fresh_database_leaves_five_claimable_items(tmp_path):
    env = {**os.environ, "DELULA_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}", "DELULA_SIMULATOR_DURATION": "0",
           "DELULA_POLL_SCHEDULE": "0.05", "PYTHONPATH": str(ROOT)}

    def run(*args):
        proc = subprocess.run([sys.executable, "-m", "delula", *args], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc

    prefill = run("backlog", "prefill", "--recipe", "1", "--count", "5")
    summary = json.loads(prefill.stdout)
    assert summary["created"] == 5 and summary["completed"] == 5
    assert "5/5" in prefill.stderr  # the progress bar
    status = json.loads(run("queue", "status", "--json").stdout)
    assert status["claimable"] == {"total": 5, "byRecipe": {"1": 5}}
    assert status["counts"]["completed"] == 5 and status["slots"]["inUse"] == 0
    assert "claimable: 5" in run("queue", "status").stdout
